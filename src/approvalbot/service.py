"""The approval service: what every adapter (HTTP, Slack, Teams, jobs, CLI) calls.

It reads a request, asks the pure state machine for the transition, and commits
it with compare-and-set, retrying on a lost race. Adapters never change state in
any other way, which is what makes "exactly one outcome" hold for all of them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from approvalbot.audit import grants
from approvalbot.core import machine, masking
from approvalbot.core.errors import DomainError, IdempotencyMismatch, NotFound, QuotaExceeded, Refused
from approvalbot.core.events import Event, EventType, event_about_people, event_for
from approvalbot.core.ids import Cursor, new_request_id
from approvalbot.core.machine import SYSTEM, Transition
from approvalbot.core.models import (
    Actor,
    Agent,
    ApprovalRequest,
    Approver,
    Channel,
    ChatIdentity,
    Person,
    RequestCreate,
    Status,
)
from approvalbot.core.policy import Policy
from approvalbot.core.rules import may_decide, pending_targets, reveal_refusal
from approvalbot.store import codec, keys, replication
from approvalbot.store.audit import AuditLog
from approvalbot.store.identities import IdentityStore
from approvalbot.store.people import ADMIN, RequesterCache, Requesters
from approvalbot.store.requests import Conflict, Duplicate, PeopleChanged, Quota, RequestStore, digest

__all__ = [
    "ApprovalService",
    "IdempotencyMismatch",
    "NotFound",
    "Revocation",
    "fingerprint",
    "human_actor",
    "new_request_id",
]

MAX_RACE_RETRIES = 50
Step = Callable[[ApprovalRequest, datetime], Transition]


@dataclass(frozen=True)
class Revocation:
    """What revoking an agent did: the requests it cancelled and the grants (ids) it revoked."""

    agent: Agent
    cancelled: list[str]
    grants: list[str]


def fingerprint(body: RequestCreate) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()[:32]


class ApprovalService:
    def __init__(
        self,
        redis: Redis,
        policy: Policy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quota: Quota | None = None,
        masking_key: bytes | None = None,
        params_retention: int | None = None,
    ):
        self.redis = redis
        self.policy = policy
        self.clock = clock
        self.quota = quota  # per-agent limits on new requests (None: none)
        # The fingerprint key of masks (keyfiles.masking_key). Without one, a key for this process only:
        # masks are then still masks, but fingerprints differ between processes.
        self._masking_key = masking_key or secrets.token_bytes(32)
        self.params_retention = params_retention  # seconds after a final decision; None: kept
        # Every read fills in the masked view of a request stored before masking existed, so no path
        # through the service shows (or records) such a request's raw values.
        self.requests = RequestStore(redis, upgrade=self.with_masks)
        self._stored = RequestStore(redis)  # the same store, read as stored (for the upgrade)
        self._upgraded = False  # the one-time upgrade of stored requests is done (seen by this process)
        self.audit = AuditLog(redis)
        self.identities = IdentityStore(redis, self.audit)
        self.people = self.identities.people
        self._requester_cache = RequesterCache()
        self.on_final: list[Callable[[ApprovalRequest], ApprovalRequest]] = []

    async def create(
        self, agent: Agent, body: RequestCreate, idempotency_key: str | None = None
    ) -> tuple[ApprovalRequest, bool]:
        """Returns the request and whether it was created now (False: idempotent replay)."""
        idem = None
        sent_print = ""
        if idempotency_key is not None:
            sent_print = fingerprint(body)
            idem = (keys.idempotency(agent.id, digest(idempotency_key)), sent_print)
            found = await self.requests.find_idempotent(agent.id, idempotency_key)
            if found:
                return await self._replay(found[1], found[0], sent_print), False
        applied = self.policy.evaluate(body.action, body.resource, agent.name, body.params)
        requesters = await self._requesters(agent, body)
        masked = masking.masked_view(
            params=body.params,
            context=body.context,
            justification=body.justification,
            resource=body.resource,
            policy=applied,
            key=self._masking_key,
        )
        request_id = new_request_id()
        for _ in range(MAX_RACE_RETRIES):
            transition = machine.create(request_id, body, agent, applied, self.clock(), list(requesters.ids), masked)
            transition = self._finish(transition)
            try:
                done = await self.requests.commit(
                    transition, 0, None, idem, self.quota, people_version=requesters.version
                )
            except PeopleChanged:  # resolved from a memory that people changes have made stale
                self._requester_cache.clear()
                requesters = await self._requesters(agent, body, fresh=True)
                continue
            except Duplicate as dup:
                return await self._replay(dup.request_id, dup.fingerprint, sent_print), False
            except QuotaExceeded as refused:
                if refused.first:
                    await self._quota_refused(agent, body, refused)
                raise
            break
        else:
            raise Conflict(request_id)
        await self.audit.seal_committed(done)
        await replication.confirm(self.redis, done.proof)
        return done.request, True

    async def _quota_refused(self, agent: Agent, body: RequestCreate, refused: QuotaExceeded) -> None:
        """Audit the first refusal of a burst (the commit script lets one through per agent, code and window)."""
        quota = self.quota or Quota()
        limit = (
            f"{quota.max_pending} pending"
            if refused.code == "quota_exceeded"
            else f"{quota.rate:g}/s, burst {quota.burst}"
        )
        actor = Actor(kind="agent", id=agent.id, email=agent.owner, person_id=agent.owner_id)
        event = event_about_people(
            EventType.QUOTA_EXCEEDED,
            actor,
            self.clock(),
            code=refused.code,
            agent_id=agent.id,
            agent_name=agent.name,
            action=body.action,
            limit=limit,
        )
        await self.people.write_audited(self.redis.pipeline(transaction=True), event, changes_people=False)

    async def requester_ids(self, agent: Agent, body: RequestCreate) -> list[str]:
        """The persons behind a new request: the agent's owner, and whoever it acts for (an alias
        names its person). Addresses that name nobody stay addresses; the rules check those too."""
        return list((await self._requesters(agent, body, fresh=True)).ids)

    async def _requesters(self, agent: Agent, body: RequestCreate, fresh: bool = False) -> Requesters:
        """`requester_ids` with the people version they were read at, remembered per process unless
        `fresh`; a remembered answer is only ever used through a commit that checks its version."""
        key = (agent.owner_id or "", agent.owner, body.on_behalf_of or "")
        if not fresh:
            known = self._requester_cache.get(key)
            if known is not None:
                return known
        version = await self.people.version()  # before the lookups: a change after it fails the commit
        found = Requesters(version, tuple(await self._resolve_requesters(agent, body)))
        self._requester_cache.put(key, found)
        return found

    async def _resolve_requesters(self, agent: Agent, body: RequestCreate) -> list[str]:
        found: list[str] = []
        owner = await self.people.get(agent.owner_id) if agent.owner_id else None
        owner = owner or await self.people.by_email(agent.owner)
        if owner is not None:
            found.append(owner.id)
        if body.on_behalf_of:
            behalf = await self.people.by_email(body.on_behalf_of)
            if behalf is not None:
                found.append(behalf.id)
        return found

    async def identity_refused(self, identity: ChatIdentity, code: str, detail: str, email: str | None = None) -> None:
        """Audit a chat identity that was turned away before any request was touched
        (unknown or unlinkable person, foreign workspace or tenant)."""
        actor = Actor(
            kind="human",
            id=f"{identity.channel}:{identity.user_id}",
            email=email,
            channel=Channel(identity.channel),
            channel_user=identity.user_id,
            workspace=identity.workspace,
        )
        event = event_about_people(
            EventType.IDENTITY_REFUSED, actor, self.clock(), detail, code=code, identity=identity.key
        )
        await self.people.write_audited(self.redis.pipeline(transaction=True), event, changes_people=False)

    async def _replay(self, request_id: str, stored: str, sent: str) -> ApprovalRequest:
        if stored != sent:
            raise IdempotencyMismatch("this Idempotency-Key was already used with a different request body")
        request = await self.get(request_id)
        # A retry after a 503: answer 2xx only once it is replicated (and held by the node answering).
        await replication.confirm(self.redis, replication.Proof.exists(keys.request(request_id)))
        return request

    async def get(self, request_id: str) -> ApprovalRequest:
        request = await self.requests.get(request_id)
        if request is None:
            raise NotFound(request_id)
        return request

    async def decide(
        self,
        request_id: str,
        actor: Actor,
        approver: Approver | None,
        decision: str,
        reason: str | None,
    ) -> ApprovalRequest:
        return await self._apply(
            request_id, lambda r, now: machine.decide(r, actor, approver, decision, self.mask_reason(r, reason), now)
        )

    def mask_reason(self, request: ApprovalRequest, reason: str | None) -> str | None:
        """Free text (a reason typed by a person, an executor's outcome detail) with what the request's
        detectors find masked (a pasted token, an address). Detectors only: the policy's `sensitive:`
        paths name params, not free text. The masked text is what is stored, shown and recorded."""
        if not reason:
            return reason
        return masking.mask_text(reason, detect=request.policy.detect, key=self._masking_key)

    async def reveal(self, request_id: str, actor: Actor, approver: Person | None, paths: list[str]) -> dict[str, Any]:
        """The exact values behind masked `paths` (empty: all), for an eligible approver, privately.

        Refused (403) unless `rules.reveal_refusal` allows it; UnknownPath (422) for a path not masked
        in this request; ParamsDeleted (410) after retention. Each answer is a `params.revealed` audit
        record naming who and which paths, never a value. Callers show the values only to the actor.
        """
        request = await self.get(request_id)
        refusal = reveal_refusal(request, actor, approver)
        if refusal is not None:
            raise Refused(refusal)
        values = masking.reveal(request, paths, self._masking_key)
        event = event_for(request, EventType.PARAMS_REVEALED, actor, self.clock(), paths=list(values))
        committed = await self.requests.record(request, [event])
        if committed is None:
            raise NotFound(request_id)
        await self.audit.seal_committed(committed)
        return values

    async def forget_params(self, limit: int = 100) -> list[str]:
        """Retention: delete the raw values of up to `limit` requests final for longer than
        `params_retention` (oldest first); returns their ids. Run by the ticker; bounded per call."""
        if not self.params_retention:
            return []
        cutoff = self.clock() - timedelta(seconds=self.params_retention)
        done: list[str] = []
        for request_id in await self.requests.due(keys.FINAL, cutoff, limit):
            for _ in range(MAX_RACE_RETRIES):
                request = await self.requests.get(request_id)
                if request is None or request.params_deleted or not request.status.final:
                    break
                try:
                    await self.requests.commit(machine.forget_params(request), request.version, request.status)
                except Conflict:
                    continue
                done.append(request_id)
                break
            await self.requests.unindex_final(request_id)
        return done

    def with_masks(self, request: ApprovalRequest) -> ApprovalRequest:
        """The request with a masked view (one stored before masking gets the one intake would give)."""
        return masking.ensure_masked(request, self._masking_key)

    async def upgrade_stored(self, count: int = 200) -> int:
        """One step of the one-time upgrade of requests stored before masking existed.

        Reads will already mask such requests; this stores their masked view (a compare-and-set
        commit with no audit record: the chain is not rewritten) and files final ones in the
        retention index (`ab:final`), which did not exist when they were decided, so retention
        deletes their raw values too. One SCAN step of about `count` keys per call, resumed from
        the cursor kept in Redis, then "done" for good; run by every ticker (safe in parallel: each
        write is a compare-and-set, and filing is ZADD NX). Returns how many requests it changed.
        """
        if self._upgraded:
            return 0
        state = codec.text(await self.redis.get(keys.MASKING_UPGRADE) or b"0")
        if state == "done":
            self._upgraded = True
            return 0
        cursor, found = await self.redis.scan(int(state), match=keys.request("*"), count=count)
        prefix = keys.request("")
        changed = 0
        for key in found:
            try:
                changed += await self._upgrade_one(codec.text(key).removeprefix(prefix))
            except ValueError:  # a document no version could have written: leave it, never stall here
                continue
        await self.redis.set(keys.MASKING_UPGRADE, str(cursor) if int(cursor) else "done")
        return changed

    async def _upgrade_one(self, request_id: str) -> int:
        raw = self._stored
        for _ in range(MAX_RACE_RETRIES):
            stored = await raw.get(request_id)
            if stored is None:
                return 0
            filed = await raw.index_final(stored)
            if stored.masked is not None:
                return int(filed)
            try:
                await raw.commit(Transition(self.with_masks(stored)), stored.version, stored.status)
            except Conflict:
                continue
            return 1
        return 0

    async def cancel(self, request_id: str, agent: Agent) -> ApprovalRequest:
        actor = Actor(kind="agent", id=agent.id, email=agent.owner, person_id=agent.owner_id)
        return await self._apply(request_id, lambda r, now: machine.cancel(r, agent.id, actor, now))

    async def report_outcome(
        self,
        request_id: str,
        actor: Actor,
        agent_id: str,
        status: str,
        detail: str | None = None,
        result_sha256: str | None = None,
    ) -> ApprovalRequest:
        """Record what came of an approved request; `agent_id` is the agent the caller acts for
        (its own, or the one an executor is bound to): another agent's request does not exist to it.
        The free-text `detail` is people-facing (cards, thread, audit), so it is masked like a reason;
        `result_sha256` is how an executor binds the exact result."""
        found = await self.get(request_id)
        if found.agent_id != agent_id:
            raise NotFound(request_id)
        return await self._apply(
            request_id,
            lambda r, now: machine.report_outcome(r, actor, status, self.mask_reason(r, detail), result_sha256, now),
        )

    async def expire(self, request_id: str) -> ApprovalRequest | None:
        """Expire if still pending and due; None when someone else settled it first."""
        try:
            return await self._apply(request_id, machine.expire, confirm=False)
        except DomainError:  # not pending any more, not due yet, or gone
            return None

    async def revoke_agent(self, name: str, actor: Actor = ADMIN) -> Revocation:
        """Revoke an agent and what it holds: its tokens, its pending requests, its unexpired grants.

        Order matters: the tokens go first (no new request can be made), then every
        pending request is cancelled through the ordinary commit (audited with `actor`
        and the reason "agent revoked"; cards update through the outbox like any
        cancel), then the grants, including any approved while this ran, are revoked.
        Running it again for a revoked agent repeats the cascade, which is how a
        revocation interrupted half-way is completed.
        """
        agent = await self.identities.revoke_agent(name)
        cancelled: list[str] = []
        for request_id in await self._pending_of(agent.id):
            try:
                await self._apply(request_id, lambda r, now: machine.revoke_cancel(r, actor, now))
            except DomainError:  # settled meanwhile (decided, expired): its grant is handled below
                continue
            cancelled.append(request_id)
        revoked = await grants.revoke_agent_grants(self.redis, agent.id, self.clock().timestamp())
        return Revocation(agent, cancelled, revoked)

    async def _pending_of(self, agent_id: str) -> list[str]:
        """The agent's pending requests: a scan of the pending queue (revocation is rare, so no index)."""
        found: list[str] = []
        batch: list[str] = []

        async def flush() -> None:
            for request in await self.requests.get_many(batch):
                if request is not None and request.agent_id == agent_id and request.status is Status.PENDING:
                    found.append(request.id)
            batch.clear()

        async for member, _ in self.redis.zscan_iter(keys.PENDING, count=500):
            batch.append(codec.text(member))
            if len(batch) >= 500:
                await flush()
        await flush()
        return found

    async def timer_fired(self, request_id: str, type: EventType) -> None:
        """Record a due reminder or escalation, if the request still waits for humans."""
        request = await self.requests.get(request_id)
        if request is None or request.status is not Status.PENDING:
            return
        await self.audit.seal_committed(
            await self.requests.record(
                request, [event_for(request, type, SYSTEM, self.clock(), escalate_to=request.policy.escalate_to)]
            )
        )

    async def _apply(self, request_id: str, step: Step, confirm: bool = True) -> ApprovalRequest:
        """Read, compute, commit with CAS (retrying lost races); with `confirm`, wait for the replicas
        (the ticker's expiries acknowledge nobody, so they do not wait)."""
        for _ in range(MAX_RACE_RETRIES):
            request = await self.get(request_id)
            try:
                transition = step(request, self.clock())
            except Refused as refused:
                if refused.event is not None:
                    await self._count_blocked(request_id, refused.event)
                raise
            transition = self._finish(transition)
            try:
                done = await self.requests.commit(transition, request.version, request.status)
            except Conflict:
                continue
            await self.audit.seal_committed(done)
            if confirm:
                await replication.confirm(self.redis, done.proof)
            return done.request
        raise Conflict(request_id)

    async def _count_blocked(self, request_id: str, blocked: Event) -> None:
        """Record a blocked attempt once per person and request; later ones only count (same commit
        and compare-and-set as any change, so concurrent attempts never record twice)."""
        for _ in range(MAX_RACE_RETRIES):
            fresh = await self.requests.get(request_id)
            if fresh is None or fresh.status.final:
                return
            transition = machine.count_blocked(fresh, blocked)
            try:
                done = await self.requests.commit(transition, fresh.version, fresh.status)
            except Conflict:
                continue
            if transition.events:
                await self.audit.seal_committed(done)
            return

    def _finish(self, transition: Transition) -> Transition:
        """Let final-state hooks (grants, receipts) enrich the request inside the same commit."""
        request = transition.request
        if request.status is Status.PENDING:
            return transition
        for hook in self.on_final:
            request = hook(request)
        transition.request = request
        return transition

    async def pending_for(
        self, approver: Approver, after: Cursor | None, limit: int
    ) -> tuple[list[ApprovalRequest], Cursor | None]:
        """What this approver may decide, oldest first, and the cursor of the next page.

        Requests the approver may not decide (their own) are skipped; the scan is
        bounded so a page never reads more than a few windows of the queues.
        """
        out: list[ApprovalRequest] = []
        cursor = after
        targets = pending_targets(approver)
        for _ in range(20):
            rows = await self.requests.pending_page(targets, cursor, limit)
            window = rows[:limit]
            found = await self.requests.get_many([rid for _, rid in window])
            for i, (row, request) in enumerate(zip(window, found, strict=True)):
                cursor = row
                if request and request.status is Status.PENDING and may_decide(request, approver):
                    out.append(request)
                    if len(out) == limit:
                        last = i == len(window) - 1 and len(rows) <= limit
                        return out, None if last else row
            if len(rows) <= limit:
                return out, None
        return out, cursor


def human_actor(
    approver: Person,
    channel: Channel = Channel.API,
    channel_user: str | None = None,
    workspace: str | None = None,
) -> Actor:
    """A person acting through one concrete identity (API token id, Slack user, Teams user)."""
    return Actor(
        kind="human",
        id=approver.id,
        email=approver.email,
        channel=channel,
        channel_user=channel_user,
        person_id=approver.id,
        workspace=workspace,
    )
