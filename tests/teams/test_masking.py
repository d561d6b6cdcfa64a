"""Masked values in Teams: posted cards, updates, the reply chain, `pending`, `approval` and refreshes
show masks, never the planted values; Reveal is answered with a card for the clicker alone (the
invoke response), or refused. Cards still validate against the Adaptive Card 1.5 schema.

Activities go over real HTTP to /api/messages; the fake connector records every call. The masked
view is the real intake's, the reveal the real service's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from approvalbot.core.policy import Policy
from approvalbot.teams.cards import CONTENT_TYPE
from tests import masking_support as ms
from tests.slack.test_masking import POLICY, needles_of, planted_requests

from .conftest import new_conversation


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


@pytest.fixture
async def masked(teams, people):
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    await teams.service.identities.add_approver("bob@example.com", ["security"])
    await teams.service.identities.add_approver("mallory@example.com", ["finance"])
    return teams


def texts(card: Any) -> list[str]:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("TextBlock", "TextRun") and "text" in node:
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return out


def verbs(card: dict[str, Any]) -> list[str]:
    return [a.get("verb") or a.get("title") for a in card.get("actions", [])]


def sent(fake) -> list[Any]:
    """Every body approvalbot sent to the connector (cards, updates, replies, command answers)."""
    return [{"kind": c.kind, "conversation": c.conversation, "body": c.body} for c in fake.calls]


async def test_no_planted_value_reaches_teams_and_reveal_answers_only_the_clicker(masked, people, card_validator):
    teams = masked
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals", by=people["alice"])
    created = await teams.ask(**ms.planted_body())
    assert created["params"]["deploy_key"] == ms.PEM  # the agent reads its own request exactly
    await teams.run_jobs()

    (card,) = teams.fake.cards("create", channel)
    shown = "\n".join(texts(card))
    assert "[secret · aws key · 20 chars · " in shown and "[personal · email · 30 chars · " in shown
    assert "[personal · card · 19 chars · " in shown and "[secret · private key · " in shown
    assert "6 values hidden (reveal if you may decide)" in shown
    assert verbs(card) == ["approve", "Deny\u2026", "reveal"]

    answers: list[Any] = []  # invoke answers that are not the reveal: they must not leak either

    # Reveal by an eligible approver: the values only in the invoke answer to her.
    status, answer = await teams.click(people["alice"], channel, "reveal", created["id"])
    assert status == 200 and answer["statusCode"] == 200 and answer["type"] == CONTENT_TYPE
    revealed = "\n".join(texts(answer["value"]))
    for value in (ms.AWS, ms.PEM, ms.EMAIL, "charges card " + ms.CARD):
        assert value in revealed
    assert "shown only to you" in revealed and verbs(answer["value"]) == ["refresh"]
    assert not list(card_validator.iter_errors(answer["value"]))
    assert ms.leaks(sent(teams.fake)) == []  # the shared card was not updated with them

    # Reveal by an approver of another group: refused, privately, without values.
    status, refused = await teams.click(people["mallory"], channel, "reveal", created["id"])
    answers.append(refused)
    assert any("Nothing was revealed" in t for t in texts(refused["value"]))

    # Refresh, `pending`, `approval ID`, a decision, the update and the reply chain.
    personal = new_conversation("alice-personal")
    _, refreshed = await teams.click(people["alice"], channel, "refresh", created["id"])
    answers.append(refreshed)
    assert any("6 values hidden" in t for t in texts(refreshed["value"]))
    await teams.say(people["alice"], personal, "pending", kind="personal")
    await teams.say(people["alice"], personal, f"approval {created['id']}", kind="personal")
    in_chat = [t for kind in ("create", "reply") for c in teams.fake.cards(kind, personal) for t in texts(c)]
    assert sum("[secret · aws key · 20 chars · " in t for t in in_chat) >= 2  # the pending card and the approval card
    assert any("Audit trail" in t for t in in_chat)
    _, approved = await teams.click(people["alice"], channel, "approve", created["id"], reason="fine")
    answers.append(approved)
    await teams.run_jobs()
    assert verbs(teams.fake.cards("update", channel)[-1]) == ["reveal"]  # approvers may still look once final
    # The service records the reveal; its reply names paths, never values.
    chain = ["\n".join(texts(c)) for c in teams.fake.cards("reply", channel)]
    (line,) = [c for c in chain if "Values revealed to" in c]
    assert "alice@example.com" in line and "params.aws.access_key_id" in line

    assert ms.leaks(sent(teams.fake)) == []
    assert ms.leaks(answers) == []
    for produced in [*teams.fake.all_cards(), *(a["value"] for a in answers)]:
        assert not list(card_validator.iter_errors(produced))


async def test_reveal_forbidden_by_the_rule_is_refused_and_offers_no_action(masked, people):
    teams = masked
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals", by=people["alice"])
    created = await teams.ask(**ms.planted_body("vault.read_secret"))
    await teams.run_jobs()
    (card,) = teams.fake.cards("create", channel)
    assert "reveal" not in verbs(card)
    assert any("does not allow revealing them" in t for t in texts(card))
    _, refused = await teams.click(people["alice"], channel, "reveal", created["id"])
    assert any("Nothing was revealed" in t for t in texts(refused["value"]))
    assert ms.leaks([refused, *sent(teams.fake)]) == []


async def test_property_no_secret_anywhere_in_a_request_reaches_teams(masked, people):
    teams = masked
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals", by=people["alice"])
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def one(body: dict[str, Any], secret: str) -> None:
        created = await teams.ask(**body)
        await teams.run_jobs()
        posted = [c for c in teams.fake.cards("create", channel) if created["id"] in json.dumps(c)]
        assert len(posted) == 1
        seen.append(created["id"])
        assert any("hidden (reveal if you may decide)" in t for t in texts(posted[0])), body
        assert ms.leaks(sent(teams.fake), needles_of(secret)) == [], body

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(planted_requests())
    def example(drawn: tuple[dict[str, Any], str]) -> None:
        asyncio.run_coroutine_threadsafe(one(*drawn), loop).result(timeout=60)

    await asyncio.to_thread(example)
    assert len(seen) >= 10


def test_a_card_full_of_masks_still_validates(card_validator):
    from approvalbot.teams import cards
    from tests.slack.test_masking import _request

    params = {f"key_{i}": f"{ms.AWS} and {ms.EMAIL} " * 20 for i in range(40)}
    request = _request({"params": params, "justification": f"{ms.PEM} " * 30, "resource": f"s3://{ms.EMAIL}"})
    view, _ = ms.masked_view(request)
    request = request.model_copy(update={"masked": view})
    card = cards.request_card(request)
    assert ms.leaks(card) == [] and not list(card_validator.iter_errors(card))
    revealed = cards.reveal_card(request, {f"params.key_{i}": "x" * 9000 for i in range(40)})
    assert not list(card_validator.iter_errors(revealed))
    assert len(json.dumps(revealed)) < 28_000  # Teams' card payload limit
    assert any("returns them all" in t for t in texts(revealed))
