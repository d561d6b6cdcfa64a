"""Requests in Redis: documents with a version, indexes for queues and timers, and the audit append.

A transition is written by one Lua script (commit.lua) that checks the version it
was computed from, so two racing deciders can never both win, and the audit
records of the change are appended in the same step, so neither can exist alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from approvalbot.core.chain import canonical
from approvalbot.core.errors import QuotaExceeded
from approvalbot.core.events import Event
from approvalbot.core.ids import Cursor
from approvalbot.core.machine import Transition
from approvalbot.core.models import ApprovalRequest, Status
from approvalbot.core.rules import pending_targets_of
from approvalbot.store import codec, keys
from approvalbot.store.replication import Proof

IDEMPOTENCY_TTL = 7 * 24 * 3600
GRANT_INDEX_SLACK = 3600  # seconds past expiry a grant stays in its agent's index
QUOTA_NOTICE_SECONDS = 60  # one audit record per agent and refusal code per minute of refusals


@dataclass(frozen=True)
class Quota:
    """Per-agent limits on new requests, checked inside the commit script (no extra round trip).

    `max_pending` 0 means no limit on pending requests; `rate` 0 means no rate limit. The rate is a
    token bucket: `rate` creations per second sustained, `burst` at once after a quiet spell.
    """

    max_pending: int = 0
    rate: float = 0.0
    burst: int = 1

    @property
    def active(self) -> bool:
        return self.max_pending > 0 or self.rate > 0


def load_script(name: str) -> str:
    return resources.files("approvalbot.store").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class SealHint:
    """The chain's state as the commit saw it: enough to seal without reading again."""

    sealed: int
    last_hash: bytes
    bodies: list[bytes]


@dataclass(frozen=True)
class Committed:
    request: ApprovalRequest
    last_seq: int  # the sequence number of its last audit record (0: none)
    seal_hint: SealHint | None = None
    last_body: str = ""  # that record's body: proof that a node holds this commit (replication.Proof)

    @property
    def proof(self) -> Proof | None:
        return Proof.record(self.last_seq, self.last_body) if self.last_seq and self.last_body else None


class Conflict(Exception):
    """The request changed since it was read; re-read and recompute."""


class PeopleChanged(Exception):
    """People changed since the new request's persons were resolved; resolve them again."""


@dataclass
class Duplicate(Exception):
    """An idempotency key already names a request."""

    request_id: str
    fingerprint: str


_nonce_prefix = secrets.token_hex(8)  # this process's; commit attempts count up from it
_nonce_counter = itertools.count()


def _new_nonce_prefix() -> None:
    global _nonce_prefix
    _nonce_prefix = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_nonce_prefix)  # a forked child must not repeat its parent's


def _nonce() -> str:
    """Unique per commit attempt across processes (a random prefix and a counter), without a
    system call per commit; only its uniqueness matters (commit.lua compares it for equality)."""
    return f"{_nonce_prefix}{next(_nonce_counter):x}"


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def audit_body(event: Event) -> str:
    return canonical(event.model_dump(mode="json", exclude_none=True)).decode()


@dataclass
class _Plan:
    """Builds the KEYS list and the JSON plan commit.lua executes."""

    keys: list[str]
    ops: dict[str, Any] = field(default_factory=dict)

    def key(self, name: str) -> int:
        if name not in self.keys:
            self.keys.append(name)
        return self.keys.index(name) + 1  # Lua is 1-based

    def add(self, op: str, *args: Any) -> None:
        self.ops.setdefault(op, []).append(list(args))


class RequestStore:
    """Requests in Redis. `upgrade` is applied to every request read (the service passes one that
    fills in the masked view of a request stored before masking existed); it must be pure."""

    def __init__(self, redis: Redis, upgrade: Callable[[ApprovalRequest], ApprovalRequest] | None = None):
        self.redis = redis
        self._commit = redis.register_script(load_script("commit.lua"))
        self._upgrade = upgrade

    def _load(self, doc: bytes | str) -> ApprovalRequest:
        request = ApprovalRequest.model_validate_json(doc)
        return self._upgrade(request) if self._upgrade is not None else request

    async def get(self, request_id: str) -> ApprovalRequest | None:
        doc = await self.redis.hget(keys.request(request_id), "doc")
        return self._load(doc) if doc else None

    async def get_many(self, request_ids: list[str]) -> list[ApprovalRequest | None]:
        """Aligned with `request_ids`; None where a request does not exist."""
        if not request_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for rid in request_ids:
            pipe.hget(keys.request(rid), "doc")
        docs = await pipe.execute()
        return [self._load(d) if d else None for d in docs]

    async def commit(
        self,
        transition: Transition,
        expected_version: int,
        previous_status: Status | None,
        idempotency: tuple[str, str] | None = None,
        quota: Quota | None = None,
        people_version: str | None = None,
    ) -> Committed:
        """Write a transition computed from `expected_version`; raise Conflict if it moved on.

        With `quota` (new requests only), the agent's limits are checked in the same script, after
        the idempotency check, and QuotaExceeded is raised instead of writing anything. With
        `people_version`, the version the request's persons were resolved at, PeopleChanged is
        raised instead of writing anything when people have changed since.
        """
        request = transition.request.model_copy(update={"version": expected_version + 1})
        plan = _Plan(
            keys=[
                keys.request(request.id),
                keys.AUDIT_LOG,
                keys.request_audit(request.id),
                idempotency[0] if idempotency else keys.NO_KEY,
                keys.AUDIT_CHAIN,
            ]
        )
        if idempotency:
            plan.ops["idem"] = [f"{idempotency[1]}|{request.id}", IDEMPOTENCY_TTL]
        if people_version is not None:
            plan.ops["people"] = [plan.key(keys.PEOPLE_VERSION), people_version]
        self._index(plan, request, previous_status)
        if quota is not None and quota.active and previous_status is None:
            self._quota(plan, request, quota)
        bodies = [audit_body(e) for e in transition.events]
        plan.ops["audit"] = bodies
        if request.status.final and previous_status is not request.status:
            plan.add("publish", keys.CHANGED_CHANNEL, request.id)  # wakes long-polls waiting for this
        result = await self._commit(
            keys=plan.keys,
            # The nonce travels with every resend of this call (redis-py retries after a connection
            # error), so commit.lua can tell its own applied write from a rival's: see docs/redis.md.
            args=[expected_version, request.model_dump_json(), json.dumps(plan.ops), _nonce()],
        )
        outcome = result[0].decode()
        if outcome == "conflict":
            raise Conflict(request.id)
        if outcome == "duplicate":
            fingerprint, _, existing = result[1].decode().partition("|")
            raise Duplicate(existing, fingerprint)
        if outcome == "people_changed":
            raise PeopleChanged(request.id)
        if outcome == "refused":
            raise QuotaExceeded(result[1].decode(), int(result[2]), first=bool(result[3]))
        hint = result[3] if len(result) > 3 and result[3] else None
        seal_hint = SealHint(int(hint[0]), hint[1], hint[2]) if hint else None
        return Committed(request, int(result[2]), seal_hint, bodies[-1] if bodies else "")

    @staticmethod
    def _quota(plan: _Plan, request: ApprovalRequest, quota: Quota) -> None:
        """The pending limit applies only to a request that will be pending (an allow or deny
        settles it at once); the rate applies to every creation."""
        agent = request.agent_id
        plan.ops["quota"] = {
            "pending": plan.key(keys.agent_pending(agent)),
            "max": quota.max_pending if request.status is Status.PENDING else 0,
            "bucket": plan.key(keys.agent_rate(agent)),
            "rate": quota.rate,
            "burst": quota.burst,
            "notice": [
                plan.key(keys.quota_notice(agent, "quota_exceeded")),
                plan.key(keys.quota_notice(agent, "rate_limited")),
            ],
            "window": QUOTA_NOTICE_SECONDS,
            "stats": plan.key(keys.STATS),
        }

    def _index(self, plan: _Plan, request: ApprovalRequest, previous: Status | None) -> None:
        """Keep queue, timer and counter indexes in step with the status change."""
        if previous is request.status:
            return
        plan.add("hincr", plan.key(keys.STATS), f"status:{request.status}", 1)
        if previous is not None:
            plan.add("hincr", plan.key(keys.STATS), f"status:{previous}", -1)
        created = ms(request.created_at)
        queues = [keys.PENDING, *(keys.pending_for(t) for t in pending_targets_of(request))]
        if request.status is Status.PENDING:
            for queue in queues:
                plan.add("zadd", plan.key(queue), created, request.id)
            plan.add("zadd", plan.key(keys.EXPIRY), ms(request.expires_at), request.id)
            plan.add("zadd", plan.key(keys.agent_pending(request.agent_id)), ms(request.expires_at), request.id)
            for kind, after in (
                ("remind", request.policy.remind_after),
                ("escalate", request.policy.escalate_after),
            ):
                if after:
                    plan.add("zadd", plan.key(keys.TIMERS), created + after * 1000, f"{request.id}|{kind}")
            return
        if previous is Status.PENDING:
            for queue in queues:
                plan.add("zrem", plan.key(queue), request.id)
            plan.add("zrem", plan.key(keys.EXPIRY), request.id)
            plan.add("zrem", plan.key(keys.agent_pending(request.agent_id)), request.id)
            for kind in ("remind", "escalate"):
                plan.add("zrem", plan.key(keys.TIMERS), f"{request.id}|{kind}")
        if request.status is Status.APPROVED and request.grant and request.decided_at:
            self._index_grant(plan, request, request.decided_at)
        if request.decided_at:
            plan.add("zadd", plan.key(keys.FINAL), ms(request.decided_at), request.id)
            latency = (request.decided_at - request.created_at).total_seconds()
            plan.add("hincr", plan.key(keys.STATS), f"decided:{request.status}", 1)
            plan.add("hincr", plan.key(keys.STATS), f"latency_ms:{request.status}", int(latency * 1000))
            for bound in LATENCY_BUCKETS:
                if latency <= bound:
                    plan.add("hincr", plan.key(keys.STATS), f"latency_le:{bound}", 1)

    @staticmethod
    def _index_grant(plan: _Plan, request: ApprovalRequest, decided: datetime) -> None:
        """File the grant under its agent, by expiry (the grant's own `exp`), so revoking the agent
        finds its unexpired grants; entries expired an hour ago are dropped in the same step."""
        issued = int(decided.timestamp())
        index = plan.key(keys.agent_grants(request.agent_id))
        plan.add("zadd", index, issued + request.policy.grant_ttl, request.id)
        plan.add("zremrangebyscore", index, "-inf", issued - GRANT_INDEX_SLACK)

    async def record(self, request: ApprovalRequest, events: list[Event]) -> Committed | None:
        """Append audit events that change no state (e.g. a blocked self-approval)."""
        for _ in range(100):
            fresh = await self.get(request.id)
            if fresh is None:
                return None
            try:
                return await self.commit(Transition(fresh, events), fresh.version, fresh.status)
            except Conflict:
                continue
        raise Conflict(request.id)

    async def pending_page(self, targets: list[str], after: Cursor | None, limit: int) -> list[Cursor]:
        """Oldest-first (score, id) pairs across the queues of the given targets."""
        pipe = self.redis.pipeline(transaction=False)
        for target in targets:
            # Same-millisecond ties are resolved below, so fetch the boundary score inclusively.
            pipe.zrange(
                keys.pending_for(target),
                after[0] if after else "-inf",
                "+inf",
                byscore=True,
                offset=0,
                num=limit + 1 + (limit if after else 0),
                withscores=True,
            )
        seen: dict[str, int] = {}
        for rows in await pipe.execute():
            for member, score in rows:
                seen[member.decode()] = int(score)
        ordered = sorted((score, rid) for rid, score in seen.items())
        if after:
            ordered = [row for row in ordered if row > after]
        return ordered[: limit + 1]

    async def due(self, index: str, now: datetime, limit: int = 500) -> list[str]:
        rows = await self.redis.zrange(index, "-inf", ms(now), byscore=True, offset=0, num=limit)
        return [codec.member(r) for r in rows]

    async def index_final(self, request: ApprovalRequest) -> bool:
        """File a final request in the retention index if it is not there (requests that became
        final before the index existed); True when it was added."""
        if not request.status.final or request.decided_at is None or request.params_deleted:
            return False
        return bool(await self.redis.zadd(keys.FINAL, {request.id: ms(request.decided_at)}, nx=True))

    async def unindex_final(self, request_id: str) -> None:
        """Retention is done with this request (its raw values are gone, or it has none)."""
        await self.redis.zrem(keys.FINAL, request_id)

    async def clear_timer(self, member: str) -> bool:
        return bool(await self.redis.zrem(keys.TIMERS, member))

    async def find_idempotent(self, agent_id: str, key: str) -> tuple[str, str] | None:
        raw = await self.redis.get(keys.idempotency(agent_id, digest(key)))
        if not raw:
            return None
        fingerprint, _, request_id = codec.text(raw).partition("|")
        return fingerprint, request_id

    async def audit_seqs(self, request_id: str) -> list[int]:
        return [int(x) for x in await self.redis.lrange(keys.request_audit(request_id), 0, -1)]


LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 14400, 86400)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
