"""Reading and sealing the audit log kept in Redis.

Records are appended by commit.lua together with the state change they describe.
Sealing then extends the hash chain over them; it is deterministic, so any process
may do it and racing sealers agree. Every write path seals before it answers, so
a record is chained by the time anyone has been told about it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from approvalbot.core.chain import GENESIS, chain
from approvalbot.store import codec, connections, keys
from approvalbot.store.replication import LostInFailover
from approvalbot.store.requests import Committed, SealHint, load_script

SEAL_BATCH = 2000
READ_BATCH = 5000


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    body: bytes
    hash: str | None
    prev_hash: str | None

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.body)
        record.update(seq=self.seq, hash=self.hash, prev_hash=self.prev_hash)
        return record


class AuditLog:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._seal_script = redis.register_script(load_script("seal.lua"))
        self._unsealed = redis.register_script(load_script("unsealed.lua"))
        self._lock = asyncio.Lock()
        self._sealed = 0  # chain length this process last saw (valid within one connection epoch)
        self._epoch = connections.epoch()

    async def length(self) -> int:
        return int(await self.redis.llen(keys.AUDIT_LOG))

    async def sealed(self) -> int:
        return int(await self.redis.llen(keys.AUDIT_CHAIN))

    async def head(self) -> tuple[int, str]:
        """The chain's length and last hash, read together so they always belong to each other."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.llen(keys.AUDIT_CHAIN)
        pipe.lindex(keys.AUDIT_CHAIN, -1)
        n, last = await pipe.execute()
        return (int(n), codec.text(last)) if n else (0, GENESIS)

    async def seal_committed(self, committed: Committed | None) -> int:
        """Seal what a commit appended, starting from the chain state it returned."""
        if committed is None:
            return self._sealed
        return await self.seal(committed.last_seq, committed.seal_hint)

    def _known_sealed(self) -> int:
        """The chain length this process saw, if still valid: a connection error or a change of
        primary since may mean a failover to a node whose chain is shorter (its last records lost)."""
        now = connections.epoch()
        if now != self._epoch:
            self._epoch, self._sealed = now, 0
        return self._sealed

    async def seal(self, upto: int | None = None, hint: SealHint | None = None) -> int:
        """Chain every record up to `upto` (default: all); returns the sealed length.

        Callers in one process queue on a lock; whoever holds it seals everything
        appended so far, so the others usually find their record already chained
        and return without a round trip. Raises LostInFailover when the log (on the
        primary serving now) ends before `upto`: the record was written on a primary
        that failed before replicating it.
        """
        if upto is not None and self._known_sealed() >= upto:
            return self._sealed
        async with self._lock:
            for _ in range(10_000):
                if upto is not None and self._known_sealed() >= upto:
                    return self._sealed
                epoch = connections.epoch()
                if hint is not None and hint.sealed >= self._sealed:
                    sealed, last, bodies, logged = hint.sealed, hint.last_hash, hint.bodies, None
                else:  # no hint, or one older than what this process already sealed
                    sealed, last, bodies, logged = await self._unsealed(
                        keys=[keys.AUDIT_CHAIN, keys.AUDIT_LOG], args=[SEAL_BATCH]
                    )
                    self._note(epoch, int(sealed))  # read fresh under the lock: the truth, even if shorter
                hint = None  # a hint is good for one attempt; a lost race re-reads
                if not bodies:
                    if upto is not None and logged is not None and int(logged) < upto:
                        raise LostInFailover(f"audit record {upto}")
                    if upto is None or self._sealed >= upto:
                        return self._sealed
                    continue
                prev = last.decode() if last else GENESIS
                hashes = list(chain(bodies, prev, first_seq=int(sealed) + 1))
                check = hashlib.sha1(bodies[-1], usedforsecurity=False).hexdigest()
                length = int(
                    await self._seal_script(keys=[keys.AUDIT_CHAIN, keys.AUDIT_LOG], args=[sealed, check, *hashes])
                )
                if length < 0:  # the log differs from what was hashed (a failover came between): re-read
                    continue
                self._note(epoch, length)
                if upto is None and len(bodies) < SEAL_BATCH and length == int(sealed) + len(bodies):
                    return self._sealed
            raise RuntimeError("audit sealing did not converge")

    def _note(self, epoch: int, length: int) -> None:
        """Remember the chain length a reply reported, unless the connection failed meanwhile."""
        if epoch == connections.epoch() == self._epoch:
            self._sealed = length
        else:
            self._known_sealed()

    async def records(self, start_seq: int = 1, end_seq: int | None = None) -> AsyncIterator[StoredRecord]:
        """Records in order, read in batches so an export of millions stays in bounded memory."""
        end = end_seq if end_seq is not None else await self.length()
        seq = start_seq
        while seq <= end:
            stop = min(seq + READ_BATCH - 1, end)
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(keys.AUDIT_LOG, seq - 1, stop - 1)
            pipe.lrange(keys.AUDIT_CHAIN, seq - 2 if seq > 1 else 0, stop - 1)
            bodies, hashes = await pipe.execute()
            if not bodies:
                return
            hashes = [h.decode() for h in hashes]
            offset = 1 if seq > 1 else 0
            for i, body in enumerate(bodies):
                current = seq + i
                h_index = i + offset
                record_hash = hashes[h_index] if h_index < len(hashes) else None
                prev: str | None
                if current == 1:
                    prev = GENESIS
                elif 0 <= h_index - 1 < len(hashes):
                    prev = hashes[h_index - 1]
                else:
                    prev = None
                yield StoredRecord(current, body, record_hash, prev)
            seq = stop + 1

    async def for_request(self, request_id: str) -> list[StoredRecord]:
        seqs = [int(s) for s in await self.redis.lrange(keys.request_audit(request_id), 0, -1)]
        out = []
        for seq in seqs:
            async for record in self.records(seq, seq):
                out.append(record)
        return out
