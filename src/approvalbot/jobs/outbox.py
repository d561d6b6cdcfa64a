"""Turns sealed audit records into RQ jobs: the audit log doubles as a transactional outbox.

Because records are written in the same Lua step as the state change, no event
can be lost between "decided" and "notify": a dispatcher that dies mid-batch is
replaced by the next one, which re-reads from the last saved cursor. Job ids are
derived from the record, so re-dispatching finds the job already there.

Each subscriber names its queue kind (jobs.queues): callbacks go straight to the
callbacks queue; chat delivery jobs go through the per-agent lanes of jobs.fair, which
feed the delivery queue round-robin, so one agent's flood cannot delay another's card.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from rq import Queue, Retry
from rq.job import Job

from approvalbot.core.events import EventType
from approvalbot.jobs import callbacks
from approvalbot.jobs.fair import OTHER_LANE, FairLanes
from approvalbot.jobs.lease import Lease
from approvalbot.jobs.queues import CALLBACK_QUEUE, DELIVERY_QUEUE, queues_for
from approvalbot.store import keys

log = logging.getLogger("approvalbot.outbox")
BATCH = 500


@dataclass(frozen=True)
class Subscriber:
    """One kind of follow-up work for some audit records."""

    name: str
    wants: Callable[[dict[str, Any]], bool]
    func: Callable[..., Any]
    args: Callable[[int, dict[str, Any]], tuple[object, ...]]
    job_id: Callable[[int, dict[str, Any]], str]
    retry: Retry | None = None
    at_front: bool = False
    queue: str = DELIVERY_QUEUE  # which RQ queue kind runs it (delivery jobs pass through the fair lanes)


def _final_with_callback(record: dict[str, Any]) -> bool:
    return EventType(record["type"]).final and bool(record.get("data", {}).get("callback"))


CALLBACKS = Subscriber(
    name="callback",
    wants=_final_with_callback,
    func=callbacks.deliver_callback,
    args=lambda seq, rec: (rec["request_id"],),
    job_id=lambda seq, rec: f"cb-{rec['request_id']}",
    retry=callbacks.RETRY,
    queue=CALLBACK_QUEUE,
)


# The same lease as delivery, held only for one batch (milliseconds): a short TTL lets the next
# dispatcher take over within seconds when a worker is killed mid-batch, so no card waits long.
OUTBOX_LEASE_MS = 10_000


class Outbox:
    """`base` is any Queue named APPROVALBOT_QUEUE: its name and connection give the per-kind queues."""

    def __init__(self, redis: Redis, base: Queue, subscribers: list[Subscriber], job_timeout: int = 30):
        self.redis = redis
        self.queues = queues_for(base.name, base.connection)
        self.lanes = FairLanes(self.queues[DELIVERY_QUEUE])
        self.subscribers = subscribers
        self.job_timeout = job_timeout  # short, so a job abandoned by a killed worker is retried soon
        self._lease = Lease(redis, keys.OUTBOX_LOCK, ms=OUTBOX_LEASE_MS)

    async def dispatch(self) -> int:
        """Enqueue work for sealed records past the cursor; returns how many records were read."""
        if not await self._lease.try_acquire():
            return 0
        try:
            cursor = int(await self.redis.get(keys.OUTBOX_CURSOR) or 0)
            sealed = int(await self.redis.llen(keys.AUDIT_CHAIN))
            end = min(sealed, cursor + BATCH)
            if end <= cursor:
                return 0
            bodies = await self.redis.lrange(keys.AUDIT_LOG, cursor, end - 1)
            records = [json.loads(body) for body in bodies]
            agents = self.lanes.agents_of([r["request_id"] for r in records if r.get("request_id")])
            for offset, record in enumerate(records):
                self._enqueue(cursor + offset + 1, record, agents.get(record.get("request_id") or "", OTHER_LANE))
            await self.redis.set(keys.OUTBOX_CURSOR, cursor + len(bodies))
            self.lanes.feed()
            return len(bodies)
        finally:
            # Atomic: only our own lease is released (a slow batch may have lost it to another dispatcher).
            await self._lease.release()

    def feed(self) -> int:
        """Let waiting delivery jobs into the delivery queue (see jobs.fair)."""
        return self.lanes.feed()

    def _enqueue(self, seq: int, record: dict[str, Any], lane: str) -> None:
        for sub in self.subscribers:
            if not sub.wants(record):
                continue
            job_id = sub.job_id(seq, record)
            queue = self.queues[sub.queue]
            if Job.exists(job_id, connection=queue.connection):
                continue
            job = queue.create_job(
                sub.func,
                args=sub.args(seq, record),
                job_id=job_id,
                retry=sub.retry,
                timeout=self.job_timeout,
                result_ttl=24 * 3600,
                failure_ttl=7 * 24 * 3600,
            )
            if sub.queue == DELIVERY_QUEUE:
                self.lanes.add(lane, job)
            else:
                queue.enqueue_job(job, at_front=sub.at_front)
