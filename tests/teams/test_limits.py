"""Teams message size as sent, the connector's 413, the paged `approval ID`, and private answers.

Sizes are the bytes the fake connector received on the wire from the real SDK path (msrest
escapes non-ASCII as \\uXXXX), not our estimate. The connector answers an activity that is too
large with 413 `MessageSizeTooBig`
(https://learn.microsoft.com/en-us/microsoftteams/platform/bots/how-to/rate-limit#handle-rate-limits-for-bots
and the connector API reference); the fake does the same above `max_body`.
"""

from __future__ import annotations

import json

import pytest

from approvalbot.core.events import EventType
from approvalbot.teams import cards
from approvalbot.web.context import SERVICES

from .conftest import Person, new_conversation
from .test_commands import private_cards, replies_in, reply_cards
from .test_flow import texts

LT = "\uff1c"  # the look-alike `inert` shows for "<"


def card_calls(teams, conversation: str, kind: str = "create"):
    return [c for c in teams.fake.calls if c.conversation == conversation and c.kind == kind and c.body]


@pytest.mark.parametrize("fill", ["x", "漢", LT, "<", "😀"])
async def test_the_largest_card_stays_within_the_budget_as_sent(teams, fill):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    # As much as the API accepts in one body (64 KB as the client sends it: JSON, non-ASCII escaped too).
    width = len(json.dumps(fill)) - 2
    scale = min(1.0, 58000 / (10400 * width))

    def n(chars: int) -> int:
        return int(chars * scale)

    created = await teams.ask(
        resource=fill * n(1000),
        justification=fill * n(4000),
        context={f"k{i}": fill * n(200) for i in range(12)},
        params={f"p{i}": fill * n(300) for i in range(10)},
    )
    await teams.run_jobs()
    posts = [c for c in card_calls(teams, channel) if c.body.get("attachments")]
    assert [c.status for c in posts] == [201]
    assert posts[0].size <= cards.DEFAULT_MAX_BYTES
    card = posts[0].body["attachments"][0]["content"]
    assert cards.sent_size(card) >= posts[0].size  # the estimate we budget with never under-counts
    whole = cards.request_card(await teams.service.get(created["id"]))
    shortened = cards.SHORTENED.format(id=created["id"]) in texts(card)
    assert shortened == (cards.sent_size(whole) > cards.DEFAULT_MAX_BYTES)  # shortened only when it must be
    assert shortened == (fill != "x")  # for these sizes: ASCII fits whole, the rest does not
    print(f"{fill!r}: whole card ~{cards.sent_size(whole)} bytes; posted in {posts[0].size} bytes as sent")


async def test_a_smaller_budget_is_honoured(teams, monkeypatch):
    monkeypatch.setenv("APPROVALBOT_TEAMS_MAX_BYTES", "12000")
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask(justification="漢" * 4000, params={"p": "😀" * 500})
    await teams.run_jobs()
    posts = [c for c in card_calls(teams, channel) if c.body.get("attachments")]
    assert len(posts) == 1 and posts[0].status == 201 and posts[0].size <= 12000
    # …where the default budget would have sent more.
    assert cards.sent_size(cards.fit_request_card(await teams.service.get(created["id"]))) > 12000


async def test_413_from_the_connector_is_answered_with_the_summary(teams, people):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    _, bob = await teams.service.identities.add_approver("bob@example.com", [])
    teams.fake.max_body = 7000  # stricter than our budget: the connector has the last word
    created = await teams.ask(justification="j" * 4000, params={f"p{i}": "v" * 400 for i in range(10)})
    await teams.run_jobs()
    posts = [c for c in card_calls(teams, channel) if c.body.get("attachments")]
    assert [c.status for c in posts] == [413, 201]
    assert posts[0].size > 7000 >= posts[1].size
    summary = posts[1].body["attachments"][0]["content"]
    assert cards.SHORTENED.format(id=created["id"]) in texts(summary)
    assert [a.get("verb") or a["title"] for a in summary["actions"]] == ["approve", "Deny\u2026"]
    # An update too big for the connector gets the summary too; nothing is recorded as failed.
    await teams.call("POST", f"/v1/requests/{created['id']}/decisions", bob, json={"decision": "approve"})
    await teams.run_jobs()
    updates = card_calls(teams, channel, "update")
    assert updates and updates[-1].status == 200
    types = [r.as_dict()["type"] for r in await teams.service.audit.for_request(created["id"])]
    assert "delivery.failed" not in types


async def test_approval_id_is_paged_within_the_budget(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    created = await teams.ask(justification="漢" * 300)
    for _ in range(12):
        await teams.service.timer_fired(created["id"], EventType.REMINDER_DUE)
    records = await teams.service.audit.for_request(created["id"])
    small = 6000
    pages = cards.audit_pages([r.as_dict() for r in records], small)
    assert len(pages) > 1
    seen: list[str] = []
    teams.app[SERVICES].extras["teams"].bot.max_bytes = small  # as APPROVALBOT_TEAMS_MAX_BYTES=6000 would
    for page in range(1, len(pages) + 1):
        since = len(teams.fake.calls)
        await teams.say(people["alice"], "a:personal-alice", f"approval {created['id']} {page}", kind="personal")
        calls = replies_in(teams, "a:personal-alice", since)
        assert all(c.size <= small for c in calls)
        trail = reply_cards(calls)[1]
        shown = texts(trail)
        assert shown[0] == f"Audit trail, page {page} of {len(pages)}"
        seen += [t.split(" ")[0] for t in shown if t.startswith("#")]
    assert seen == [f"#{r.seq}" for r in records]  # every record once, in order, over the pages


async def test_pending_in_a_channel_never_shows_the_queue_there(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    created = await teams.ask(justification="secret project")
    channel = new_conversation("approvals")
    since = len(teams.fake.calls)
    await teams.say(people["alice"], channel, "pending")
    cards_ = private_cards(teams, people["alice"], channel, since)
    assert [c["refresh"]["action"]["data"]["request_id"] for c in cards_] == [created["id"]]
    conversation = [c for c in teams.fake.calls[since:] if c.kind == "conversation"]
    assert conversation[0].body["members"] == [{"id": people["alice"].user_id}]
    assert conversation[0].body["isGroup"] is False


async def test_no_private_chat_means_a_note_and_no_queue(teams, connector):
    stranger = Person("29:stranger", "aad-stranger", "stranger@example.com", "Stranger")  # unknown to the connector
    await teams.service.identities.add_approver("stranger@example.com", [])
    await teams.ask(justification="secret project")
    channel = new_conversation("approvals")
    since = len(teams.fake.calls)
    await teams.say(stranger, channel, "pending")
    in_channel = replies_in(teams, channel, since)
    assert reply_cards(in_channel) == []
    assert len(in_channel) == 1 and "could not message you privately" in in_channel[0].body["text"]
    assert all("secret project" not in str(c.body) for c in teams.fake.calls[since:])
