"""Retries resume within seconds when the worker whose ticker promotes them is killed.

Every worker's ticker promotes due retries (RQ's scheduled job registry) under RQ's
scheduler lock. RQ gives that lock 61 s; a worker killed with SIGKILL while holding it
used to stop every retry in the system for up to a minute. The ticker now keeps the
lock's life short (it refreshes it every tick anyway), so another worker takes over.
"""

from __future__ import annotations

import time

import aiohttp
import redis as sync_redis
from rq.scheduler import RQScheduler

from approvalbot.jobs.ticker import SCHEDULER_LOCK_SECONDS
from approvalbot.store.keys import CALLBACK_QUEUE, rq_queue
from tests.helpers import eventually
from tests.reliability.conftest import make_tokens
from tests.reliability.test_load_and_faults import (
    CallbackReceiver,
    post,
    rq_state,
)

# Callbacks have their own RQ queue (`<APPROVALBOT_QUEUE>:callbacks`); its scheduler lock is the one that matters.
LOCK = RQScheduler.get_locking_key(rq_queue("approvalbot", CALLBACK_QUEUE))


async def test_a_killed_scheduler_lock_holder_delays_retries_by_seconds_not_a_minute(redis_url, spawn):
    web = spawn(redis_url, "web", web=True)
    first = spawn(redis_url, "worker", APPROVALBOT_JOB_TIMEOUT="3")
    agent, (alice,) = await make_tokens(redis_url)
    client = sync_redis.Redis.from_url(redis_url)
    try:
        await eventually(lambda: client.get(LOCK) is not None, 20, lambda: "the first worker never took the lock")
        first.kill()  # it dies holding the scheduler lock
        killed_at = time.monotonic()
        spawn(redis_url, "worker", APPROVALBOT_JOB_TIMEOUT="3")
        receiver = CallbackReceiver(fail_first=1)  # the first delivery fails: RQ schedules a retry
        async with receiver as hook, aiohttp.ClientSession() as http:
            status, created = await post(
                http, f"{web.base}/v1/requests", agent, {"action": "db.migrate", "callback_url": hook}
            )
            assert status == 201, created
            status, decided = await post(
                http, f"{web.base}/v1/requests/{created['id']}/decisions", alice, {"decision": "approve"}
            )
            assert status == 200, decided
            await eventually(lambda: receiver.delivered, 30, lambda: rq_state(redis_url))
        recovered = time.monotonic() - killed_at
        assert receiver.failures == 1 and receiver.delivered == {created["id"]: 1}
        # The dead worker's lock lapsed within SCHEDULER_LOCK_SECONDS, not RQ's 61 s.
        assert recovered < SCHEDULER_LOCK_SECONDS + 10, recovered
        assert 0 < client.ttl(LOCK) <= SCHEDULER_LOCK_SECONDS
    finally:
        client.close()
