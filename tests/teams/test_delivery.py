"""Delivery guarantees: retries with backoff, 429 honoured, posted once, permanent failures recorded."""

from __future__ import annotations

import asyncio
import random

import pytest

from approvalbot.core.events import EventType
from approvalbot.core.policy import Policy
from approvalbot.jobs import delivery as engine
from approvalbot.store import keys
from approvalbot.store.deliveries import DeliveryStore
from approvalbot.teams import delivery
from approvalbot.teams.references import (
    ReferenceStore,
    conversation_hash,
    delivery_channel,
)

from .conftest import new_conversation
from .test_flow import texts


def routed(channel: str) -> Policy:
    return Policy.from_yaml(
        f"""
rules:
  - name: routed
    match: {{action: "iam.*"}}
    effect: require_approval
    approvers: ["*"]
    channel: "{channel}"
  - name: rest
    match: {{action: "*"}}
    effect: require_approval
    approvers: ["*"]
"""
    )


def run_job(request_id: str):
    """The Teams delivery job, called the way a shell would: outside any RQ worker."""
    return asyncio.run(delivery.deliver(request_id, 1))


def cards_per_request(fake, conversation: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for card in fake.cards("create", conversation):
        rid = card["refresh"]["action"]["data"]["request_id"] if "refresh" in card else "final"
        counts[rid] = counts.get(rid, 0) + 1
    return counts


async def state_of(teams, request_id: str, conversation: str) -> dict[str, str]:
    raw = await teams.service.redis.hgetall(
        keys.delivery(request_id, delivery_channel(conversation_hash(conversation)))
    )
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_429_burst_is_honoured_and_the_card_is_posted_once(teams):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    teams.fake.fail_next(2, 429, retry_after=1)
    await teams.run_jobs()
    creates = [c for c in teams.fake.calls if c.kind == "create" and c.body.get("attachments")]
    assert [c.status for c in creates] == [429, 429, 201]
    # Teams said "retry after 1 s": no call to that conversation came sooner.
    assert creates[1].at - creates[0].at >= 0.95 and creates[2].at - creates[1].at >= 0.95
    assert cards_per_request(teams.fake, channel) == {created["id"]: 1}
    state = await state_of(teams, created["id"], channel)
    assert state["message_id"] == teams.fake.root(channel) and state["failures"] == "0"
    assert state["mirrored_seq"] == "2"  # seq 1 is the owner's person.added record


async def test_server_errors_back_off_then_succeed_once(teams):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    teams.fake.fail_next(2, 500)
    await teams.run_jobs()
    assert [c.status for c in teams.fake.calls if c.kind == "create" and c.body.get("attachments")] == [500, 500, 201]
    assert cards_per_request(teams.fake, channel) == {created["id"]: 1}
    assert [r.as_dict()["type"] for r in await teams.service.audit.for_request(created["id"])] == ["request.created"]


async def test_failure_storm_many_requests_two_channels_one_card_each(teams, people, monkeypatch):
    monkeypatch.setattr(engine, "BACKOFF", (1,))
    channels = [new_conversation("a-ops"), new_conversation("b-sec")]
    for i, channel in enumerate(channels):
        await teams.add_bot(channel, name=f"chan-{i}")
    await teams.service.identities.add_approver("alice@example.com", [])
    _, bob = await teams.service.identities.add_approver("bob@example.com", [])
    requests = [await teams.ask(resource=f"r{i}") for i in range(4)]
    rng = random.Random(7)
    for _ in range(10):
        teams.fake.fail_next(1, rng.choice([429, 500, 502, 503]), retry_after=rng.choice([None, 1]))
    await teams.run_jobs(within=60)
    # decisions from Teams and from the API while another storm blows
    for _ in range(6):
        teams.fake.fail_next(1, rng.choice([429, 500]), retry_after=1, kinds=("reply", "update"))
    await teams.click(people["alice"], channels[0], "approve", requests[0]["id"])
    await teams.call(
        "POST", f"/v1/requests/{requests[1]['id']}/decisions", bob, json={"decision": "deny", "reason": "no"}
    )
    await teams.run_jobs(within=60)

    assert any(c.status >= 429 for c in teams.fake.calls)
    for channel in channels:
        assert cards_per_request(teams.fake, channel) == {r["id"]: 1 for r in requests}
        for request in requests:
            state = await state_of(teams, request["id"], channel)
            records = await teams.service.audit.for_request(request["id"])
            assert int(state["mirrored_seq"]) == records[-1].seq
            root = state["message_id"]
            chain = [
                texts(teams.fake.cards("reply", channel)[i])[0]
                for i, c in enumerate(c for c in teams.fake.ok("reply") if c.conversation == channel)
                if c.activity_id == root
            ]
            assert chain == [f"#{r.seq}" for r in records]  # each record once, in order
    updates = [c for c in teams.fake.ok("update")]
    assert {c.activity_id for c in updates} <= {
        (await state_of(teams, r["id"], ch))["message_id"] for r in requests[:2] for ch in channels
    }


async def test_permanent_failure_is_recorded_and_the_request_stays_decidable(teams):
    good, bad = new_conversation("a-good"), new_conversation("b-gone")
    await teams.add_bot(good, name="a-good")
    await teams.add_bot(bad, name="b-gone")
    _, token = await teams.service.identities.add_approver("bob@example.com", [])
    created = await teams.ask()
    teams.fake.broken[bad] = 403  # e.g. the bot was removed from the team
    await teams.run_jobs()
    assert cards_per_request(teams.fake, good) == {created["id"]: 1}
    assert cards_per_request(teams.fake, bad) == {}
    records = [r.as_dict() for r in await teams.service.audit.for_request(created["id"])]
    failed = [r for r in records if r["type"] == "delivery.failed"]
    assert len(failed) == 1
    assert failed[0]["data"] == {"channel": "teams", "target": "Platform/b-gone", "stage": "post", "error": "http_403"}
    assert "secret" not in str(failed[0]).lower()
    # The failure is visible in the other conversation's reply chain.
    assert any("Delivery failed" in t for c in teams.fake.cards("reply", good) for t in texts(c))
    # No more attempts at the failed conversation, and the request is still decidable.
    calls_before = len([c for c in teams.fake.calls if c.conversation == bad])
    status, body = await teams.call(
        "POST", f"/v1/requests/{created['id']}/decisions", token, json={"decision": "approve"}
    )
    assert (status, body["status"]) == (200, "approved")
    await teams.run_jobs()
    assert len([c for c in teams.fake.calls if c.conversation == bad]) == calls_before
    assert len(teams.fake.cards("update", good)) == 1


async def test_transient_failures_that_never_end_become_a_permanent_failure(teams, monkeypatch):
    monkeypatch.setattr(engine, "BACKOFF", (1,))
    monkeypatch.setattr(engine, "MAX_FAILURES", 3)
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    teams.fake.fail_next(3, 503)
    await teams.run_jobs()
    assert [c.status for c in teams.fake.calls if c.kind == "create" and c.body.get("attachments")] == [503] * 3
    failed = [
        r.as_dict()
        for r in await teams.service.audit.for_request(created["id"])
        if r.as_dict()["type"] == "delivery.failed"
    ]
    assert [f["data"]["error"] for f in failed] == ["http_503_retries_exhausted"]
    _, still = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
    assert still["status"] == "pending"


async def test_concurrent_jobs_for_one_request_post_once(teams):
    """Several workers running the same request's jobs at once: the lease serialises them."""
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    await asyncio.gather(*(asyncio.to_thread(run_job, created["id"]) for _ in range(6)))
    assert cards_per_request(teams.fake, channel) == {created["id"]: 1}
    assert len([c for c in teams.fake.ok("reply") if c.conversation == channel]) == 1


async def test_crash_before_the_post_is_sent_posts_once(teams):
    """A worker killed after marking the post in flight but before sending: the retry posts once."""
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    key = keys.delivery(created["id"], delivery_channel(conversation_hash(channel)))
    await teams.service.redis.hset(key, "posting_since", "1795000000.0")
    await asyncio.to_thread(run_job, created["id"])
    assert cards_per_request(teams.fake, channel) == {created["id"]: 1}
    state = await state_of(teams, created["id"], channel)
    assert state["reposts"] == "1" and state["posting_since"] == "" and state["message_id"]


async def test_crash_after_teams_accepted_the_post_is_the_documented_duplicate(teams, monkeypatch):
    """Killed between Teams' 201 and recording the id: at-least-once, so one extra card, logged."""
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    original = DeliveryStore.save
    crashed = []

    async def crash_once(self, *args, **values):
        if "message_id" in values and not crashed:
            crashed.append(True)
            raise KeyboardInterrupt  # what a killed worker looks like from here: nothing recorded
        return await original(self, *args, **values)

    monkeypatch.setattr(DeliveryStore, "save", crash_once)
    with pytest.raises(KeyboardInterrupt):
        await asyncio.to_thread(run_job, created["id"])
    await teams.service.redis.delete(engine.lease_key("teams", created["id"]))  # the dead worker's lease expires
    await asyncio.to_thread(run_job, created["id"])
    assert cards_per_request(teams.fake, channel) == {created["id"]: 2}
    state = await state_of(teams, created["id"], channel)
    assert state["reposts"] == "1"
    assert state["message_id"] == [c for c in teams.fake.ok("create") if c.body.get("attachments")][-1].result_id
    await asyncio.to_thread(run_job, created["id"])
    assert cards_per_request(teams.fake, channel) == {created["id"]: 2}  # and never more


async def test_policy_channel_routes_to_the_named_conversation_only(teams):
    teams.service.policy = routed("#sec-approvals")
    sec, ops, chat = new_conversation("sec"), new_conversation("ops"), "19:groupchat-1@thread.v2"
    await teams.add_bot(sec, name="sec-approvals")
    await teams.add_bot(ops, name="ops")
    await teams.add_bot(chat, name="incident chat", kind="groupChat")
    iam = await teams.ask(action="iam.role.attach")
    other = await teams.ask(action="dataset.export")
    await teams.run_jobs()
    assert cards_per_request(teams.fake, sec) == {iam["id"]: 1, other["id"]: 1}
    assert cards_per_request(teams.fake, ops) == {other["id"]: 1}  # no hint: every team channel
    assert cards_per_request(teams.fake, chat) == {}  # never group chats without a hint


async def test_group_chat_receives_cards_when_a_rule_names_it(teams):
    teams.service.policy = routed("incident chat")
    chat = "19:groupchat-2@thread.v2"
    await teams.add_bot(chat, name="Incident Chat", kind="groupChat")
    iam = await teams.ask(action="iam.role.attach")
    await teams.run_jobs()
    assert cards_per_request(teams.fake, chat) == {iam["id"]: 1}


async def test_unmatched_routing_hint_is_a_visible_failure(teams):
    teams.service.policy = routed("#nowhere")
    channel = new_conversation("ops")
    await teams.add_bot(channel, name="ops")
    iam = await teams.ask(action="iam.role.attach")
    await teams.run_jobs()
    await teams.run_jobs()
    assert cards_per_request(teams.fake, channel) == {}
    failed = [
        r.as_dict()
        for r in await teams.service.audit.for_request(iam["id"])
        if r.as_dict()["type"] == "delivery.failed"
    ]
    assert len(failed) == 1 and failed[0]["data"]["error"] == "no_matching_conversation"
    assert failed[0]["data"]["target"] == "#nowhere" and failed[0]["data"]["stage"] == "route"


async def test_personal_chats_are_never_stored_and_removal_forgets(teams, people):
    await teams.add_bot("a:personal-alice", kind="personal", by=people["alice"])
    channel = new_conversation("ops")
    await teams.add_bot(channel, name="ops")
    store = ReferenceStore(teams.service.redis)
    assert [r.id for r in await store.all()] == [channel]
    removed = teams.activity("conversationUpdate", None, channel, membersRemoved=[{"id": "28:approvalbot-bot"}])
    status, _ = await teams.post(removed)
    assert status in (200, 201)
    assert await store.all() == []
    await teams.ask()
    await teams.run_jobs()
    assert teams.fake.cards("create") == []


async def test_a_slow_connector_makes_the_job_hand_over_within_its_timeout(teams, people, monkeypatch):
    """With a 6 s job timeout and 0.4 s per call, one job cannot mirror everything: it stops in time
    and its retry continues where it left off; the chain is still complete, in order, once."""
    monkeypatch.setenv("APPROVALBOT_JOB_TIMEOUT", "6")
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    # Six more audit records to mirror (reminders: repeated self-approvals are one record since issue 12).
    for _ in range(6):
        await teams.service.timer_fired(created["id"], EventType.REMINDER_DUE)
    handovers = []
    check = engine.Budget.check

    def spy(self):
        try:
            check(self)
        except engine.OutOfTime:
            handovers.append(self.deadline)
            raise

    monkeypatch.setattr(engine.Budget, "check", spy)
    teams.fake.slow = 0.4
    started = asyncio.get_running_loop().time()
    await teams.run_jobs(within=60)
    records = await teams.service.audit.for_request(created["id"])
    assert len(records) == 7
    root = teams.fake.root(channel)
    chain = [
        texts(c)[0]
        for c, call in zip(
            teams.fake.cards("reply", channel),
            [c for c in teams.fake.ok("reply") if c.conversation == channel],
            strict=False,
        )
        if call.activity_id == root
    ]
    assert chain == [f"#{r.seq}" for r in records]
    assert cards_per_request(teams.fake, channel) == {created["id"]: 1}
    assert asyncio.get_running_loop().time() - started < 30
    assert handovers, "the budget never ran out: the test did not test anything"
