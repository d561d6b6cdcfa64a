"""The worker process: RQ workers for the delivery and callbacks queues, plus the ticker.

Jobs run in-process (SimpleWorker): they are short network calls, and starting a
fresh interpreter per job would cost more than the job itself. Each queue kind gets
its own worker (`approvalbot worker --queues delivery` in its own process, or one thread
per kind in `approvalbot serve`), so a callback that hangs never holds up a card.
A worker on the delivery queue feeds it from the fair lanes before taking each job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.timeouts import TimerDeathPenalty

from approvalbot.jobs.fair import FairLanes
from approvalbot.jobs.outbox import Subscriber
from approvalbot.jobs.queues import DELIVERY_QUEUE, QUEUE_KINDS, queues_for
from approvalbot.jobs.ticker import Ticker, TickerThread
from approvalbot.runtime import Runtime

log = logging.getLogger("approvalbot.worker")


def ticker_thread(rt: Runtime, subscribers: list[Subscriber]) -> TickerThread:
    """The ticker, dispatching the outbox to `subscribers` (given by the composition root)."""

    async def make() -> tuple[Ticker, Callable[[], Awaitable[None]]]:
        redis = rt.async_redis()
        queue = Queue(rt.settings.queue_name, connection=rt.sync_redis())
        ticker = Ticker(
            rt.service(redis),
            queue,
            subscribers,
            rt.settings.tick_seconds,
            rt.settings.job_timeout,
            signer=rt.signer(),
            checkpoint_seconds=rt.settings.checkpoint_seconds,
        )

        async def cleanup() -> None:
            await redis.aclose()

        return ticker, cleanup

    return TickerThread(make)


class Worker(SimpleWorker):
    def __init__(self, queues: list[Queue], *args: Any, **kwargs: Any):
        super().__init__(queues, *args, **kwargs)
        delivery = [q for q in queues if q.name.endswith(":" + DELIVERY_QUEUE)]
        self.lanes = FairLanes(delivery[0]) if delivery else None

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Top the delivery queue up from the fair lanes first, so throughput is not bound to the tick."""
        if self.lanes is not None:
            try:
                self.lanes.feed()
            except Exception:  # Redis away: RQ's own dequeue below reports and retries it
                log.debug("feeding the delivery queue failed", exc_info=True)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """A job's lease outlives its timeout by seconds, not RQ's minute, so the
        ticker retries the job of a killed worker soon after its timeout."""
        return int(job.timeout or 30) + 10


class ThreadWorker(Worker):
    """An RQ worker that can live off the main thread (for `approvalbot serve`)."""

    death_penalty_class = TimerDeathPenalty

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Wait for a job in one-second slices, so stop_soon() is noticed while idle."""
        if timeout is None:  # burst mode: one non-blocking look, as RQ does
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
            if result is not None:
                return result
        raise StopRequested()

    def _install_signal_handlers(self) -> None:
        pass  # the main thread owns signals and calls stop_soon()

    def stop_soon(self) -> None:
        """Warm shutdown from another thread: finish the current job, then leave the loop.

        RQ's request_stop() is written for a signal handler in the worker's own
        thread (it raises when idle), so set the flag its loop checks instead.
        """
        self._stop_requested = True


W = TypeVar("W", bound=Worker)


def make_worker(rt: Runtime, cls: type[W], kinds: tuple[str, ...] = QUEUE_KINDS) -> W:
    connection = rt.sync_redis()
    queues = queues_for(rt.settings.queue_name, connection, kinds)
    return cls(list(queues.values()), connection=connection)


def run_worker(
    rt: Runtime, subscribers: list[Subscriber], burst: bool = False, kinds: tuple[str, ...] = QUEUE_KINDS
) -> None:
    """`approvalbot worker [--queues …]`: blocks until SIGINT/SIGTERM (warm shutdown).

    Listening on several kinds in one process is allowed (RQ takes from them in order),
    but isolation needs one process per kind: the Procfile runs them that way.
    """
    ticker = ticker_thread(rt, subscribers)
    ticker.start()
    try:
        make_worker(rt, Worker, kinds).work(burst=burst, logging_level="WARNING")
    finally:
        ticker.stop()


@dataclass
class WorkerThreads:
    """`serve`'s workers: one thread per queue kind, and the ticker."""

    threads: list[threading.Thread]
    workers: list[ThreadWorker]
    ticker: TickerThread

    def stop(self, timeout: float = 30) -> None:
        for worker in self.workers:
            worker.stop_soon()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self.ticker.stop()


def start_worker_threads(
    rt: Runtime, subscribers: list[Subscriber], kinds: tuple[str, ...] = QUEUE_KINDS
) -> WorkerThreads:
    workers = [make_worker(rt, ThreadWorker, (kind,)) for kind in kinds]
    threads = [
        threading.Thread(
            target=worker.work,
            kwargs={"logging_level": "WARNING"},
            name=f"approvalbot-worker-{kind}",
            daemon=True,
        )
        for kind, worker in zip(kinds, workers, strict=True)
    ]
    for thread in threads:
        thread.start()
    ticker = ticker_thread(rt, subscribers)
    ticker.start()
    return WorkerThreads(threads, workers, ticker)
