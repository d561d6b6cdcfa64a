"""The card and its text helpers, as pure functions (no Slack, no Redis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from approvalbot.core.models import AppliedPolicy, ApprovalRequest, Decision
from approvalbot.slack import blocks
from approvalbot.slack.escape import (
    ZWSP,
    clip,
    code,
    fold_params,
    mention,
    mrkdwn,
    plain,
)
from tests.masking_support import unmasked

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def request(**changes) -> ApprovalRequest:
    base = {
        "id": "req_abcdefghijklmnop",
        "status": "pending",
        "action": "dataset.export",
        "resource": "s3://b/k",
        "params": {"rows": 5000},
        "justification": "weekly",
        "context": {"code_path": "etl/x.py:1"},
        "agent_id": "agt_1",
        "agent_name": "etl-bot",
        "owner": "owner@example.com",
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "policy": AppliedPolicy(rule="default", effect="require_approval", approvers=["security"], min_approvals=2),
        "approvals_needed": 2,
    }
    return unmasked(ApprovalRequest(**{**base, **changes}))


def test_escaping_rules():
    assert plain("a < b & c > d") == "a &lt; b &amp; c &gt; d"
    assert plain("") == "-" and plain(None) == "-"
    text = mrkdwn("*x* _y_ ~z~ `w` <!channel>\n> q")
    assert "<" not in text and "*x*" not in text and f"{ZWSP}*{ZWSP}x{ZWSP}*{ZWSP}" in text
    assert f"\n{ZWSP}&gt; q" in text  # no block quote either
    assert code("not_in_channel") == "`not_in_channel`" and code("`rm -rf` *") == "`rm-rf`"
    assert mention("U0ALICE") == "<@U0ALICE>" and mention("U0AL>ICE") is None and mention("<!channel>") is None
    assert clip("x" * 50, 20).endswith("(+30 chars)") and len(clip("x" * 50, 20)) <= 20


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=4000), st.integers(min_value=30, max_value=3000))
def test_escaped_text_fits_and_never_opens_a_control_sequence(text, limit):
    for out in (plain(text, limit), mrkdwn(text, limit)):
        assert len(out) <= limit and "<" not in out and ">" not in out


def test_long_parameters_are_folded():
    out = fold_params({"big": "x" * 5000, "list": list(range(1000)), **{f"k{i}": i for i in range(40)}})
    lines = out.splitlines()
    assert any("(+" in line and line.startswith("big = ") for line in lines)
    assert "more parameters" in lines[-1] and len(out) <= 2800


def test_pending_card_has_approve_and_deny_carrying_only_the_id():
    rendered = blocks.card(request())
    (actions,) = [b for b in rendered.blocks if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        ("approve", "req_abcdefghijklmnop"),
        ("deny", "req_abcdefghijklmnop"),
    ]
    text = json.dumps(rendered.blocks)
    for shown in (
        "dataset.export",
        "s3://b/k",
        "etl-bot",
        "owner@example.com",
        "etl/x.py:1",
        "default",
        "0 of 2",
        "rows = 5000",
        "weekly",
        "security (group)",
        "<!date^",
    ):
        assert shown in text, shown


def test_final_card_shows_outcome_and_has_no_buttons():
    decided = request(
        status="denied",
        decided_at=NOW,
        outcome_reason="not now",
        decisions=[Decision(approver="alice@example.com", decision="deny", reason="not now", at=NOW, channel="slack")],
    )
    rendered = blocks.card(decided)
    assert not [b for b in rendered.blocks if b["type"] == "actions"]
    text = json.dumps(rendered.blocks)
    assert "Denied" in text and "alice@example.com" in text and "not now" in text
    assert rendered.digest != blocks.card(request()).digest


def test_huge_request_still_renders_within_slack_limits():
    huge = request(
        resource="r" * 1000,
        justification="j" * 4000,
        params={f"p{i}": "v" * 3000 for i in range(100)},
        context={f"c{i}": "x" * 2000 for i in range(50)} | {"impact": "i" * 2000},
        decisions=[
            Decision(approver=f"a{i}@example.com", decision="approve", reason="r" * 4000, at=NOW) for i in range(30)
        ],
    )
    rendered = blocks.card(huge)  # to_dict() would raise on any block over Slack's limits
    assert len(rendered.blocks) <= 50
    assert len(json.dumps(rendered.blocks)) < 40_000


def test_audit_reply_shows_seq_and_hash_prefix():
    record = {
        "type": "approval.recorded",
        "actor": {"kind": "human", "email": "bob@example.com", "channel": "slack"},
        "data": {"approvals": 1, "required": 2},
        "reason": "<@U1> ok",
    }
    reply = blocks.audit_reply(12, "ab" * 32, record)
    assert reply.text.startswith("#12 abababababab ")
    assert "1 of 2" in reply.text and "bob@example.com" in reply.text
    assert "<@U1>" not in json.dumps(reply.blocks)


def test_grant_line_names_the_principal_that_consumed_it():
    def line(data):
        return blocks.describe({"type": "grant.consumed", "actor": {"kind": "agent", "id": "agt_1"}, "data": data})[1]

    assert (
        line({"consumed_by": {"kind": "executor", "id": "exe_1", "name": "deployer"}})
        == "Grant used by executor deployer"
    )
    assert line({"consumed_by": {"kind": "agent", "id": "agt_1", "name": "etl-bot"}}) == "Grant used by agent etl-bot"
    assert line({"consumed_by": {"kind": "agent", "id": "agt_1", "name": "<!here>"}}) != "Grant used by agent <!here>"
    assert line({}) == "Grant used by the agent"  # records written before consumed_by existed
