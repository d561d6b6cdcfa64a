"""Platform limits as data: every request the API accepts yields postable cards on both channels.

Pure tests (no Redis, no server): requests are built the way the service builds them
(`RequestCreate` validated as the API validates it, masked, `machine.create`), with the
largest and least friendly text the API lets through: CJK, emoji (12 bytes each as
sent), our `<`/`>` look-alikes, 49 approvers with long names. Then:

* Teams: each card is wrapped in the activity the SDK sends and serialised by the SDK's
  own serializer, as `json.dumps` sends it (non-ASCII escaped): within
  APPROVALBOT_TEAMS_MAX_BYTES (28,000 by default), refresh list included;
* Slack: each message builds (`slack_sdk` validates its limits on `to_dict`) and is
  measured against Slack's limits as data (`blocks.SECTION_TEXT`, `HEADER_TEXT`, ...).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvalbot.core import machine, masking
from approvalbot.core.ids import new_request_id
from approvalbot.core.models import ApprovalRequest, Channel, Decision, RequestCreate, Status
from approvalbot.slack import blocks
from approvalbot.teams import cards, sdk
from tests.core.factories import AGENT, NOW, policy

KEY = b"k" * 32
REFERENCE = {  # a stored channel reference, with ids as long as Teams makes them
    "bot": {"id": "28:" + "b" * 36, "name": "approvalbot"},
    "conversation": {
        "isGroup": True,
        "conversationType": "channel",
        "id": "19:" + "c" * 32 + "@thread.tacv2;messageid=1700000000000000",
        "tenantId": "5b1c7e2a-3f4d-4c6b-9a8e-0d2f6e1a7b3c",
    },
    "channelId": "msteams",
    "locale": "en-US",
    "serviceUrl": "https://smba.trafficmanager.net/emea/5b1c7e2a-3f4d-4c6b-9a8e-0d2f6e1a7b3c/",
}
REFRESH_USERS = ["29:" + "u" * 90 + str(i) for i in range(cards.MAX_REFRESH_USERS)]

# What people and agents type: ASCII, markup, CJK, emoji (astral: two UTF-16 units, 12 bytes sent).
LT, GT, WIDE_A = "\uff1c", "\uff1e", "\uff41"  # our own look-alikes of < and >, a full-width "a"
ALPHABET = st.sampled_from([*"abc <>&*_`~{}|\n", "漢", "字", "テ", "ス", "ト", "😀", "🚀", LT, GT, "é"])


def text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(ALPHABET, min_size=min_size, max_size=max_size),
        st.sampled_from(["😀" * max_size, "漢" * max_size, "<>" * (max_size // 2), "x" * max_size]),
    )


def sent(card: dict[str, Any]) -> int:
    """Bytes on the wire: the activity around the card, serialised by the SDK."""
    return sdk.sent_bytes(sdk.outgoing(sdk.card_activity(card, card.get("fallbackText")), REFERENCE))


def build(body: RequestCreate, approvers: list[str], decisions: int, reason: str, status: Status) -> ApprovalRequest:
    applied = policy(approvers or ["*"], min_approvals=max(1, decisions + 1))
    masked = masking.masked_view(
        params=body.params,
        context=body.context,
        justification=body.justification,
        resource=body.resource,
        policy=applied,
        key=KEY,
    )
    request = machine.create(new_request_id(), body, AGENT, applied, NOW, [], masked).request
    made = [
        Decision(
            approver=f"{WIDE_A * 40}{i}@example.com", decision="approve", reason=reason, at=NOW, channel=Channel.TEAMS
        )
        for i in range(decisions)
    ]
    return request.model_copy(
        update={
            "decisions": made,
            "status": status,
            "decided_at": NOW + timedelta(minutes=5) if status.final else None,
            "outcome_reason": reason if status.final else None,
        }
    )


def records(request: ApprovalRequest, n: int, reason: str) -> list[dict[str, Any]]:
    kinds = ["request.created", "approval.recorded", "reminder.due", "params.revealed", "delivery.failed"]
    return [
        {
            "seq": i + 1,
            "type": kinds[i % len(kinds)],
            "request_id": request.id,
            "at": NOW.isoformat(),
            "hash": "ab" * 32,
            "actor": {"kind": "human", "id": "ap_1", "email": WIDE_A * 60 + "@example.com", "channel": "teams"},
            "reason": reason,
            "data": {"paths": ["params." + "漢" * 50] * 30, "approvals": 1, "required": 2, "error": "http_403"},
        }
        for i in range(n)
    ]


requests = st.builds(
    lambda action, resource, justification, context, params, approvers, decisions, reason, status: build(
        RequestCreate.model_validate(
            {
                "action": action,
                "resource": resource,
                "justification": justification,
                "context": context,
                "params": params,
            }
        ),
        approvers,
        decisions,
        reason,
        status,
    ),
    action=st.sampled_from(["deploy.production", "iam.grant_admin", "a." + "x" * 198]),
    resource=st.one_of(st.none(), text(1000)),
    justification=st.one_of(st.none(), text(4000)),
    context=st.dictionaries(
        st.sampled_from(["code_path", "run_url", "model", "impact", *(f"k{i}" for i in range(46))]),
        text(2000),
        max_size=50,
    ),
    params=st.dictionaries(st.sampled_from([f"p{i}" for i in range(40)]), text(500), max_size=40),
    approvers=st.one_of(
        st.just([]),
        st.just([f"{'very-long-approver-name-' * 8}{i}@example.com" for i in range(49)]),
        st.lists(text(60, 1).map(lambda s: f"group-{s}"), max_size=49),
    ),
    decisions=st.integers(0, 12),
    reason=text(4000),
    status=st.sampled_from(list(Status)),
)


def check_slack(request: ApprovalRequest, trail: list[dict[str, Any]]) -> None:
    mentions = {a: "U" + "X" * 10 for a in request.policy.approvers[:20]}
    detail = blocks.detail_message(request, [(r["seq"], r["hash"], r) for r in trail])
    messages = [blocks.card(request, mentions), detail]
    messages += [blocks.audit_reply(r["seq"], r["hash"], r) for r in trail[:5]]
    for message in messages:
        assert len(message.blocks) <= blocks.MESSAGE_BLOCKS
        for block in message.blocks:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= blocks.SECTION_TEXT
            if block["type"] == "header":
                assert len(block["text"]["text"]) <= blocks.HEADER_TEXT
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    assert len(element["text"]["text"]) <= blocks.BUTTON_TEXT


def check_teams(request: ApprovalRequest, trail: list[dict[str, Any]], budget: int) -> None:
    card = cards.with_refresh_users(cards.fit_request_card(request, budget), REFRESH_USERS, budget)
    assert sent(card) <= budget
    assert cards.sent_size(card) >= sent(card)  # our estimate never under-counts
    if "refresh" in card:
        assert card["refresh"]["userIds"], "no room left for anyone's refresh"
    assert sent(cards.summary_card(request)) <= 8000
    for record in trail[:5]:
        reply = cards.audit_card(record)
        if cards.sent_size(reply) > budget:
            reply = cards.audit_card(record, short=True)
        assert sent(reply) <= budget
    values = {f"params.p{i}": (trail[0]["reason"] or "x") * 40 for i in range(8)}
    assert sent(cards.reveal_card(request, values, budget)) <= budget
    pages = cards.audit_pages(trail, budget)
    assert sum(len(p) for p in pages) == len(trail)
    for page in range(1, len(pages) + 1):
        assert sent(cards.audit_page_card(request, trail, page, budget)) <= budget


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests, trail_size=st.integers(1, 60), reason=text(300))
def test_every_accepted_request_yields_postable_cards_on_both_channels(request, trail_size, reason):
    trail = records(request, trail_size, reason)
    check_slack(request, trail)
    check_teams(request, trail, cards.DEFAULT_MAX_BYTES)


def test_slack_approval_pages_hold_every_record_once():
    request = build(RequestCreate(action="deploy.production"), [], 0, "", Status.PENDING)
    trail = records(request, 95, "漢" * 300)
    rows = [(r["seq"], r["hash"], r) for r in trail]
    seen = []
    for page in (1, 2, 3):
        message = blocks.detail_message(request, rows, page)
        text = "\n".join(b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b)
        assert f"page {page} of 3" in text
        seen += [r["seq"] for r in trail if f"`#{r['seq']}` " in text]
    assert seen == list(range(1, 96))


@pytest.mark.parametrize("fill", ["x", "漢", LT, "😀"])
def test_the_largest_request_as_sent_with_each_kind_of_text(fill, capsys):
    """The figures of issue 14, measured as sent: the whole card, then what we send instead."""
    body = RequestCreate(
        action="deploy.production",
        resource=fill * 1000,
        justification=fill * 4000,
        context={f"k{i}": fill * 2000 for i in range(50)},
        params={f"p{i}": fill * 500 for i in range(40)},
    )
    approvers = [f"{'very-long-approver-name-' * 8}{i}@example.com" for i in range(49)]
    request = build(body, approvers, 12, fill * 4000, Status.PENDING)
    whole = cards.request_card(request, refresh_user_ids=REFRESH_USERS)
    fitted = cards.with_refresh_users(cards.fit_request_card(request), REFRESH_USERS, cards.DEFAULT_MAX_BYTES)
    with capsys.disabled():
        print(f"\n{fill!r}: whole card {sent(whole)} bytes as sent; fitted {sent(fitted)} bytes")
    assert sent(whole) > cards.DEFAULT_MAX_BYTES  # the problem is real…
    assert sent(fitted) <= cards.DEFAULT_MAX_BYTES  # …and solved
    shortened = any(cards.SHORTENED.format(id=request.id) == b.get("text") for b in fitted["body"])
    assert shortened == (fill != "x")  # ASCII fits whole (some refresh ids give way); the rest says so
    assert fitted["refresh"]["userIds"]
    # Slack: the 49 approvers are counted, not dropped silently, and the card builds.
    message = blocks.card(request)
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b]
    approvers_line = next(t for t in sections if t.startswith("*Approvers:*"))
    assert len(approvers_line) <= blocks.SECTION_TEXT
    assert f"more (`/approval {request.id}`)" in approvers_line
