"""Cards in Teams channels, kept in step with the audit log by RQ jobs.

The outbox enqueues one job per audit record of a request (`teams-<request>-<seq>`,
so a re-dispatch finds the job already there). Each job brings every target
conversation of the request up to date, whatever record triggered it:

1. post the card once (proactively, `CloudAdapter.continue_conversation`),
2. update it for everyone (`update_activity`) whenever its content changed,
3. mirror every sealed audit record of the request as a reply, in order, once.

Per (request, conversation) progress lives in `keys.delivery(request_id,
"teams:<conversation hash>")`: activity id, hash of the card last shown, last
mirrored sequence number, failures. Jobs for one request are serialised by a short
Redis lease, renewed before each connector call, so two workers never post the
same card. Transient failures (429 with its Retry-After, 5xx, timeouts) make the
job return an RQ `Retry` with a delay; a 429 also pauses the conversation for all
jobs. Permanent failures (403, 404, 400, or too many transient ones) stop delivery
to that conversation and record a `delivery.failed` audit event with the error code;
the request stays decidable through the API, Slack and other conversations.

The crash window: a post that Teams accepted just before the worker died (or whose
answer timed out) leaves no activity id behind. A post is marked "in flight" in
Redis before it is sent; a definite refusal (an HTTP error status) clears the mark,
so the next attempt posts normally. Finding the mark still set means the outcome
is unknown and Teams offers no way to look the message up, so we post again: a
possible duplicate card (whose buttons still work and whose clicks are answered
with the live state) is preferred to a card that may never have been posted. The
window is one Redis round trip after a successful post, or a timed-out post; every
re-post after an unknown outcome is logged and counted in the delivery state.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis as sync_redis
from redis.asyncio import Redis
from rq import Retry, get_current_job

from approvalbot.config import Settings, load_settings
from approvalbot.core.events import EventType, event_for
from approvalbot.core.models import Actor, ApprovalRequest, Channel
from approvalbot.jobs.outbox import Subscriber
from approvalbot.store import keys
from approvalbot.store.audit import AuditLog, StoredRecord
from approvalbot.store.requests import RequestStore
from approvalbot.teams import cards, sdk
from approvalbot.teams.identity import recent_user_ids
from approvalbot.teams.references import (
    ConversationRef,
    ReferenceStore,
    delivery_channel,
)
from approvalbot.teams.settings import TeamsSettings, teams_settings

log = logging.getLogger("approvalbot.teams.delivery")

LEASE_MS = 30_000
LEASE_WAIT = 10.0
MAX_FAILURES = 8  # consecutive transient failures per conversation before giving up
BACKOFF = (1, 2, 5, 15, 30, 60, 120, 300)
RETRY_CAP = 60  # returned Retry()s per job; our own failure count normally ends things first
STATE_TTL = 90 * 24 * 3600
DELIVERY_ACTOR = Actor(kind="system", id="teams-delivery", channel=Channel.TEAMS)
# For exceptions we did not classify (Redis down, a bug): RQ retries the whole job.
ERROR_RETRY = Retry(max=5, interval=[2, 10, 30, 60, 120])


def targets_key(request_id: str) -> str:
    return f"{keys.PREFIX}teams:targets:{request_id}"


def lease_key(request_id: str) -> str:
    return f"{keys.PREFIX}teams:lock:{request_id}"


def pause_key(conv_hash: str) -> str:
    return f"{keys.PREFIX}teams:pause:{conv_hash}"


# --- the outbox side ---------------------------------------------------------------


def _wants(record: dict[str, Any]) -> bool:
    return bool(record.get("request_id"))


def subscribers(settings: Settings) -> list[Subscriber]:
    """The Teams outbox subscriber, when Teams is on."""
    if not teams_settings(settings).enabled:
        return []
    return [
        Subscriber(
            name="teams",
            wants=_wants,
            func=deliver,
            args=lambda seq, rec: (rec["request_id"], seq),
            job_id=lambda seq, rec: f"teams-{rec['request_id']}-{seq}",
            retry=ERROR_RETRY,
        )
    ]


def deliver(request_id: str, seq: int) -> Any:
    """RQ job: bring every Teams card of the request up to date (triggered by audit record `seq`)."""
    job = get_current_job()
    if job is not None:
        outcome = asyncio.run(_deliver(job.connection, request_id))
    else:  # called directly (tests, a shell): use the configured Redis
        url = load_settings().redis_url
        if not url:
            raise RuntimeError("deliver() outside an RQ job needs REDIS_URL")
        connection = sync_redis.Redis.from_url(url)
        try:
            outcome = asyncio.run(_deliver(connection, request_id))
        finally:
            connection.close()
    if outcome.retry_in is not None:
        return Retry(max=RETRY_CAP, interval=max(1, math.ceil(outcome.retry_in)))
    return outcome.summary


async def _deliver(connection: sync_redis.Redis, request_id: str) -> Outcome:
    settings = load_settings()
    ts = teams_settings(settings)
    if not ts.enabled:
        return Outcome("teams is off")
    redis = async_twin(connection)
    try:
        return await Delivery(redis, ts, budget=Budget(settings.job_timeout)).sync(request_id)
    finally:
        await redis.aclose()


class Budget:
    """Stay inside RQ's job timeout: stop starting connector calls in time, and continue in a retry.

    A job killed by its timeout would be safe (progress is recorded after every call)
    but slow to resume; ending on our own terms hands over at once.
    """

    def __init__(self, job_timeout: float = 30):
        self.call_timeout = max(2.0, min(10.0, job_timeout / 3))
        self.lease_wait = min(LEASE_WAIT, job_timeout / 4)
        self.deadline = time.monotonic() + max(1.0, job_timeout - self.call_timeout - 3)

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise OutOfTime()


_TWIN_KEYS = {
    "host",
    "port",
    "db",
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "client_name",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
}


def async_twin(connection: sync_redis.Redis) -> Redis:
    """An asyncio client for the server the RQ job's connection talks to (TCP, TLS or socket)."""
    pool = connection.connection_pool
    given = dict(pool.connection_kwargs)
    kwargs = {k: v for k, v in given.items() if k in _TWIN_KEYS}
    if "path" in given:
        kwargs["unix_socket_path"] = given["path"]
    if issubclass(pool.connection_class, sync_redis.SSLConnection):
        kwargs["ssl"] = True
    return Redis(decode_responses=False, **kwargs)


# --- the job --------------------------------------------------------------------------


@dataclass
class Outcome:
    summary: str
    retry_in: float | None = None


class LeaseLost(Exception):
    """Our lock expired and may be someone else's now: stop, and retry the job."""


class OutOfTime(Exception):
    """The job's time budget is spent: stop between calls and continue in a retry."""


class Lease:
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
    _EXTEND = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    )

    def __init__(self, redis: Redis, key: str, ms: int = LEASE_MS):
        self.redis, self.key, self.ms = redis, key, ms
        self.token = secrets.token_hex(8)

    async def acquire(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            if await self.redis.set(self.key, self.token, nx=True, px=self.ms):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def extend(self) -> None:
        if not await self.redis.eval(self._EXTEND, 1, self.key, self.token, self.ms):
            raise LeaseLost(self.key)

    async def release(self) -> None:
        await self.redis.eval(self._RELEASE, 1, self.key, self.token)


class DeliveryState:
    """Progress of one request in one conversation (a Redis hash)."""

    def __init__(self, redis: Redis, request_id: str, conv_hash: str, fields: dict[str, str]):
        self.redis = redis
        self.key = keys.delivery(request_id, delivery_channel(conv_hash))
        self.fields = fields

    @classmethod
    async def load(cls, redis: Redis, request_id: str, conv_hash: str) -> DeliveryState:
        raw = await redis.hgetall(keys.delivery(request_id, delivery_channel(conv_hash)))
        return cls(redis, request_id, conv_hash, {k.decode(): v.decode() for k, v in raw.items()})

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    def number(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    async def set(self, **values: object) -> None:
        mapping = {k: str(v) for k, v in values.items()}
        self.fields.update(mapping)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping=mapping)
        pipe.expire(self.key, STATE_TTL)
        await pipe.execute()


def content_hash(card: dict[str, Any]) -> str:
    """What the channel shows; the refresh list changes often and is not worth an update."""
    shown = {k: v for k, v in card.items() if k != "refresh"}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:32]


class Delivery:
    def __init__(self, redis: Redis, ts: TeamsSettings, adapter=None, budget: Budget | None = None):
        self.redis = redis
        self.ts = ts
        self._adapter = adapter
        self.budget = budget or Budget()
        self.requests = RequestStore(redis)
        self.audit = AuditLog(redis)
        self.references = ReferenceStore(redis)

    @property
    def adapter(self):
        if self._adapter is None:
            self._adapter = sdk.build_adapter(self.ts)
        return self._adapter

    async def sync(self, request_id: str) -> Outcome:
        request = await self.requests.get(request_id)
        if request is None or request.policy.effect != "require_approval":
            return Outcome("nothing to show")
        targets = await self.targets(request)
        if not targets:
            return Outcome("no conversation to post to")
        lease = Lease(self.redis, lease_key(request_id))
        if not await lease.acquire(self.budget.lease_wait):
            return Outcome("another worker holds the request", retry_in=2)
        try:
            request = await self.requests.get(request_id)  # the freshest state, under the lease
            records = await self.audit.for_request(request_id)
            delays = []
            for target in targets:
                delay = await self.sync_target(request, records, target, lease)
                if delay is not None:
                    delays.append(delay)
        except LeaseLost:
            return Outcome("lease lost", retry_in=1)
        except OutOfTime:
            return Outcome("time budget spent; continuing", retry_in=1)
        finally:
            await lease.release()
        if delays:
            return Outcome("will retry", retry_in=max(delays))
        return Outcome(f"up to date in {len(targets)} conversation(s)")

    async def targets(self, request: ApprovalRequest) -> list[ConversationRef]:
        """Chosen once per request (so retries and late joins never fan out further)."""
        raw = await self.redis.get(targets_key(request.id))
        if raw is None:
            routed, unmatched = await self.references.route(request.policy.channel)
            frozen = json.dumps({"targets": [r.hash for r in routed], "unmatched": unmatched})
            if await self.redis.set(targets_key(request.id), frozen, nx=True, ex=STATE_TTL):
                if unmatched:
                    await self.record_failure(
                        request, "no_matching_conversation", request.policy.channel or "", "", "route"
                    )
                return routed
            raw = await self.redis.get(targets_key(request.id))
        hashes = json.loads(raw)["targets"]
        found = [await self.references.get(h) for h in hashes]
        return [r for r in found if r is not None]  # a conversation the bot has left is skipped

    async def sync_target(
        self, request: ApprovalRequest, records: list[StoredRecord], target: ConversationRef, lease: Lease
    ) -> float | None:
        """Post / update / mirror for one conversation; returns a delay when it must be retried."""
        state = await DeliveryState.load(self.redis, request.id, target.hash)
        if state.get("failed"):
            return None
        paused_ms = await self.redis.pttl(pause_key(target.hash))
        if paused_ms and paused_ms > 0:
            return paused_ms / 1000
        card = cards.request_card(request, refresh_user_ids=await recent_user_ids(self.redis))
        stage = "post"
        try:
            if not state.get("activity_id"):
                await self.before_call(lease)
                if state.get("posting_since"):
                    log.warning(
                        "Teams: previous post of %s to %s had an unknown outcome; posting again",
                        request.id,
                        target.hash,
                    )
                    await state.set(reposts=state.number("reposts") + 1)
                await state.set(posting_since=datetime.now(UTC).isoformat())
                activity_id = await self.post(target, card)
                await state.set(activity_id=activity_id, card_hash=content_hash(card), posting_since="")
            elif state.get("card_hash") != content_hash(card):
                stage = "update"
                await self.before_call(lease)
                await self.update(target, state.get("activity_id"), card)
                await state.set(card_hash=content_hash(card))
            stage = "reply"
            for record in records:
                if record.hash is None:
                    break  # not sealed yet: a later job mirrors it, in order
                if record.seq <= state.number("mirrored_seq"):
                    continue
                await self.before_call(lease)
                await self.reply(target, state.get("activity_id"), cards.audit_card(record.as_dict()))
                await state.set(mirrored_seq=record.seq)
            if state.number("failures"):
                await state.set(failures=0, last_error="")
            return None
        except (LeaseLost, OutOfTime):
            raise
        except Exception as exc:
            failure = sdk.classify(exc)
            if failure is None:
                raise
            return await self.failed(request, target, state, failure, stage)

    async def before_call(self, lease: Lease) -> None:
        self.budget.check()
        await lease.extend()

    async def failed(self, request, target: ConversationRef, state: DeliveryState, failure, stage: str) -> float | None:
        if stage == "post" and not failure.ambiguous:
            await state.set(posting_since="")  # Teams answered with an error: nothing was created
        if failure.retryable:
            failures = state.number("failures") + 1
            if failure.retry_after:
                await self.redis.set(pause_key(target.hash), "1", px=max(1, int(failure.retry_after * 1000)))
            if failures < MAX_FAILURES:
                await state.set(failures=failures, last_error=failure.code)
                log.info("Teams %s of %s to %s failed (%s); retrying", stage, request.id, target.hash, failure.code)
                return max(failure.retry_after or 0, BACKOFF[min(failures, len(BACKOFF)) - 1])
            code = f"{failure.code}_retries_exhausted"
        else:
            code = failure.code
        await state.set(failed=code, last_error=failure.code)
        await self.record_failure(request, code, target.display, target.hash, stage)
        return None

    async def record_failure(
        self, request: ApprovalRequest, code: str, conversation: str, target: str, stage: str
    ) -> None:
        """A visible, audited `delivery.failed`: the error code and where, never a secret."""
        log.warning("Teams delivery of %s failed permanently: %s (%s)", request.id, code, stage)
        event = event_for(
            request,
            EventType.DELIVERY_FAILED,
            DELIVERY_ACTOR,
            datetime.now(UTC),
            None,
            channel="teams",
            conversation=conversation,
            target=target,
            error=code,
            stage=stage,
        )
        await self.audit.seal_committed(await self.requests.record(request, [event]))

    # --- connector calls, through the SDK ---------------------------------------------

    async def _call(self, target: ConversationRef, work) -> Any:
        result: dict[str, Any] = {}

        async def logic(turn_context):
            client = sdk.connector(turn_context, self.budget.call_timeout)
            result["value"] = await work(turn_context, client)

        await self.adapter.continue_conversation(
            sdk.reference_from(target.reference), logic, bot_app_id=self.ts.app_id or None
        )
        return result.get("value")

    async def post(self, target: ConversationRef, card: dict[str, Any]) -> str:
        async def work(turn_context, client):
            activity = sdk.outgoing(sdk.card_activity(card, card.get("fallbackText")), target.reference)
            response = await client.conversations.send_to_conversation(activity.conversation.id, activity)
            if not response or not response.id:
                raise RuntimeError("Teams accepted the card but returned no activity id")
            return response.id

        return await self._call(target, work)

    async def update(self, target: ConversationRef, activity_id: str, card: dict[str, Any]) -> None:
        async def work(turn_context, client):
            activity = sdk.outgoing(sdk.card_activity(card, card.get("fallbackText")), target.reference)
            activity.id = activity_id
            await turn_context.update_activity(activity)

        await self._call(target, work)

    async def reply(self, target: ConversationRef, activity_id: str, card: dict[str, Any]) -> str | None:
        async def work(turn_context, client):
            activity = sdk.outgoing(sdk.card_activity(card, card.get("fallbackText")), target.reference)
            activity.reply_to_id = activity_id
            response = await client.conversations.reply_to_activity(activity.conversation.id, activity_id, activity)
            return response.id if response else None

        return await self._call(target, work)
