"""Teams' delivery primitives for the one engine (`approvalbot.jobs.delivery`).

The outbox enqueues one job per audit record of a request (`teams-<request>-<seq>`, so
a re-dispatch finds the job already there). Each job runs the engine, which brings every
target conversation of the request up to date: post the card once (proactively,
`CloudAdapter.continue_conversation`), update it for everyone (`update_activity`)
whenever its content changed, and mirror every sealed audit record as a reply, in order.
Target conversations are chosen once per request, so retries and late joins never fan out,
and only among conversations of allowed tenants. A card's `refresh.userIds` lists only
recent users of its own conversation's tenant, filled in per target.

Permanent failures (403, 404, 400, or too many transient ones) close that conversation
for good (`sticky_failures`): the bot was removed, say, and hammering it helps nobody.

The crash window: a post that Teams accepted just before the worker died (or whose
answer timed out) leaves no activity id behind. The engine marks a post in flight
before sending it; a definite refusal (an HTTP error status) clears the mark, so the
next attempt posts normally. Finding the mark still set means the outcome is unknown
and Teams offers no way to look the message up (`can_find = False`), so the engine
posts again: a possible duplicate card (whose buttons still work and whose clicks are
answered with the live state) is preferred to a card that may never have been posted.
The window is one Redis round trip after a successful post, or a timed-out post; every
re-post after an unknown outcome is logged and counted in the delivery state (`reposts`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from approvalbot.channels import Card, CardError, Failure, FinalStep, JobSpec, Posted, RouteError, Target
from approvalbot.config import Settings
from approvalbot.core.models import Actor, ApprovalRequest, Channel
from approvalbot.jobs import delivery as engine
from approvalbot.jobs.outbox import Subscriber
from approvalbot.store import keys
from approvalbot.store.audit import StoredRecord
from approvalbot.store.deliveries import GONE, STATE_TTL, DeliveryStore, TargetState
from approvalbot.teams import cards, sdk
from approvalbot.teams.identity import recent_user_ids
from approvalbot.teams.references import ConversationRef, ReferenceStore
from approvalbot.teams.settings import TeamsSettings, teams_settings

log = logging.getLogger("approvalbot.teams.delivery")

CHANNEL = "teams"
DELIVERY_ACTOR = Actor(kind="system", id="teams-delivery", channel=Channel.TEAMS)


def targets_key(request_id: str) -> str:
    return f"{keys.PREFIX}teams:targets:{request_id}"


def content_hash(card: dict[str, Any]) -> str:
    """What the channel shows; the refresh list changes often and is not worth an update."""
    shown = {k: v for k, v in card.items() if k != "refresh"}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:32]


class TeamsDelivery:
    """The primitives: Bot Framework connector calls through the SDK."""

    channel = CHANNEL
    actor = DELIVERY_ACTOR
    can_find = False
    sticky_failures = True

    def __init__(self, redis: Redis, ts: TeamsSettings, adapter: Any = None, budget: engine.Budget | None = None):
        self.redis = redis
        self.ts = ts
        self._adapter = adapter
        self.budget = budget or engine.Budget()
        self.references = ReferenceStore(redis)
        self._summaries: dict[str, dict[str, Any]] = {}  # card digest -> its summary form
        self._rendered: tuple[ApprovalRequest, Card] | None = None  # the last request rendered, and its card

    @classmethod
    def for_job(cls, redis: Redis, settings: Settings, budget: engine.Budget) -> TeamsDelivery | None:
        ts = teams_settings(settings)
        return cls(redis, ts, budget=budget) if ts.enabled else None

    @property
    def adapter(self) -> Any:
        if self._adapter is None:
            self._adapter = sdk.build_adapter(self.ts)
        return self._adapter

    async def close(self) -> None:
        return None

    def classify(self, exc: BaseException) -> Failure | None:
        found = sdk.classify(exc)
        if found is None:
            return None
        return Failure(found.code, found.retryable, found.retry_after, found.ambiguous)

    async def targets(self, request: ApprovalRequest) -> list[Target]:
        """Chosen once per request (so retries and late joins never fan out further)."""
        raw = await self.redis.get(targets_key(request.id))
        if raw is None:
            routed, unmatched = await self.references.route(request.policy.channel, self.ts.tenants)
            frozen = json.dumps({"targets": [r.hash for r in routed], "unmatched": unmatched})
            if await self.redis.set(targets_key(request.id), frozen, nx=True, ex=STATE_TTL):
                if unmatched:
                    raise RouteError("no_matching_conversation", request.policy.channel or "")
                return [_target(r) for r in routed]
            raw = await self.redis.get(targets_key(request.id))
        hashes = json.loads(raw or "{}").get("targets", [])
        found = [await self.references.get(h) for h in hashes]
        for ref in found:
            if ref is not None and ref.gone:
                await self._close_gone(request.id, ref)
        # A conversation the bot has left is skipped, and so is one whose tenant is no longer allowed.
        return [_target(r) for r in found if r is not None and not r.gone and self.ts.allows(r.tenant_id)]

    async def _close_gone(self, request_id: str, ref: ConversationRef) -> None:
        """A target that went away after this request chose it: its state says so (for the
        deliveries API), without another delivery.failed (the request that found out recorded it)."""
        store = DeliveryStore(self.redis)
        state = await store.load(request_id, CHANNEL, ref.hash)
        if not state.failed:
            await store.save(request_id, CHANNEL, ref.hash, state, failed=GONE, last_error=ref.gone)

    async def render(self, request: ApprovalRequest) -> Card:
        """The card within the byte budget as sent (`APPROVALBOT_TEAMS_MAX_BYTES`), shortened if it must be.

        A card that does not fit even as the summary raises `CardError`: the engine records it."""
        if self._rendered is not None and self._rendered[0] is request:
            return self._rendered[1]  # the engine renders once per target: fitting costs up to ~20 ms
        card = cards.fit_request_card(request, self.ts.max_bytes)  # refresh.userIds: filled in by `_for`
        if cards.sent_size(card) > self.ts.max_bytes:
            raise CardError(f"card_too_large_{cards.sent_size(card)}_bytes")
        digest = content_hash(card)
        self._summaries[digest] = cards.summary_card(request)  # what a 413 on this card's update gets
        self._rendered = (request, Card(card, digest))
        return self._rendered[1]

    async def _for(self, ref: ConversationRef, payload: dict[str, Any]) -> dict[str, Any]:
        """The card for one conversation: auto-refresh only for recent users of that conversation's
        tenant, as many of them as the byte budget leaves room for."""
        if "refresh" not in payload:
            return payload
        users = await recent_user_ids(self.redis, ref.tenant_id, cards.MAX_REFRESH_USERS)
        return cards.with_refresh_users(payload, users, self.ts.max_bytes)

    async def post(self, target: Target, card: Card, request: ApprovalRequest) -> Posted:
        ref: ConversationRef = target.address
        payload = await self._for(ref, card.payload)

        async def work(turn_context: Any, client: Any) -> str:
            activity = sdk.outgoing(sdk.card_activity(payload, payload.get("fallbackText")), ref.reference)
            response = await client.conversations.send_to_conversation(activity.conversation.id, activity)
            if not response or not response.id:
                raise RuntimeError("Teams accepted the card but returned no activity id")
            return str(response.id)

        try:
            return Posted(await self._call(ref, work, "post"), ref.hash)
        except Exception as exc:
            summary = cards.summary_card(request)
            if not sdk.too_big(exc) or content_hash(summary) == card.digest:
                raise
        # 413 MessageSizeTooBig: the connector counts differently from us; the summary is a few KB.
        log.warning("Teams: the card of %s was too big for %s; posting its summary", request.id, ref.hash)
        payload = await self._for(ref, summary)
        return Posted(await self._call(ref, work, "post"), ref.hash)

    async def update(self, target: Target, state: TargetState, card: Card) -> None:
        ref: ConversationRef = target.address
        payload = await self._for(ref, card.payload)

        async def work(turn_context: Any, client: Any) -> None:
            activity = sdk.outgoing(sdk.card_activity(payload, payload.get("fallbackText")), ref.reference)
            activity.id = state.message_id
            await turn_context.update_activity(activity)

        try:
            await self._call(ref, work, "update")
            return
        except Exception as exc:
            summary = self._summaries.get(card.digest)
            if not sdk.too_big(exc) or summary is None or content_hash(summary) == card.digest:
                raise
        log.warning("Teams: the updated card was too big for %s; sending its summary", ref.hash)
        payload = await self._for(ref, summary)
        await self._call(ref, work, "update")

    async def reply(self, target: Target, state: TargetState, request: ApprovalRequest, record: StoredRecord) -> None:
        ref: ConversationRef = target.address
        card = cards.audit_card(record.as_dict())
        if cards.sent_size(card) > self.ts.max_bytes:
            card = cards.audit_card(record.as_dict(), short=True)

        async def work(turn_context: Any, client: Any) -> None:
            activity = sdk.outgoing(sdk.card_activity(card, card.get("fallbackText")), ref.reference)
            activity.reply_to_id = state.message_id
            await client.conversations.reply_to_activity(activity.conversation.id, state.message_id, activity)

        try:
            await self._call(ref, work, "reply")
            return
        except Exception as exc:
            if not sdk.too_big(exc):
                raise
        card = cards.audit_card(record.as_dict(), short=True)
        await self._call(ref, work, "reply")

    async def find_post(self, target: Target, request: ApprovalRequest, since: float) -> Posted | None:
        return None  # Teams cannot look a message up: see the crash window above

    async def find_reply(self, target: Target, state: TargetState, request: ApprovalRequest, seq: int) -> bool:
        return False

    async def finish(self, request: ApprovalRequest, step: FinalStep) -> bool:
        return False  # the final card and its reply chain say it all

    async def _call(self, ref: ConversationRef, work: Callable[[Any, Any], Awaitable[Any]], stage: str) -> Any:
        result: dict[str, Any] = {}

        async def logic(turn_context: Any) -> None:
            client = sdk.connector(turn_context, self.budget.call_timeout)
            result["value"] = await work(turn_context, client)

        try:
            await self.adapter.continue_conversation(
                sdk.reference_from(ref.reference), logic, bot_app_id=self.ts.app_id or None
            )
        except Exception as exc:
            code = sdk.gone_code(exc, stage)
            if code and await self.references.mark_gone(ref.hash, code):
                # This request records the one delivery.failed; later ones no longer target it.
                log.warning("Teams: conversation %s answered %s; nothing more is posted there", ref.hash, code)
            raise
        return result.get("value")


def _target(ref: ConversationRef) -> Target:
    return Target(ref.hash, ref.display, ref)


# --- the job, and its outbox subscription -----------------------------------------------------------


async def deliver(request_id: str, seq: int = 0) -> Any:
    """RQ job: bring every Teams card of the request up to date (triggered by audit record `seq`)."""
    return await engine.run_job(TeamsDelivery.for_job, request_id)


def job_id(seq: int, record: dict[str, Any]) -> str:
    return f"teams-{record['request_id']}-{seq}"


JOB = JobSpec(name=CHANNEL, func=deliver, job_id=job_id)


def subscribers(settings: Settings) -> list[Subscriber]:
    """The Teams outbox subscriber, when Teams is on."""
    if not teams_settings(settings).enabled:
        return []
    return [engine.subscriber(JOB.name, JOB.func, JOB.job_id)]
