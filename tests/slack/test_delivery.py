"""Delivery jobs: one card per request whatever fails, the thread in order, errors recorded."""

from __future__ import annotations

import asyncio
import json

import pytest

from approvalbot.core.events import EventType
from approvalbot.jobs.delivery import Engine, lease_key, pause_key
from approvalbot.slack.client import make_client
from approvalbot.slack.delivery import SlackDelivery
from approvalbot.slack.escape import ZWSP
from approvalbot.slack.settings import SlackConfig
from approvalbot.store.deliveries import DeliveryStore, state_key
from tests.slack.conftest import CHANNEL

NASTY = (
    "<!channel> <!here> <@U0ALICE> <#C0APPROVALS> <http://evil.example|click me> <!subteam^S0OPS> "
    "*bold* _it_ ~gone~ `code` & more\n> quoted"
)
FORBIDDEN = ("<!channel>", "<!here>", "<@U0ALICE>", "<#C0", "<http", "<!subteam")


def text_objects(node):
    """Every Block Kit text object inside blocks or a view."""
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            yield node
        for value in node.values():
            yield from text_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from text_objects(value)


def assert_inert(texts: list[str]) -> None:
    for text in texts:
        for bad in FORBIDDEN:
            assert bad not in text, (bad, text)


async def test_agent_markup_is_shown_as_data_everywhere(slack):
    _, req = await slack.api.ask(
        action="dataset.export",
        resource=NASTY,
        justification=NASTY,
        params={"query": NASTY, "<@U0BOB>": "*x*"},
        context={"impact": NASTY, "note": NASTY},
    )
    await slack.run_jobs()
    await slack.click("U0ALICE", req["id"], "deny")
    view = await slack.opened_view()
    await slack.submit("U0ALICE", view, NASTY)  # a human's reason is untrusted text too
    await slack.ephemerals_to("U0ALICE")
    await slack.run_jobs()

    sent = []
    for method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
        for call in slack.fake.calls_of(method):
            sent.append(call["text"])
            sent += [t["text"] for t in text_objects(call.get("blocks") or [])]
    sent += [t["text"] for t in text_objects(view)]
    assert len(sent) > 20
    assert_inert(sent)
    card = slack.card_for(req["id"])
    objects = list(text_objects(card["blocks"]))
    # The agent's text is there, escaped, in plain_text objects Slack does not format ...
    shown = [o for o in objects if "&lt;!channel&gt;" in o["text"]]
    assert shown and all(o["type"] == "plain_text" for o in shown)
    # ... and wherever it lands in mrkdwn (reasons in the thread and the DM), formatting cannot pair up.
    mrkdwn_with_it = [t for t in sent if "&lt;!channel&gt;" in t and "*bold*" not in t]
    assert any(f"{ZWSP}*{ZWSP}bold{ZWSP}*{ZWSP}" in t for t in mrkdwn_with_it)
    for obj in objects:
        if obj["type"] == "mrkdwn":
            assert "*bold*" not in obj["text"] and "`code`" not in obj["text"]
    # Our own mention of an email approver still works: only ids Slack gave us are mentioned.
    assert "<@U0DANA>" in json.dumps(card["blocks"])


async def test_card_goes_to_the_channel_the_policy_names(slack):
    _, _req = await slack.api.ask(action="billing.refund")
    await slack.run_jobs()
    assert slack.cards("C0ELSEWHERE") and not slack.cards(CHANNEL)
    assert slack.fake.calls_of("conversations.list")  # "#elsewhere" resolved to its id once
    _, _again = await slack.api.ask(action="billing.void")
    await slack.run_jobs()
    assert len(slack.cards("C0ELSEWHERE")) == 2
    assert len(slack.fake.calls_of("conversations.list")) == 1  # cached


async def test_short_rate_limit_is_waited_out_in_the_client(slack):
    slack.fake.fail("chat.postMessage", times=1, status=429, retry_after=0)
    _, _req = await slack.api.ask()
    await slack.run_jobs()
    assert len(slack.cards()) == 1
    assert slack.scheduled() == []
    attempts = [c for c in slack.fake.calls if c.method == "chat.postMessage" and "thread_ts" not in c.args]
    assert len(attempts) == 2 and attempts[0].failed


async def test_429_storm_honours_retry_after_and_ends_with_one_card(slack):
    slack.fake.fail("chat.postMessage", times=3, status=429, retry_after=30)
    _, req = await slack.api.ask()
    await slack.run_jobs()
    assert slack.cards() == []
    ((_, due_in),) = slack.scheduled()
    assert 25 < due_in <= 31  # rescheduled for Retry-After, not hammering Slack
    assert 25_000 < await slack.service.redis.pttl(pause_key("slack", CHANNEL)) <= 30_000  # the channel waits too
    for _ in range(6):  # each retry falls due when Retry-After has passed (the pause with it)
        await slack.service.redis.delete(pause_key("slack", CHANNEL))
        await slack.promote()
        await slack.run_jobs()
        if not slack.scheduled():
            break
    slack.card_for(req["id"])  # exactly one
    card_attempts = [c for c in slack.fake.calls if c.method == "chat.postMessage" and "thread_ts" not in c.args]
    assert len(card_attempts) == 4
    replies = slack.fake.replies(CHANNEL, slack.card_for(req["id"])["ts"])
    assert len(replies) == 1


async def test_5xx_storm_and_lost_answers_end_with_one_card_and_one_reply_each(slack):
    slack.fake.fail("chat.postMessage", times=1, status=500, after=True)  # posted, but the answer is lost
    slack.fake.fail("chat.postMessage", times=2, status=503)
    slack.fake.fail("chat.postMessage", times=1, status=500, after=True)  # a thread reply, answer lost
    _, req = await slack.api.ask()
    await slack.run_until_settled()
    card = slack.card_for(req["id"])
    _status, _ = await slack.api.decide(req["id"], slack.api.approver_token, "approve")
    slack.fake.fail("chat.update", times=2, status=502)
    slack.fake.fail("chat.postMessage", times=1, status=500, after=True)
    await slack.run_until_settled()
    card = slack.card_for(req["id"])
    records = await slack.service.audit.for_request(req["id"])
    replies = slack.fake.replies(CHANNEL, card["ts"])
    assert [r["metadata"]["event_payload"]["seq"] for r in replies] == [r.seq for r in records]
    assert not [b for b in card["blocks"] if b["type"] == "actions"]
    assert len(slack.fake.top_level("D0OWNER")) == 1
    assert slack.fake.calls_of("conversations.history")  # the lost card was looked up, not re-posted


def kill_once(monkeypatch, when):
    """Make the worker "die" once, at the first state write `when(changes)` picks: nothing after it is saved."""
    original = DeliveryStore.save
    kills = []

    async def save(self, request_id, channel, target, state, **changes):
        if not kills and when(changes):
            kills.append(changes)
            raise RuntimeError("worker killed")
        return await original(self, request_id, channel, target, state, **changes)

    monkeypatch.setattr(DeliveryStore, "save", save)
    return kills


async def test_job_killed_after_posting_before_saving_ts_does_not_post_twice(slack, monkeypatch):
    kills = kill_once(monkeypatch, lambda changes: "message_id" in changes)
    _, req = await slack.api.ask()
    await slack.run_jobs()
    assert kills and len(slack.cards()) == 1
    state = await slack.service.redis.hgetall(state_key(req["id"], "slack", CHANNEL))
    assert not state.get(b"message_id") and state.get(b"posting_since")  # the intent is remembered, the ts is not
    await slack.run_until_settled()
    assert len(slack.cards()) == 1
    assert len(slack.fake.calls_of("conversations.history")) == 1
    card = slack.card_for(req["id"])
    assert (await slack.service.redis.hget(state_key(req["id"], "slack", CHANNEL), "message_id")).decode() == card["ts"]
    assert len(slack.fake.replies(CHANNEL, card["ts"])) == 1


async def test_job_killed_mid_thread_does_not_repeat_replies(slack, monkeypatch):
    _, req = await slack.api.ask()
    await slack.run_jobs()
    kills = kill_once(monkeypatch, lambda changes: changes.get("mirrored_seq", 0) > 1)
    await slack.api.decide(req["id"], slack.api.approver_token, "approve")
    await slack.run_until_settled()
    assert kills
    card = slack.card_for(req["id"])
    seqs = [r["metadata"]["event_payload"]["seq"] for r in slack.fake.replies(CHANNEL, card["ts"])]
    assert seqs == sorted(set(seqs)) and len(seqs) == 3
    assert slack.fake.calls_of("conversations.replies")


async def test_lock_left_by_a_dead_worker_expires_and_sync_proceeds(slack):
    _, req = await slack.api.ask()
    await slack.service.redis.set(lease_key("slack", req["id"]), "dead-worker", px=300)
    await slack.run_jobs()
    assert len(slack.cards()) == 1


async def test_concurrent_syncs_of_one_request_post_one_card(slack, settings):
    config = SlackConfig.from_settings(settings)
    _, req = await slack.api.ask()
    redis = slack.service.redis
    results = await asyncio.gather(
        *(Engine(redis, SlackDelivery(redis, make_client(config), config)).sync(req["id"]) for _ in range(4))
    )
    assert all(r.retry_in is None for r in results)
    assert len(slack.cards()) == 1
    assert len(slack.fake.replies(CHANNEL, slack.card_for(req["id"])["ts"])) == 1


@pytest.mark.parametrize("code", ["channel_not_found", "not_in_channel", "invalid_auth", "account_inactive"])
async def test_permanent_errors_are_recorded_once_and_the_request_stays_decidable(slack, code):
    slack.fake.fail("chat.postMessage", times=100, error=code)
    _, req = await slack.api.ask()
    await slack.run_until_settled()
    assert slack.cards() == []
    records = [r.as_dict() for r in await slack.service.audit.for_request(req["id"])]
    failed = [r for r in records if r["type"] == "delivery.failed"]
    assert len(failed) == 1
    assert failed[0]["data"] == {"channel": "slack", "target": CHANNEL, "stage": "post", "error": code}
    assert "xoxb" not in json.dumps(records) and "xapp" not in json.dumps(records)

    status, body = await slack.api.call("GET", f"/v1/requests/{req['id']}/deliveries", slack.api.agent_token)
    assert status == 200
    assert body["slack"]["errors"] == {"post": code} and body["slack"]["ts"] is None
    assert body["slack"]["failures"][0]["error"] == code

    await slack.run_until_settled()  # more jobs, same failure: not recorded again
    records = [r.as_dict() for r in await slack.service.audit.for_request(req["id"])]
    assert sum(r["type"] == "delivery.failed" for r in records) == 1

    status, decided = await slack.api.decide(req["id"], slack.api.approver_token, "approve", "via the API")
    assert (status, decided["status"]) == (200, "approved")
    status, final = await slack.api.call("GET", f"/v1/requests/{req['id']}", slack.api.agent_token)
    assert final["status"] == "approved"


async def test_delivery_recovers_once_slack_accepts_again(slack):
    slack.fake.fail("chat.postMessage", times=1, error="not_in_channel")
    _, req = await slack.api.ask()
    await slack.run_jobs()
    # The failure record's own job tried again and the bot had been invited by then.
    card = slack.card_for(req["id"])
    _status, body = await slack.api.call("GET", f"/v1/requests/{req['id']}/deliveries", slack.api.approver_token)
    assert body["slack"]["errors"] == {} and body["slack"]["ts"] == card["ts"]
    assert len(body["slack"]["failures"]) == 1
    replies = slack.fake.replies(CHANNEL, card["ts"])
    assert [json.loads(json.dumps(r["metadata"]))["event_payload"]["seq"] for r in replies] == [
        r.seq for r in await slack.service.audit.for_request(req["id"])
    ]
    assert "Delivery failed" in replies[-1]["text"] and "not_in_channel" in replies[-1]["text"]


async def test_unknown_policy_channel_is_a_recorded_failure(slack):
    _, req = await slack.api.ask(action="lost.thing")
    await slack.run_jobs()
    records = [r.as_dict() for r in await slack.service.audit.for_request(req["id"])]
    assert [r["data"]["error"] for r in records if r["type"] == "delivery.failed"] == ["channel_not_found"]


async def test_reminders_and_escalations_are_posted_in_the_thread_with_mentions(slack):
    _, iam = await slack.api.ask(action="iam.role.attach")
    _, export = await slack.api.ask(action="dataset.export")
    await slack.run_jobs()
    await slack.service.timer_fired(iam["id"], EventType.ESCALATION_DUE)
    await slack.service.timer_fired(export["id"], EventType.REMINDER_DUE)
    await slack.run_jobs()
    escalation = slack.fake.replies(CHANNEL, slack.card_for(iam["id"])["ts"])[-1]
    assert "Escalation" in escalation["text"]
    assert "<@U0OSCAR>" in json.dumps(escalation["blocks"])  # oncall's member, resolved by email
    assert "oncall" in json.dumps(escalation["blocks"])
    reminder = slack.fake.replies(CHANNEL, slack.card_for(export["id"])["ts"])[-1]
    assert "Reminder" in reminder["text"] and "<@U0DANA>" in json.dumps(reminder["blocks"])


async def test_owner_outside_slack_is_recorded_once_and_nothing_else_breaks(slack):
    _, token = await slack.service.identities.add_agent("night-bot", "stranger@example.com")
    _, req = await slack.api.ask(token=token)
    await slack.run_jobs()
    await slack.api.decide(req["id"], slack.api.approver_token, "approve")
    await slack.run_until_settled()
    records = [r.as_dict() for r in await slack.service.audit.for_request(req["id"])]
    failures = [r["data"] for r in records if r["type"] == "delivery.failed"]
    assert failures == [{"channel": "slack", "target": "final", "stage": "final", "error": "users_not_found"}]
    card = slack.card_for(req["id"])
    assert len(slack.fake.replies(CHANNEL, card["ts"])) == len(records)
