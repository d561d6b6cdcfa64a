"""Masked values in Slack: cards, modals, threads, /pending, /approval, App Home and the owner's DM
show masks, never the planted values; Reveal answers the clicker alone (a modal), or refuses.

Everything travels over real HTTP: signed requests to our server, every Web API call and
response_url post recorded by the fake Slack. The masked view is the real intake's, the reveal the
real service's (audited as `params.revealed`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvalbot.core.policy import Policy
from approvalbot.slack import blocks
from tests import masking_support as ms
from tests.helpers import eventually
from tests.slack.conftest import CHANNEL

POLICY = """
rules:
  - name: vault
    match: {action: "vault.*"}
    effect: require_approval
    approvers: [security]
    reveal: false
  - name: everything-else
    match: {action: "*"}
    effect: require_approval
    approvers: [security]
    sensitive: [ticket_ref]
"""


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


@pytest.fixture
def masked(slack):
    return slack


def sent(fake, but_reveals: bool = True) -> list[Any]:
    """Everything approvalbot sent to Slack: Web API calls (all arguments) and response_url posts,
    except the private reveal modals (`but_reveals`)."""
    out: list[Any] = []
    for call in fake.calls:
        view = call.args.get("view")
        if but_reveals and call.method == "views.open" and (view or {}).get("callback_id") == blocks.REVEAL_VIEW:
            continue
        out.append({"method": call.method, **call.args})
    return out + list(fake.responses)


def reveal_views(fake) -> list[dict[str, Any]]:
    return [c["view"] for c in fake.calls_of("views.open") if c["view"].get("callback_id") == blocks.REVEAL_VIEW]


def plain_texts(view: dict[str, Any]) -> str:
    """The plain_text pieces of a view, joined back and unescaped (what the reader sees)."""
    parts = [b["text"]["text"] for b in view["blocks"] if b.get("text", {}).get("type") == "plain_text"]
    return "".join(parts).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def test_no_planted_value_reaches_slack_and_reveal_answers_only_the_approver(masked):
    slack = masked
    status, req = await slack.api.ask(**ms.planted_body())
    assert status == 201
    assert req["params"]["aws"]["access_key_id"] == ms.AWS  # the agent reads its own request exactly
    await slack.run_jobs()

    card = slack.card_for(req["id"])
    text = json.dumps(card["blocks"], ensure_ascii=False)
    assert "[secret · aws key · 20 chars · " in text and "[personal · email · 30 chars · " in text
    assert "[personal · card · 19 chars · " in text and "[secret · private key · " in text
    assert "6 values hidden (reveal if you may decide)" in text
    buttons = [e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["approve", "deny", "reveal"]

    # Reveal by an eligible approver: the values in a modal opened for her alone.
    await slack.click("U0ALICE", req["id"], "reveal", ts=card["ts"])
    (view,) = await eventually(lambda: reveal_views(slack.fake))
    shown = plain_texts(view)
    for value in (ms.AWS, ms.PEM, ms.EMAIL, "charges card " + ms.CARD):
        assert value in shown
    assert view["type"] == "modal" and "private_metadata" not in json.dumps(view)
    assert not slack.fake.calls_of("chat.postEphemeral")  # nothing else was said to anyone

    # Reveal by someone who may not decide it: a private refusal, no values.
    await slack.click("U0CAROL", req["id"], "reveal", ts=card["ts"])
    (refused,) = await slack.ephemerals_to("U0CAROL")
    assert "Nothing was revealed" in refused["text"] and refused["channel"] == CHANNEL
    assert len(reveal_views(slack.fake)) == 1

    # Every other view of the request: /pending, /approval, the App Home, the decision modal.
    await slack.command("/pending", "", "U0ALICE")
    await slack.command("/approval", req["id"], "U0ALICE")
    await slack.event({"type": "app_home_opened", "user": "U0ALICE", "tab": "home"})
    await eventually(lambda: len(slack.fake.responses) >= 2 and slack.fake.calls_of("views.publish"))
    _pending, detail = slack.fake.responses[:2]
    assert "6 values hidden" in json.dumps(detail, ensure_ascii=False)
    home = slack.fake.calls_of("views.publish")[0]["view"]
    assert [e["action_id"] for b in home["blocks"] if b["type"] == "actions" for e in b["elements"]] == [
        "approve",
        "deny",
        "reveal",
    ]

    await slack.click("U0ALICE", req["id"], "approve", ts=card["ts"])
    decision = await slack.opened_view(2)
    assert decision["callback_id"] == "decision"
    await slack.submit("U0ALICE", decision, "ok")
    await eventually(lambda: _final(slack, req["id"]))
    await slack.run_jobs()
    assert slack.fake.top_level("D0OWNER"), "the owner's DM went out"
    final = slack.card_for(req["id"])
    assert [e["action_id"] for b in final["blocks"] if b["type"] == "actions" for e in b["elements"]] == ["reveal"]
    replies = slack.fake.replies(CHANNEL, card["ts"])
    # The service records the reveal: its thread line names paths, never values.
    (line,) = [r for r in replies if "Values revealed to" in r["text"]]
    shown = line["text"].replace("\u200b", "")  # mrkdwn-inert: underscores carry zero-width spaces
    assert "alice@example.com" in shown and "params.aws.access_key_id" in shown

    assert ms.leaks(sent(slack.fake)) == []
    assert ms.leaks(sent(slack.fake, but_reveals=False)) != []  # the scan does see the reveal modal


async def test_reveal_forbidden_by_the_rule_is_refused_and_offers_no_button(masked):
    slack = masked
    _, req = await slack.api.ask(**ms.planted_body("vault.read_secret"))
    await slack.run_jobs()
    card = slack.card_for(req["id"])
    text = json.dumps(card["blocks"], ensure_ascii=False)
    assert "does not allow revealing them" in text
    assert "reveal" not in [e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    await slack.click("U0ALICE", req["id"], "reveal", ts=card["ts"])  # a click Slack would never send; refused
    (refused,) = await slack.ephemerals_to("U0ALICE")
    assert "Nothing was revealed" in refused["text"]
    assert reveal_views(slack.fake) == []
    assert ms.leaks(sent(slack.fake)) == []


async def _final(slack, request_id):
    found = await slack.service.get(request_id)
    return found if found.status != "pending" else None


# --- the property: secrets and personal data anywhere, nothing reaches Slack ---------------------

SECRETS = st.sampled_from([ms.AWS, ms.PEM, ms.EMAIL, ms.CARD, "ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5"])
WORDS = st.sampled_from(["rows", "target", "notes", "owner", "config", "db"])


@st.composite
def planted_requests(draw) -> tuple[dict[str, Any], str]:
    """A request with one secret somewhere: a nested param, a list item, context, justification or resource."""
    secret = draw(SECRETS)
    where = draw(st.sampled_from(["param", "nested", "list", "context", "justification", "resource"]))
    prefix = draw(st.sampled_from(["", "value ", "see: "]))
    value = prefix + secret
    body: dict[str, Any] = {"action": "dataset.export", "params": {"rows": draw(st.integers(0, 10**6))}}
    key = draw(WORDS)
    if where == "param":
        body["params"][key] = value
    elif where == "nested":
        body["params"][key] = {draw(WORDS): {"deep": [1, value]}}
    elif where == "list":
        body["params"][key] = ["a", value]
    elif where == "context":
        body["context"] = {key: value}
    elif where == "justification":
        body["justification"] = f"because {value} needs it"
    else:
        body["resource"] = f"vault://{secret}" if secret not in (ms.PEM,) else value
    return body, secret


def needles_of(secret: str) -> tuple[str, ...]:
    if secret == ms.PEM:
        return (ms.PEM_BODY,)
    if secret == ms.CARD:
        return (ms.CARD, ms.CARD.replace(" ", ""))
    return (secret,)


async def test_property_no_secret_anywhere_in_a_request_reaches_slack(masked):
    slack = masked
    loop = asyncio.get_running_loop()
    cards: list[str] = []

    async def one(body: dict[str, Any], secret: str) -> None:
        status, req = await slack.api.ask(**body)
        assert status == 201, req
        await slack.run_jobs()
        cards.append(json.dumps(slack.card_for(req["id"])["blocks"], ensure_ascii=False))
        assert "hidden (reveal if you may decide)" in cards[-1], body
        assert ms.leaks(sent(slack.fake), needles_of(secret)) == [], body

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(planted_requests())
    def example(drawn: tuple[dict[str, Any], str]) -> None:
        asyncio.run_coroutine_threadsafe(one(*drawn), loop).result(timeout=60)

    await asyncio.to_thread(example)
    assert len(cards) >= 10  # the examples ran, each through intake, jobs and the fake


# --- Block Kit limits hold with masks ---------------------------------------------------------------


def test_cards_and_reveal_modals_stay_within_block_kit_limits():
    """`to_dict()` checks Slack's limits; a card full of masks and a reveal of huge values still build."""
    from tests.masking_support import masked_view

    params = {f"key_{i}": f"{ms.AWS} and {ms.EMAIL} " * 20 for i in range(40)}
    body = {"params": params, "justification": f"{ms.PEM} " * 30, "context": {"impact": f"{ms.CARD}, " * 10}}
    request = _request(body)
    view, _ = masked_view(request)
    request = request.model_copy(update={"masked": view})
    card = blocks.card(request)
    assert ms.leaks(card.blocks) == [] and "values hidden" in card.text + json.dumps(card.blocks)
    huge = {f"params.key_{i}": "x<&>" * 3000 for i in range(40)}
    modal = blocks.reveal_modal(request, huge)
    assert len(modal["blocks"]) <= 100
    assert all(len(b["text"]["text"]) <= 3000 for b in modal["blocks"] if "text" in b)
    assert "returns every value" in json.dumps(modal)
    one = blocks.reveal_modal(request, {"params.key_0": "x<&>" * 3000})
    assert plain_texts(one).endswith("x<&>" * 3000) and "x<&>" * 3000 in plain_texts(one)


def test_the_thread_line_of_a_reveal_names_who_and_which_paths_never_values():
    record = {
        "type": "params.revealed",
        "actor": {"kind": "human", "email": "alice@example.com", "channel": "slack"},
        "data": {"paths": ["params.aws.access_key_id", "justification"]},
    }
    _, summary = blocks.describe(record)
    zw = "\u200b"
    assert summary == (
        f"Values revealed to alice@example.com via `slack`: params.aws.access{zw}_{zw}key{zw}_{zw}id, justification"
    )
    reply = blocks.audit_reply(9, "ab" * 32, record)
    assert "Values revealed to" in reply.text


def _request(body: dict[str, Any]):
    from datetime import UTC, datetime, timedelta

    from approvalbot.core.models import AppliedPolicy, ApprovalRequest, Status

    now = datetime.now(UTC)
    return ApprovalRequest(
        id="req_k3v7q2mxw4b5t6yz",
        status=Status.PENDING,
        action="dataset.export",
        resource=body.get("resource"),
        params=body.get("params", {}),
        justification=body.get("justification"),
        context=body.get("context", {}),
        agent_id="agt_1",
        agent_name="etl-bot",
        owner="owner@example.com",
        policy=AppliedPolicy(rule="everything-else", effect="require_approval", approvers=["security"]),
        approvals_needed=1,
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
