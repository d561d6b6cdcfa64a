"""Slack's limits through the whole delivery path: 49 long approver names, and a card that cannot be built.

Before issue 14, a rule naming 49 approvers made the "Approvers:" section longer than Slack's
3,000 characters: the job raised on every attempt, no card, no `delivery.failed`.
"""

from __future__ import annotations

import json

import pytest
from slack_sdk.errors import SlackObjectFormationError

from approvalbot.core.policy import Policy
from approvalbot.slack import blocks

from .conftest import CHANNEL

# As long as an address may be: 64 characters before the @, long domain labels (about 150 in all).
APPROVERS = [f"approver-{i:02d}-{'x' * 52}@{'long-department-name.' * 4}example.com" for i in range(49)]


@pytest.fixture
def policy() -> Policy:
    listed = ", ".join(f'"{a}"' for a in ["security", *APPROVERS])  # the group lets alice and bob look
    return Policy.from_yaml(
        f"""
rules:
  - name: crowd
    match: {{action: "*"}}
    effect: require_approval
    approvers: [{listed}]
"""
    )


async def test_49_long_approver_names_are_counted_and_the_card_is_posted(slack):
    _, req = await slack.api.ask()
    await slack.run_until_settled()
    card = slack.card_for(req["id"])
    sections = [b["text"]["text"] for b in card["blocks"] if b["type"] == "section" and "text" in b]
    line = next(t for t in sections if t.startswith("*Approvers:*"))
    assert len(line) <= blocks.SECTION_TEXT
    shown = sum(1 for a in APPROVERS if a in line)
    assert 0 < shown < 49 and f"and {49 - shown} more (`/approval {req['id']}`)" in line
    status, body = await slack.api.call("GET", f"/v1/requests/{req['id']}/deliveries", slack.api.agent_token)
    assert status == 200
    (target,) = body["slack"]["deliveries"]
    assert (target["state"], target["where"], target["message_id"]) == ("posted", CHANNEL, card["ts"])
    assert target["last_error"] is None


async def test_a_card_that_cannot_be_built_is_one_delivery_failed_with_the_reason(slack, monkeypatch):
    def broken(*args, **kwargs):
        raise SlackObjectFormationError("text attribute cannot exceed 3000 characters")

    monkeypatch.setattr(blocks, "card", broken)
    _, req = await slack.api.ask()
    await slack.run_until_settled()
    await slack.run_until_settled()  # more jobs, same failure: recorded once
    assert slack.cards() == []
    failed = [
        r.as_dict()["data"]
        for r in await slack.service.audit.for_request(req["id"])
        if r.as_dict()["type"] == "delivery.failed"
    ]
    assert failed == [
        {
            "channel": "slack",
            "target": failed[0]["target"],
            "stage": "render",
            "error": "card_not_built_SlackObjectFormationError",
        }
    ]
    _, body = await slack.api.call("GET", f"/v1/requests/{req['id']}/deliveries", slack.api.agent_token)
    assert body["slack"]["deliveries"][0]["last_error"] == "card_not_built_SlackObjectFormationError"


async def test_approval_is_paged(slack):
    from approvalbot.core.events import EventType
    from tests.helpers import eventually

    _, req = await slack.api.ask()
    for _ in range(44):
        await slack.service.timer_fired(req["id"], EventType.REMINDER_DUE)
    records = await slack.service.audit.for_request(req["id"])
    assert len(records) > blocks.DETAIL_PAGE
    seen: list[str] = []
    for page in (1, 2):
        await slack.command("/approval", f"{req['id']} {page}", "U0BOB")

        async def answered(n=page):
            found = [r for r in slack.fake.responses if r["key"] == "approval"]
            return found if len(found) >= n else None

        answer = (await eventually(answered))[page - 1]
        assert "blocks" in answer, answer
        text = json.dumps(answer["blocks"])
        assert f"page {page} of 2" in text
        assert (f"/approval {req['id']} 2" in text) == (page == 1)
        seen += [f"#{r.seq}" for r in records if f"`#{r.seq}` `{r.hash[:12]}`" in text]
    assert seen == [f"#{r.seq}" for r in records]  # every record once, in order, over the pages
