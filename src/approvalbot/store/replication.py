"""Acknowledged means replicated: WAIT for replicas before the API or a chat answers.

With `APPROVALBOT_MIN_REPLICAS=N` every state change ends with a barrier: a tiny write and
`WAIT N timeout` on the same connection. WAIT waits until N replicas have acknowledged the
replication offset of that connection's last write; the offset is global to the primary, so
the barrier covers every write made before it by any connection (the commit, its audit
records and their seal). WAIT on a connection that never wrote returns at once, which is why
the barrier writes first instead of waiting on an arbitrary pooled connection.

A barrier retried after a failover runs on the new primary, where WAIT covers only what that
node holds: a change written on the old primary just before it died would be "confirmed"
without being anywhere. So the barrier carries a proof of the change (its last audit record,
or a key it wrote), checked on the same connection just before the barrier write: if the node
lacks it, the change is gone and the caller is told to retry (`LostInFailover`, a 503 too).

A setting for the whole process (configured once by the runtime): every store follows the
deployment's durability, so none can forget to pass it along.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from approvalbot.store import codec, keys


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


class LostInFailover(NotReplicated):
    """The change was written on a primary that failed before replicating it: the node serving
    now does not have it. Nothing was applied as far as anyone can see; retry (503)."""

    def __init__(self, what: str):
        Exception.__init__(self, f"{what} was lost in a Redis failover before it was replicated; retry")
        self.confirmed, self.wanted = 0, _current.replicas


@dataclass(frozen=True)
class Proof:
    """What a change wrote, checkable on whichever node answers: audit record `seq` has exactly
    `body`; or hash `key` has `field` equal to `body`; or (for a read-only replay) `key` exists."""

    seq: int = 0
    body: str | bytes = b""
    key: str = ""
    field: str = ""

    @classmethod
    def record(cls, seq: int, body: str | bytes) -> Proof:
        return cls(seq=seq, body=body)

    @classmethod
    def exists(cls, key: str) -> Proof:
        return cls(key=key)

    @classmethod
    def hash_field(cls, key: str, field: str, value: str | bytes) -> Proof:
        return cls(key=key, field=field, body=value)

    def read(self, pipe: Pipeline) -> bool:
        """Queue the read that checks this proof; False when there is nothing to check."""
        if self.seq > 0:
            pipe.lindex(keys.AUDIT_LOG, self.seq - 1)
        elif self.key and self.field:
            pipe.hget(self.key, self.field)
        elif self.key:
            pipe.exists(self.key)
        else:
            return False
        return True

    def holds(self, found: Any) -> bool:
        if self.seq > 0 or self.field:
            return found is not None and codec.blob(found) == codec.blob(self.body)
        return bool(found)

    def describe(self) -> str:
        return f"the change (audit record {self.seq})" if self.seq > 0 else "the change"


async def confirm(redis: Redis, proof: Proof | None = None) -> int:
    """Block until the required replicas hold every write made so far; raises NotReplicated,
    or LostInFailover when the node that answers does not hold `proof` (a failover came between)."""
    want = _current
    if want.replicas <= 0:
        return 0
    # One pipeline, so one connection to one node: the proof read there, then the barrier, then WAIT.
    # A retry after a connection error resends all three to whichever node is the primary then.
    pipe = redis.pipeline(transaction=False)
    checked = proof is not None and proof.read(pipe)
    pipe.set(keys.REPLICATION_BARRIER, "1")
    pipe.wait(want.replicas, want.timeout_ms)
    replies = await pipe.execute()
    confirmed = int(replies[-1])
    if checked and proof is not None and not proof.holds(replies[0]):
        raise LostInFailover(proof.describe())
    if confirmed < want.replicas:
        raise NotReplicated(confirmed, want.replicas)
    return confirmed
