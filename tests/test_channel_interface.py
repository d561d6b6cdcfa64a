"""A third channel is one module plus one line in the composition root, and gets the same engine and rules."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rq import Queue

from approvalbot import app as composition
from approvalbot.core.models import RequestCreate
from approvalbot.jobs.outbox import Outbox
from tests.helpers import drain, queued
from tests.memory_channel import BOARD, MemoryChannel


@pytest.fixture
def with_memory_channel(monkeypatch):
    """The one line a new channel adds to the composition root."""
    monkeypatch.setattr(composition, "CHANNELS", (*composition.CHANNELS, MemoryChannel))
    BOARD.reset()
    yield
    BOARD.reset()


async def run_jobs(redis, rt, rounds: int = 10) -> None:
    queue = Queue(rt.settings.queue_name, connection=rt.sync_redis())
    outbox = Outbox(redis, queue, composition.subscribers(rt.settings))
    for _ in range(rounds):
        while await outbox.dispatch():
            pass
        if queued(queue) == 0:
            return
        await drain(queue)
    raise AssertionError("jobs kept producing work")


async def test_the_memory_channel_is_wired_through_the_composition_root(with_memory_channel, rt):
    (memory,) = [c for c in composition.channels(rt.settings) if c.name == "memory"]
    assert isinstance(memory, MemoryChannel)
    assert "Memory: on (test channel)" in composition.status_lines(rt.settings)
    assert [s.name for s in composition.subscribers(rt.settings)] == ["callback", "memory"]  # Slack, Teams off


async def test_card_once_update_thread_in_order_and_the_core_rules(with_memory_channel, rt, redis):
    service = rt.service(redis)
    agent, token = await service.identities.add_agent("etl-bot", "owner@example.com")
    await service.identities.add_approver("owner@example.com", [])
    await service.identities.add_approver("alice@example.com", [])
    request, _ = await service.create(agent, RequestCreate(action="db.drop", resource="prod"))
    await run_jobs(redis, rt)
    assert [p["card"]["request_id"] for p in BOARD.posts] == [request.id]

    app = composition.build_app(rt.settings, service, signer=rt.signer())
    async with TestClient(TestServer(app)) as client:
        # The owner clicking approve in the channel is refused by the core's rule, as through the API.
        click = {"user": "mem:owner@example.com", "request_id": request.id, "decision": "approve"}
        answer = await client.post("/memory/decide", json=click)
        assert answer.status == 403 and (await answer.json())["refused"] == "self_approval"
        answer = await client.post("/memory/decide", json={**click, "user": "mem:alice@example.com"})
        assert (answer.status, (await answer.json())["status"]) == (200, "approved")
        await run_jobs(redis, rt)
        answer = await client.get(f"/v1/requests/{request.id}/deliveries", headers={"Authorization": f"Bearer {token}"})
        assert answer.status == 200
        shown = (await answer.json())["memory"]  # the generic per-target state, shaped by the channel

    assert len(BOARD.posts) == 1  # posted once, whatever number of jobs ran
    assert BOARD.updates and BOARD.updates[-1]["card"]["status"] == "approved"
    records = await service.audit.for_request(request.id)
    assert [r["seq"] for r in BOARD.replies] == [r.seq for r in records]  # each record once, in order
    assert shown["targets"]["board"] == {"message_id": BOARD.posts[0]["id"], "mirrored_seq": records[-1].seq}


async def test_a_permanent_failure_is_one_delivery_failed_record_with_the_common_fields(with_memory_channel, rt, redis):
    service = rt.service(redis)
    agent, _ = await service.identities.add_agent("etl-bot", "owner@example.com")
    BOARD.failing["posts"] = [403]
    request, _ = await service.create(agent, RequestCreate(action="db.drop"))
    await run_jobs(redis, rt)
    await run_jobs(redis, rt)
    failed = [r.as_dict() for r in await service.audit.for_request(request.id)]
    failed = [r for r in failed if r["type"] == "delivery.failed"]
    assert [r["data"] for r in failed] == [
        {"channel": "memory", "target": "board", "stage": "post", "error": "http_403"}
    ]
    assert BOARD.posts == []  # a permanent failure closes the target
