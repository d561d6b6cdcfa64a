"""The worker process: an RQ worker for delivery jobs plus the ticker.

Jobs run in-process (SimpleWorker): they are short network calls, and starting a
fresh interpreter per job would cost more than the job itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.timeouts import TimerDeathPenalty

from approvalbot.jobs.outbox import Subscriber
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


def make_worker(rt: Runtime, cls: type[W]) -> W:
    connection = rt.sync_redis()
    return cls([Queue(rt.settings.queue_name, connection=connection)], connection=connection)


def run_worker(rt: Runtime, subscribers: list[Subscriber], burst: bool = False) -> None:
    """`approvalbot worker`: blocks until SIGINT/SIGTERM (warm shutdown)."""
    ticker = ticker_thread(rt, subscribers)
    ticker.start()
    try:
        make_worker(rt, Worker).work(burst=burst, logging_level="WARNING")
    finally:
        ticker.stop()


def start_worker_thread(
    rt: Runtime, subscribers: list[Subscriber]
) -> tuple[threading.Thread, ThreadWorker, TickerThread]:
    worker = make_worker(rt, ThreadWorker)
    thread = threading.Thread(
        target=worker.work, kwargs={"logging_level": "WARNING"}, name="approvalbot-worker", daemon=True
    )
    thread.start()
    ticker = ticker_thread(rt, subscribers)
    ticker.start()
    return thread, worker, ticker
