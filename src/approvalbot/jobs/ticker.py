"""Time-driven work that must happen with no traffic: expiry, reminders, retries, dispatch.

Every worker runs a ticker; they may overlap safely, because expiry goes through
the same compare-and-set as any decision, timers are claimed with ZREM, and the
outbox and RQ's scheduler each take a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable

from rq import Queue
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.scripts import acquire_or_refresh_lock

from approvalbot.audit.checkpoints import maybe_checkpoint
from approvalbot.audit.signing import Signer
from approvalbot.core.events import EventType
from approvalbot.jobs.outbox import Outbox, Subscriber
from approvalbot.service import ApprovalService
from approvalbot.store import keys

log = logging.getLogger("approvalbot.ticker")

TIMER_EVENTS = {"remind": EventType.REMINDER_DUE, "escalate": EventType.ESCALATION_DUE}
# RQ's scheduler lock lives 61 s; a ticker refreshes it every tick, so a shorter life lets
# another worker's ticker take over retries soon after the holder is killed.
SCHEDULER_LOCK_SECONDS = 10


class Ticker:
    def __init__(
        self,
        service: ApprovalService,
        queue: Queue,
        subscribers: list[Subscriber],
        interval: float = 1.0,
        job_timeout: int = 30,
        signer: Signer | None = None,
        checkpoint_seconds: float = 300,
    ):
        self.service = service
        self.signer, self.checkpoint_seconds = signer, checkpoint_seconds
        self.queue = queue
        self.interval = interval
        self.outbox = Outbox(service.redis, queue, subscribers, job_timeout)
        self.queues = list(self.outbox.queues.values())  # `queue` names the base; work runs on these
        self.scheduler = RQScheduler(self.queues, connection=queue.connection)
        self.started = [StartedJobRegistry(queue=q) for q in self.queues]
        self._next_sweep = 0.0

    async def tick(self) -> None:
        now = self.service.clock()
        for request_id in await self.service.requests.due(keys.EXPIRY, now):
            await self.service.expire(request_id)
        for member in await self.service.requests.due(keys.TIMERS, now):
            if await self.service.requests.clear_timer(member):  # whoever removes it, fires it
                request_id, _, kind = member.partition("|")
                await self.service.timer_fired(request_id, TIMER_EVENTS[kind])
        try:  # one step of the one-time upgrade of pre-masking requests; never in the way of the rest
            await self.service.upgrade_stored()
        except Exception:
            log.exception("upgrading stored requests failed; retrying next tick")
        await self.service.forget_params()  # retention: a bounded batch of raw params past their time
        await asyncio.to_thread(self._rq_housekeeping)
        while await self.outbox.dispatch():
            pass
        await asyncio.to_thread(self.outbox.feed)  # lanes drain even when no new record arrived
        if self.signer is not None:
            await maybe_checkpoint(self.service.audit, self.signer, self.checkpoint_seconds)

    def _rq_housekeeping(self) -> None:
        """Move due retries back to the queue, and retry jobs whose worker died mid-job.

        RQ's own scheduler would fork a process, and its worker looks for abandoned
        jobs only every ten minutes; both are done here, cheaply, on every tick.
        """
        owned: set[str] = self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]  # unannotated in rq
        if owned:
            for name in owned:
                acquire_or_refresh_lock(
                    self.queue.connection,
                    self.scheduler.get_locking_key(name),
                    self.scheduler.name,
                    max(SCHEDULER_LOCK_SECONDS, math.ceil(3 * self.interval)),
                )
            self.scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]  # unannotated in rq
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 5
            for registry in self.started:
                registry.cleanup()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("tick failed; retrying next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
        with contextlib.suppress(Exception):
            self.scheduler.release_locks()  # type: ignore[no-untyped-call]  # unannotated in rq


# Builds the ticker on the thread's own event loop; returns it with the coroutine function that closes
# what it opened.
TickerFactory = Callable[[], Awaitable[tuple[Ticker, Callable[[], Awaitable[None]]]]]


class TickerThread(threading.Thread):
    """Runs a Ticker on its own event loop, so blocking RQ calls never stall the web server."""

    def __init__(self, make_ticker: TickerFactory):
        super().__init__(name="approvalbot-ticker", daemon=True)
        self._make_ticker = make_ticker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._started = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        ticker, cleanup = await self._make_ticker()
        self._started.set()
        try:
            await ticker.run(self._stop_event)
        finally:
            await cleanup()

    def stop(self, timeout: float = 10) -> None:
        self._started.wait(timeout)
        if self._loop and self._stop_event:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(timeout)
