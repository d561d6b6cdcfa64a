"""The one delivery engine: brings a request's chat presence up to date, for any channel.

Each channel's outbox job (one per audit record of a request) runs `sync` with that
channel's `DeliveryPrimitives`. Any job can do all of the work, so jobs for one request
converge whatever order they run in. Per (request, target):

1. post the card once: an intent marker (`posting_since`) is saved before the post;
   finding it later without a message id means an earlier attempt may have posted, so
   the channel looks the message up (`find_post`) if it can, else posts again and
   counts the re-post (Teams' documented crash window);
2. update the card when its rendered digest changed;
3. mirror every sealed audit record of the request into the card's thread, in order,
   once (marker `mirroring` before each reply, `find_reply` after a crash);

then, once the request is final, the channel's optional final step (Slack DMs the owner).

Jobs for one request and channel are serialised by one lease (`jobs.lease`), extended
before every call to the chat service. Failures are classified by the channel into one
`Failure`: 429 pauses the target and retries at Retry-After, 5xx and timeouts back off,
permanent ones (or too many retryable ones in a row) record ONE `delivery.failed` audit
event per target, stage and error, with the same fields for every channel:
`{channel, target, stage, error}`. The request stays decidable whatever fails.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis as sync_redis
from redis.asyncio import Redis
from rq import Retry, get_current_job

from approvalbot.channels import CardError, DeliveryPrimitives, Failure, RouteError, StepFailed, Target
from approvalbot.config import Settings, load_settings
from approvalbot.core.events import EventType, event_for
from approvalbot.core.masking import ensure_masked
from approvalbot.core.models import ApprovalRequest
from approvalbot.jobs.lease import Lease, LeaseLost
from approvalbot.jobs.outbox import Subscriber
from approvalbot.keyfiles import masking_key
from approvalbot.store import connections, keys
from approvalbot.store.audit import AuditLog, StoredRecord
from approvalbot.store.connections import async_twin
from approvalbot.store.deliveries import REQUEST_TARGET, DeliveryStore, TargetState
from approvalbot.store.requests import RequestStore

log = logging.getLogger("approvalbot.delivery")

LEASE_WAIT = 10.0
MAX_FAILURES = 8  # consecutive retryable failures per target before giving up
BACKOFF = (1, 2, 5, 15, 30, 60, 120, 300)
RETRY_CAP = 60  # Retry()s a job may return; the failure count normally ends things first
# For exceptions no channel classified (Redis down, a bug): RQ retries the whole job.
ERROR_RETRY = Retry(max=5, interval=[2, 10, 30, 60, 120])
FINAL_TARGET = "final"


def lease_key(channel: str, request_id: str) -> str:
    return f"{keys.PREFIX}delivery:lock:{channel}:{request_id}"


def pause_key(channel: str, target_id: str) -> str:
    return f"{keys.PREFIX}delivery:pause:{channel}:{target_id}"


class OutOfTime(Exception):
    """The job's time budget is spent: stop between calls and continue in a retry."""


class Budget:
    """Stay inside RQ's job timeout: stop starting calls in time, and continue in a retry.

    A job killed by its timeout would be safe (progress is saved after every call) but
    slow to resume; ending on our own terms hands over at once.
    """

    def __init__(self, job_timeout: float = 30):
        self.call_timeout = max(2.0, min(10.0, job_timeout / 3))
        self.lease_wait = min(LEASE_WAIT, job_timeout / 4)
        self.deadline = time.monotonic() + max(1.0, job_timeout - self.call_timeout - 3)

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise OutOfTime()


@dataclass
class Outcome:
    summary: str
    retry_in: float | None = None


class _Step:
    """One target's state plus the guard before each call (what a final step is handed)."""

    def __init__(self, engine: Engine, request_id: str, target: str, state: TargetState):
        self.engine, self.request_id, self.target, self.state = engine, request_id, target, state

    async def before_call(self) -> None:
        await self.engine.before_call()

    async def save(self, **changes: Any) -> None:
        await self.engine.store.save(self.request_id, self.engine.p.channel, self.target, self.state, **changes)


class Engine:
    """Runs one channel's primitives for one request, under the request's lease."""

    def __init__(
        self,
        redis: Redis,
        primitives: DeliveryPrimitives,
        budget: Budget | None = None,
        masking: bytes | None = None,
    ):
        self.redis = redis
        self.p = primitives
        self.budget = budget or Budget()
        # With the masking key, a request stored before masking is shown with the masked view intake
        # would have given it (without, `shown()` withholds its values); see service.with_masks.
        upgrade = None if masking is None else (lambda request: ensure_masked(request, masking))
        self.requests = RequestStore(redis, upgrade)
        self.audit = AuditLog(redis)
        self.store = DeliveryStore(redis)
        self.lease: Lease | None = None

    async def sync(self, request_id: str) -> Outcome:
        request = await self.requests.get(request_id)
        if request is None or request.policy.effect != "require_approval":
            return Outcome("nothing to do")  # settled by policy alone: no human needs to see it
        lease = Lease(self.redis, lease_key(self.p.channel, request_id))
        if not await lease.acquire(self.budget.lease_wait):
            return Outcome("another worker holds the request", retry_in=2)
        self.lease = lease
        try:
            request = await self.requests.get(request_id) or request  # the freshest state, under the lease
            return await self._sync(request)
        except LeaseLost:
            return Outcome("lease lost", retry_in=1)
        except OutOfTime:
            return Outcome("time budget spent; continuing", retry_in=1)
        finally:
            await lease.release()
            self.lease = None

    async def _sync(self, request: ApprovalRequest) -> Outcome:
        targets = await self._targets(request)
        records = await self.audit.for_request(request.id)
        if records and records[-1].hash is None:  # seal only when something of ours is waiting for it
            await self.audit.seal()
            records = await self.audit.for_request(request.id)
        delays: list[float] = []
        done = 0
        for target in targets:
            delay = await self.sync_target(request, records, target)
            if delay is not None:
                delays.append(delay)
            else:
                done += 1
        if request.status.final:
            delay = await self._final(request)
            if delay is not None:
                delays.append(delay)
        if delays:
            return Outcome("will retry", retry_in=max(delays))
        return Outcome(f"up to date in {done} of {len(targets)} target(s)")

    async def _targets(self, request: ApprovalRequest) -> list[Target]:
        state = await self.store.load(request.id, self.p.channel, REQUEST_TARGET)
        try:
            targets = await self.p.targets(request)
        except RouteError as exc:
            if state.errors.get("route") != exc.code:
                await self.record_failure(request, exc.where, "route", exc.code)
                await self._save(request.id, REQUEST_TARGET, state, errors={"route": exc.code})
            return []
        if "route" in state.errors:
            await self._save(request.id, REQUEST_TARGET, state, errors={"route": None})
        return targets

    async def before_call(self) -> None:
        self.budget.check()
        if self.lease is not None:
            await self.lease.extend()

    async def _save(self, request_id: str, target: str, state: TargetState, **changes: Any) -> None:
        await self.store.save(request_id, self.p.channel, target, state, **changes)

    # --- one target -----------------------------------------------------------------------

    async def sync_target(self, request: ApprovalRequest, records: list[StoredRecord], target: Target) -> float | None:
        """Post / update / mirror for one target; returns a delay when it must be retried."""
        state = await self.store.load(request.id, self.p.channel, target.id)
        if state.failed:
            return None
        paused_ms = await self.redis.pttl(pause_key(self.p.channel, target.id))
        if paused_ms and paused_ms > 0:
            return paused_ms / 1000
        try:
            card = await self.p.render(request)
        except (LeaseLost, OutOfTime):
            raise
        except Exception as exc:
            # Never silence: a card that cannot be built is a delivery.failed naming why (once).
            code = str(exc) if isinstance(exc, CardError) and str(exc) else f"card_not_built_{type(exc).__name__}"
            log.error("%s: the card of %s cannot be built (%s)", self.p.channel, request.id, code, exc_info=True)
            return await self.failed(request, target, state, Failure(code[:120], retryable=False), "render")
        stage = "post"
        try:
            if not state.message_id:
                await self._post(request, target, state, card)
            elif state.digest != card.digest:
                stage = "update"
                await self.before_call()
                await self.p.update(target, state, card)
                await self._save(request.id, target.id, state, digest=card.digest)
            stage = "reply"
            await self._mirror(request, records, target, state)
        except (LeaseLost, OutOfTime):
            raise
        except Exception as exc:
            failure = exc.failure if isinstance(exc, StepFailed) else self.p.classify(exc)
            if failure is None:
                raise
            return await self.failed(request, target, state, failure, stage)
        cleared: dict[str, Any] = {s: None for s in ("render", "post", "update", "reply") if s in state.errors}
        if state.failures or cleared:
            await self._save(request.id, target.id, state, failures=0, last_error="", errors=cleared)
        return None

    async def _post(self, request: ApprovalRequest, target: Target, state: TargetState, card: Any) -> None:
        if state.posting_since:
            if self.p.can_find:
                found = await self.p.find_post(target, request, state.posting_since)
                if found is not None:
                    # Shown as posted back then: compare digests from scratch, so it is updated if stale.
                    await self._save(
                        request.id,
                        target.id,
                        state,
                        message_id=found.message_id,
                        where=found.where,
                        digest="",
                        posting_since=0.0,
                    )
                    if state.digest != card.digest:
                        await self.before_call()
                        await self.p.update(target, state, card)
                        await self._save(request.id, target.id, state, digest=card.digest)
                    return
            else:
                log.warning(
                    "%s: previous post of %s to %s had an unknown outcome; posting again",
                    self.p.channel,
                    request.id,
                    target.id,
                )
                await self._save(request.id, target.id, state, reposts=state.reposts + 1)
        await self.before_call()
        await self._save(request.id, target.id, state, posting_since=time.time())
        posted = await self.p.post(target, card, request)
        await self._save(
            request.id,
            target.id,
            state,
            message_id=posted.message_id,
            where=posted.where,
            digest=card.digest,
            posting_since=0.0,
        )

    async def _mirror(
        self, request: ApprovalRequest, records: list[StoredRecord], target: Target, state: TargetState
    ) -> None:
        for record in records:
            if record.hash is None:
                return  # not sealed yet: a later job mirrors it, still in order
            if record.seq <= state.mirrored_seq:
                continue
            if state.mirroring == record.seq and self.p.can_find:
                await self.before_call()
                if await self.p.find_reply(target, state, request, record.seq):
                    await self._save(request.id, target.id, state, mirrored_seq=record.seq, mirroring=0)
                    continue
            await self.before_call()
            await self._save(request.id, target.id, state, mirroring=record.seq)
            await self.p.reply(target, state, request, record)
            await self._save(request.id, target.id, state, mirrored_seq=record.seq, mirroring=0)

    # --- the final step -----------------------------------------------------------------------

    async def _final(self, request: ApprovalRequest) -> float | None:
        state = await self.store.load(request.id, self.p.channel, REQUEST_TARGET)
        if state.final in ("sent", "failed"):
            return None
        target = Target(FINAL_TARGET, FINAL_TARGET)
        try:
            await self.p.finish(request, _Step(self, request.id, REQUEST_TARGET, state))
        except (LeaseLost, OutOfTime):
            raise
        except Exception as exc:
            failure = exc.failure if isinstance(exc, StepFailed) else self.p.classify(exc)
            if failure is None:
                raise
            return await self.failed(request, target, state, failure, "final", state_target=REQUEST_TARGET)
        return None

    # --- failures -------------------------------------------------------------------------------

    async def failed(
        self,
        request: ApprovalRequest,
        target: Target,
        state: TargetState,
        failure: Failure,
        stage: str,
        state_target: str | None = None,
    ) -> float | None:
        """Map a classified failure: pause and retry, back off, or record it once and stop."""
        where = state_target or target.id
        if stage == "post" and not failure.ambiguous and state.posting_since:
            await self._save(request.id, where, state, posting_since=0.0)  # refused: nothing was created
        if failure.retryable:
            failures = state.failures + 1
            if failure.retry_after:
                await self.redis.set(
                    pause_key(self.p.channel, target.id), "1", px=max(1, int(failure.retry_after * 1000))
                )
            if failures < MAX_FAILURES:
                await self._save(request.id, where, state, failures=failures, last_error=failure.code)
                log.info(
                    "%s %s of %s to %s failed (%s); retrying",
                    self.p.channel,
                    stage,
                    request.id,
                    target.id,
                    failure.code,
                )
                return max(failure.retry_after or 0, BACKOFF[min(failures, len(BACKOFF)) - 1])
            code = f"{failure.code}_retries_exhausted"
        else:
            code = failure.code
        if self.p.sticky_failures:
            await self._save(request.id, where, state, failed=code, last_error=failure.code)
        elif state.failures or state.last_error != failure.code:
            await self._save(request.id, where, state, failures=0, last_error=failure.code)
        if state.errors.get(stage) != code:
            await self.record_failure(request, target.display, stage, code)
            await self._save(request.id, where, state, errors={stage: code})
        return None

    async def record_failure(self, request: ApprovalRequest, target: str, stage: str, code: str) -> None:
        """A visible, audited `delivery.failed`: the same fields for every channel, never a secret."""
        log.warning("%s delivery of %s failed at %s: %s", self.p.channel, request.id, stage, code)
        fresh = await self.requests.get(request.id) or request
        event = event_for(
            fresh,
            EventType.DELIVERY_FAILED,
            self.p.actor,
            datetime.now(UTC),
            None,
            channel=self.p.channel,
            target=target,
            stage=stage,
            error=code,
        )
        await self.audit.seal_committed(await self.requests.record(fresh, [event]))


# --- the RQ side ----------------------------------------------------------------------------------

PrimitivesFactory = Callable[[Redis, Settings, Budget], DeliveryPrimitives | None]


async def run_job(factory: PrimitivesFactory, request_id: str) -> Any:
    """The body of every channel's delivery job: an RQ `Retry` when it must continue later, else a summary.

    Uses the RQ job's own connection (every connection option kept); outside a job (a test,
    a shell) the configured REDIS_URL.
    """
    settings = load_settings()
    job = get_current_job()
    own: sync_redis.Redis | None = None
    if job is not None:
        connection = job.connection
    else:
        if not settings.redis_url:
            raise RuntimeError("a delivery job outside an RQ worker needs REDIS_URL")
        connection = own = connections.sync_client(connections.parse(settings.redis_url))
    redis = async_twin(connection)
    try:
        budget = Budget(settings.job_timeout)
        primitives = factory(redis, settings, budget)
        if primitives is None:
            return "channel is off"
        try:
            outcome = await Engine(redis, primitives, budget, masking_key(settings)).sync(request_id)
        finally:
            await primitives.close()
    finally:
        await redis.aclose()
        if own is not None:
            own.close()
    if outcome.retry_in is not None:
        return Retry(max=RETRY_CAP, interval=max(1, math.ceil(outcome.retry_in)))
    return outcome.summary


def wants(record: dict[str, Any]) -> bool:
    return bool(record.get("request_id"))


def subscriber(name: str, func: Callable[..., Any], job_id: Callable[[int, dict[str, Any]], str]) -> Subscriber:
    """The outbox subscription of one channel's delivery job: one job per audit record of a request."""
    return Subscriber(
        name=name,
        wants=wants,
        func=func,
        args=lambda seq, record: (record["request_id"], seq),
        job_id=job_id,
        retry=ERROR_RETRY,
    )
