"""Plain helpers shared by the test suites: bounded waiting, an HTTP client for our API, RQ in a thread.

Fixtures stay in the conftest files; what several suites call as ordinary functions or
classes lives here once, so a fix to (say) how a response body is read reaches every test.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rq import Queue
from rq.registry import ScheduledJobRegistry

from approvalbot.jobs.fair import FairLanes
from approvalbot.jobs.queues import DELIVERY_QUEUE, queues_for
from approvalbot.jobs.worker import ThreadWorker

# --- waiting ----------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Any],
    within: float = 5.0,
    explain: Callable[[], str] | None = None,
    interval: float = 0.02,
) -> Any:
    """Poll `check` (plain or async) until it returns something truthy, and return that; fail after `within` s.

    Effects under test happen in other tasks, threads or processes; a bounded poll keeps the
    tests free of fixed sleeps without letting a lost effect hang the run. `explain` adds
    context (queue state, logs) to the failure, computed only when it is needed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            detail = f"; {explain()}" if explain else ""
            raise AssertionError(f"condition not met within {within} s{detail}")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], Any], within: float = 10.0, what: str = "condition") -> None:
    """The blocking twin of `eventually`, for synchronous tests that have no event loop to yield to."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


# --- talking to our HTTP API ------------------------------------------------------------------


@dataclass
class Api:
    """Calls our HTTP API with a bearer token; bodies come back parsed as JSON when they are JSON.

    The identities most tests need ride along; they are keyword-only so that harnesses built
    on this class (the Teams rig, the audit client) can add fields of their own.
    """

    base: str
    http: aiohttp.ClientSession
    service: Any = field(default=None, kw_only=True)
    agent_token: str = field(default="", kw_only=True)
    approver_token: str = field(default="", kw_only=True)

    async def call(
        self, method: str, path: str, token: str | None = None, raw: bool = False, **kwargs: Any
    ) -> tuple[Any, ...]:
        """(status, body); with `raw`, (status, bytes, headers) for tests that check exact bytes and headers."""
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as resp:
            data = await resp.read()
            if raw:
                return resp.status, data, resp.headers
            try:
                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, data.decode(errors="replace")

    async def ask(self, token: str | None = None, **body: Any) -> tuple[Any, ...]:
        """Create an approval request as an agent (the action defaults to one the default policy gates)."""
        body.setdefault("action", "dataset.export")
        return await self.call("POST", "/v1/requests", token or self.agent_token, json=body)

    async def decide(
        self, request_id: str, token: str, decision: str = "approve", reason: str | None = None
    ) -> tuple[Any, ...]:
        payload = {"decision": decision, **({"reason": reason} if reason is not None else {})}
        return await self.call("POST", f"/v1/requests/{request_id}/decisions", token, json=payload)


async def approve_when_asked(
    api: Api, decision: str = "approve", reason: str | None = None, within: float = 10.0
) -> Any:
    """Act as the human: wait for the next pending request and decide it (as `api.approver_token`)."""
    pending = await eventually(
        lambda: api.service.redis.zrange("ab:pending", 0, 0), within, lambda: "no request arrived"
    )
    status, body = await api.decide(pending[0].decode(), api.approver_token, decision, reason)
    assert status == 200, body
    return await exact(api, body["id"])


async def exact(api: Api, request_id: str) -> Any:
    """The request as its agent reads it (exact values, the grant or receipt), as JSON.

    An approver's answers carry neither grant nor receipt (their claims name the exact resource),
    so a test that needs the agent's grant after deciding as a person reads it here."""
    request = await api.service.get(request_id)
    return request.model_dump(mode="json", exclude={"version"})


async def call_once(method: str, url: str, token: str | None = None, **kwargs: Any) -> tuple[Any, ...]:
    """One request to an absolute URL in its own session: for processes whose address a test only learns late."""
    async with aiohttp.ClientSession() as http:
        return await Api(base="", http=http).call(method, url, token, **kwargs)


# --- running RQ jobs in the test process -----------------------------------------------------


class BurstWorker(ThreadWorker):
    """An RQ worker for a test thread: jobs run in-process, no signal handlers, it exits when idle.

    It is `serve`'s thread worker, so it feeds the delivery queue from the fair lanes as `serve` does.
    """


def job_queues(base: Queue) -> list[Queue]:
    """The RQ queues behind a base queue named APPROVALBOT_QUEUE (delivery, callbacks)."""
    return list(queues_for(base.name, base.connection).values())


def queued(base: Queue) -> int:
    """Jobs waiting in every queue behind `base`, the fair delivery lanes included."""
    queues = queues_for(base.name, base.connection)
    return sum(q.count for q in queues.values()) + FairLanes(queues[DELIVERY_QUEUE]).waiting()


def scheduled_registries(base: Queue) -> list[ScheduledJobRegistry]:
    """Where RQ keeps the retries of every queue behind `base`."""
    return [q.scheduled_job_registry for q in job_queues(base)]


def work_burst(queue: Queue) -> None:
    """Run every job queued now in every queue behind `queue` (and any they enqueue) to completion, then return."""
    BurstWorker(job_queues(queue), connection=queue.connection).work(
        burst=True, logging_level="WARNING", with_scheduler=False
    )


async def drain(queue: Queue) -> None:
    """`work_burst` off the event loop, so the jobs can call back into servers running on it."""
    await asyncio.to_thread(work_burst, queue)
