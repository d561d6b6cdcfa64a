"""Time-driven work that must happen with no traffic: expiry, reminders, retries, dispatch.

Every worker runs a ticker; they may overlap safely, because expiry goes through
the same compare-and-set as any decision, timers are claimed with ZREM, and the
outbox and RQ's scheduler each take a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from rq import Queue
from rq.scheduler import RQScheduler

from approvalbot.core.events import EventType
from approvalbot.jobs.outbox import Outbox, Subscriber
from approvalbot.service import ApprovalService
from approvalbot.store import keys

log = logging.getLogger("approvalbot.ticker")

TIMER_EVENTS = {"remind": EventType.REMINDER_DUE, "escalate": EventType.ESCALATION_DUE}


class Ticker:
    def __init__(self, service: ApprovalService, queue: Queue, subscribers: list[Subscriber],
                 interval: float = 1.0):
        self.service = service
        self.queue = queue
        self.interval = interval
        self.outbox = Outbox(service.redis, queue, subscribers)
        self.scheduler = RQScheduler([queue], connection=queue.connection)

    async def tick(self) -> None:
        now = self.service.clock()
        for request_id in await self.service.requests.due(keys.EXPIRY, now):
            await self.service.expire(request_id)
        for member in await self.service.requests.due(keys.TIMERS, now):
            if await self.service.requests.clear_timer(member):  # whoever removes it, fires it
                request_id, _, kind = member.partition("|")
                await self.service.timer_fired(request_id, TIMER_EVENTS[kind])
        await asyncio.to_thread(self._promote_scheduled_jobs)
        while await self.outbox.dispatch():
            pass

    def _promote_scheduled_jobs(self) -> None:
        """RQ retries with intervals wait in a registry until a scheduler moves them back."""
        if self.scheduler.acquire_locks():
            self.scheduler.enqueue_scheduled_jobs()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("tick failed; retrying next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
        with contextlib.suppress(Exception):
            self.scheduler.release_locks()


class TickerThread(threading.Thread):
    """Runs a Ticker on its own event loop, so blocking RQ calls never stall the web server."""

    def __init__(self, make_ticker):
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
