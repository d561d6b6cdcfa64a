"""Acknowledged means replicated: WAIT for replicas before the API or a chat answers.

With `APPROVALBOT_MIN_REPLICAS=N` every state change ends with a barrier: a tiny write and
`WAIT N timeout` on the same connection. WAIT waits until N replicas have acknowledged the
replication offset of that connection's last write; the offset is global to the primary, so
the barrier covers every write made before it by any connection (the commit, its audit
records and their seal). WAIT on a connection that never wrote returns at once, which is why
the barrier writes first instead of waiting on an arbitrary pooled connection.

A setting for the whole process (configured once by the runtime): every store follows the
deployment's durability, so none can forget to pass it along.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from approvalbot.store import keys


@dataclass(frozen=True)
class Durability:
    replicas: int = 0
    timeout_ms: int = 500


_current = Durability()


def configure(replicas: int, timeout_ms: int) -> None:
    global _current
    _current = Durability(replicas, timeout_ms)


def current() -> Durability:
    return _current


class NotReplicated(Exception):
    """Fewer replicas than required confirmed a change in time: answer 503, the client retries.

    The change may still be on the primary (and may reach the replicas later): a retry with the
    same idempotency key finds it and confirms again, instead of applying it twice.
    """

    retry_after = 1

    def __init__(self, confirmed: int, wanted: int):
        super().__init__(f"only {confirmed} of {wanted} Redis replicas confirmed the change in time")
        self.confirmed, self.wanted = confirmed, wanted


async def confirm(redis: Redis) -> int:
    """Block until the required replicas hold every write made so far; raises NotReplicated."""
    want = _current
    if want.replicas <= 0:
        return 0
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.REPLICATION_BARRIER, "1")
    pipe.wait(want.replicas, want.timeout_ms)
    _, confirmed = await pipe.execute()
    if int(confirmed) < want.replicas:
        raise NotReplicated(int(confirmed), want.replicas)
    return int(confirmed)
