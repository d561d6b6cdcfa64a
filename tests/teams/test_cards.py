"""Every card the bot can produce validates against the Adaptive Card 1.5 schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from approvalbot.core.events import EventType
from approvalbot.core.models import AppliedPolicy, ApprovalRequest, Decision, Status
from approvalbot.teams import cards
from tests.masking_support import unmasked

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def make(status: Status = Status.PENDING, **extra) -> ApprovalRequest:
    base = {
        "id": "req_abcdefghijklmnop",
        "status": status,
        "action": "iam.role.attach",
        "resource": "arn:aws:iam::1:role/admin",
        "params": {"role": "admin", "nested": {"a": [1, 2, 3]}},
        "justification": "rotate keys",
        "context": {
            "code_path": "ops/rotate.py:9",
            "run_url": "https://ci/1",
            "model": "m",
            "impact": "high",
            **{f"k{i}": "v" for i in range(20)},
        },
        "agent_id": "agt_1",
        "agent_name": "ops-bot",
        "owner": "dana@example.com",
        "on_behalf_of": "erin@example.com",
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "policy": AppliedPolicy(rule="iam", effect="require_approval", approvers=["security"], min_approvals=2),
        "approvals_needed": 2,
    }
    base.update(extra)
    return unmasked(ApprovalRequest(**base))


DECIDED = [Decision(approver="alice@example.com", decision="approve", reason="ok", at=NOW, channel="teams")]


@pytest.mark.parametrize(
    "request_",
    [
        make(),
        make(decisions=DECIDED, approvals_needed=1),
        make(Status.APPROVED, decisions=DECIDED * 2, decided_at=NOW, outcome_reason="fine"),
        make(
            Status.DENIED,
            decisions=[DECIDED[0].model_copy(update={"decision": "deny"})],
            decided_at=NOW,
            outcome_reason="no",
        ),
        make(Status.EXPIRED, decided_at=NOW, outcome_reason="nobody decided before the request expired"),
        make(Status.CANCELLED, decided_at=NOW),
        make(params={}, context={}, resource=None, justification=None, on_behalf_of=None),
    ],
    ids=["pending", "one-of-two", "approved", "denied", "expired", "cancelled", "minimal"],
)
def test_request_cards_validate(request_, card_validator):
    crowded = cards.request_card(request_, refresh_user_ids=[f"29:u{i}" for i in range(100)])
    read_only = cards.request_card(request_, actions=False, notice=cards.Notice("You cannot", "x@y.z"))
    for card in (crowded, read_only):
        assert not list(card_validator.iter_errors(card))
        assert "actions" not in read_only
    if request_.status is Status.PENDING:
        assert len(crowded["refresh"]["userIds"]) == cards.MAX_REFRESH_USERS
        assert [a.get("verb") or a["title"] for a in crowded["actions"]] == ["approve", "Deny\u2026"]
    else:
        assert "refresh" not in crowded and "actions" not in crowded


def test_the_pending_card_has_what_a_reviewer_needs():
    card = cards.request_card(make(decisions=DECIDED, approvals_needed=1))
    deny = card["actions"][1]
    assert deny["type"] == "Action.ShowCard"
    reason = deny["card"]["body"][0]
    assert (reason["id"], reason["isRequired"]) == ("deny_reason", True)
    assert deny["card"]["actions"][0]["verb"] == "deny"
    folded = [n for n in card["body"] if n.get("id") == "params-req_abcdefghijklmnop"]
    assert folded and folded[0]["isVisible"] is False
    assert any(n.get("type") == "ActionSet" for n in card["body"])
    rows = [n for n in card["body"] if n.get("type") == "ColumnSet"]
    fixed = [
        "Resource",
        "Justification",
        "Agent",
        "Owner",
        "On behalf of",
        "Policy rule",
        "Approvals",
        "Requested",
        "Request id",
    ]
    assert len(rows) == len(fixed) + cards.MAX_CONTEXT_ROWS  # 24 context entries, capped at 12
    labels = [r["columns"][0]["items"][0].get("text") for r in rows]
    assert labels[5:9] == ["Code path", "Run", "Model", "Impact"]  # the well-known context first


def test_the_largest_possible_request_fits_in_a_teams_message():
    """Teams rejects messages over about 28 KB: every field is clipped so the card never gets there."""
    import json

    from approvalbot.core.models import MAX_TEXT

    huge = make(
        resource="r" * 1000,
        justification="j" * MAX_TEXT,
        params={"blob": "p" * 30_000},
        context={f"key{i:02d}" + "k" * 90: "v" * 2000 for i in range(50)},
        decisions=[
            Decision(
                approver=f"user{i}@example.com", decision="approve", reason="x" * MAX_TEXT, at=NOW, channel="teams"
            )
            for i in range(20)
        ],
        approvals_needed=0,
        policy=AppliedPolicy(rule="x" * 200, effect="require_approval", approvers=["*"], min_approvals=20),
    )
    card = cards.request_card(huge, refresh_user_ids=["29:" + "u" * 40] * 60)
    size = len(json.dumps(card).encode())
    assert size < 26_000, size


@pytest.mark.parametrize("kind", [e.value for e in EventType])
def test_audit_cards_validate_for_every_event(kind, card_validator):
    record = {
        "seq": 7,
        "hash": "f" * 64,
        "type": kind,
        "at": NOW.isoformat(),
        "reason": "why",
        "actor": {"kind": "human", "id": "apr_1", "email": "a@example.com", "channel": "teams"},
        "data": {"approvals": 1, "required": 2, "channel": "teams", "conversation": "x", "error": "http_403"},
    }
    card = cards.audit_card(record)
    assert not list(card_validator.iter_errors(card))
    assert card["body"][-1]["text"] == "hash ffffffffffff"


def test_message_and_audit_list_cards_validate(card_validator):
    for card in (
        cards.message_card("Hello", ["a", "b"], cards.Notice("n", "d")),
        cards.audit_list_card(
            make(),
            [
                {"seq": i, "type": "request.created", "at": NOW.isoformat(), "hash": "a" * 64, "actor": {}}
                for i in range(1, 80)
            ],
        ),
    ):
        assert not list(card_validator.iter_errors(card))


def test_the_validator_is_strict(card_validator):
    """A guard for the guard: a card with an unknown property or a mention entity does not validate."""
    bad = cards.message_card("x")
    bad["msteams"] = {"entities": [{"type": "mention", "text": "<at>x</at>"}]}
    assert list(card_validator.iter_errors(bad))
