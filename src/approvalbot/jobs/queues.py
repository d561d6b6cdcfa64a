"""The RQ queues, one per kind of work, so slow work of one kind never delays another.

Chat delivery and agent callbacks run on separate queues derived from APPROVALBOT_QUEUE
(`<q>:delivery`, `<q>:callbacks`), each with its own workers: a callback endpoint that
hangs for its whole timeout holds a callbacks worker, never the one posting cards. Timers
(expiry, reminders, escalations) are not RQ jobs at all: the ticker fires them in its own
thread in every worker process, and the records they write reach chat through the
delivery queue like any other.
"""

from __future__ import annotations

import redis as sync_redis
from rq import Queue

from approvalbot.store import keys
from approvalbot.store.keys import CALLBACK_QUEUE, DELIVERY_QUEUE, QUEUE_KINDS

__all__ = ["CALLBACK_QUEUE", "DELIVERY_QUEUE", "QUEUE_KINDS", "parse_kinds", "queues_for"]


def queues_for(base: str, connection: sync_redis.Redis, kinds: tuple[str, ...] = QUEUE_KINDS) -> dict[str, Queue]:
    """kind -> the RQ queue for it, under the base name (APPROVALBOT_QUEUE)."""
    return {kind: Queue(keys.rq_queue(base, kind), connection=connection) for kind in kinds}


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """`--queues delivery,callbacks` -> the kinds, validated; empty or None means all."""
    if not text:
        return QUEUE_KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in QUEUE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown queue {', '.join(unknown) or text!r}; choose from {', '.join(QUEUE_KINDS)}")
    return kinds
