"""Slack's delivery primitives for the one engine (`approvalbot.jobs.delivery`), exactly once.

The engine posts the card, updates it, mirrors the audit records into its thread and,
once the request is final, runs the final step here (a DM to the owner). Every message
carries Slack message metadata naming the request (and record), so after a crash the
engine's intent markers lead to a lookup (`find_post`, `find_reply`, the DM's own
marker) instead of a second post: Slack delivery stays exactly-once.

Errors: the client sleeps out short 429s itself; longer ones, 5xx, timeouts and
connection errors are retryable `Failure`s; any other error code is permanent and
recorded once per target, stage and code. Slack failures are not sticky: the next
job tries again (inviting the bot into the channel fixes `not_in_channel`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.channels import Card, Failure, FinalStep, JobSpec, Posted, RouteError, StepFailed, Target
from approvalbot.config import Settings
from approvalbot.core.events import EventType
from approvalbot.core.machine import SYSTEM
from approvalbot.core.models import Actor, ApprovalRequest
from approvalbot.jobs import delivery as engine
from approvalbot.jobs.outbox import Subscriber
from approvalbot.slack import blocks
from approvalbot.slack.client import error_code, is_rate_limited, is_transient, make_client, retry_after
from approvalbot.slack.escape import mention
from approvalbot.slack.identity import ChannelDirectory, ChannelNotFound, SlackDirectory
from approvalbot.slack.settings import SlackConfig
from approvalbot.store.audit import StoredRecord
from approvalbot.store.deliveries import TargetState
from approvalbot.store.identities import IdentityStore

log = logging.getLogger("approvalbot.slack.delivery")

CHANNEL = "slack"
LOOKBACK = 600  # seconds of history searched before an uncertain post
LOOKUP_PAGES = 10


class SlackDelivery:
    """The primitives: Slack Web API calls, and message lookups by metadata."""

    channel = CHANNEL
    actor: Actor = SYSTEM
    can_find = True
    sticky_failures = False

    def __init__(self, redis: Redis, client: AsyncWebClient, config: SlackConfig):
        self.redis = redis
        self.client = client
        self.config = config
        self.identities = IdentityStore(redis)
        self.people = SlackDirectory(client, redis)
        self.channels = ChannelDirectory(client, redis)

    @classmethod
    def for_job(cls, redis: Redis, settings: Settings, budget: engine.Budget) -> SlackDelivery | None:
        config = SlackConfig.from_settings(settings)
        return None if config is None else cls(redis, make_client(config), config)

    async def close(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None and not session.closed:
            await session.close()

    def classify(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, ChannelNotFound):
            return Failure(ChannelNotFound.code, retryable=False)
        if isinstance(exc, SlackApiError):
            if is_rate_limited(exc):
                return Failure(error_code(exc), retryable=True, retry_after=float(retry_after(exc.response.headers)))
            if is_transient(exc):
                return Failure(error_code(exc), retryable=True, ambiguous=True)
            return Failure(error_code(exc), retryable=False)
        if isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError)):
            return Failure("timeout" if isinstance(exc, TimeoutError) else "connection_error", True, ambiguous=True)
        return None

    async def targets(self, request: ApprovalRequest) -> list[Target]:
        wanted = request.policy.channel or self.config.channel
        try:
            channel = await self.channels.resolve(wanted)
        except ChannelNotFound:
            raise RouteError(ChannelNotFound.code, wanted) from None
        return [Target(channel, channel, channel)]

    async def render(self, request: ApprovalRequest) -> Card:
        emails = [a for a in request.policy.approvers if "@" in a]
        rendered = blocks.card(request, await self.people.mentions_for(emails))
        return Card(rendered, rendered.digest)

    async def post(self, target: Target, card: Card, request: ApprovalRequest) -> Posted:
        rendered: blocks.Rendered = card.payload
        answer = await self.client.chat_postMessage(
            channel=target.address,
            text=rendered.text,
            blocks=rendered.blocks,
            metadata=blocks.card_metadata(request.id),
            unfurl_links=False,
            unfurl_media=False,
        )
        return Posted(str(answer["ts"]), str(answer["channel"]))

    async def update(self, target: Target, state: TargetState, card: Card) -> None:
        rendered: blocks.Rendered = card.payload
        await self.client.chat_update(
            channel=state.where or target.address, ts=state.message_id, text=rendered.text, blocks=rendered.blocks
        )

    async def reply(self, target: Target, state: TargetState, request: ApprovalRequest, record: StoredRecord) -> None:
        body = record.as_dict()
        reply = blocks.audit_reply(record.seq, record.hash or "", body, await self._mentions_for(request, body))
        await self.client.chat_postMessage(
            channel=state.where or target.address,
            thread_ts=state.message_id,
            text=reply.text,
            blocks=reply.blocks,
            metadata=blocks.audit_metadata(request.id, record.seq),
            unfurl_links=False,
            unfurl_media=False,
        )

    async def find_post(self, target: Target, request: ApprovalRequest, since: float) -> Posted | None:
        ts = await self._find(target.address, blocks.CARD_EVENT, request.id, None, since)
        return Posted(ts, target.address) if ts else None

    async def find_reply(self, target: Target, state: TargetState, request: ApprovalRequest, seq: int) -> bool:
        where = state.where or target.address
        return await self._find(where, blocks.AUDIT_EVENT, request.id, seq, None, thread=state.message_id) is not None

    async def _mentions_for(self, request: ApprovalRequest, record: dict[str, Any]) -> list[str]:
        """Reminders mention the approvers; escalations page the escalation group's members."""
        kind = record.get("type")
        if kind == EventType.ESCALATION_DUE:
            group = (record.get("data") or {}).get("escalate_to") or request.policy.escalate_to
            emails = [
                a.email
                for a in await self.identities.list_approvers()
                if not a.revoked and group and (group in a.groups or a.email == group)
            ]
        elif kind == EventType.REMINDER_DUE:
            emails = [a for a in request.policy.approvers if "@" in a]
        else:
            return []
        found = await self.people.mentions_for(sorted(set(emails)))
        return [m for m in (mention(found[e]) for e in sorted(found)) if m]

    # --- the final step: the owner's DM ---------------------------------------------------------

    async def finish(self, request: ApprovalRequest, step: FinalStep) -> bool:
        state = step.state
        user = await self.people.user_for(request.owner)
        if user is None:
            await step.save(final="failed")
            raise StepFailed(Failure("users_not_found", retryable=False))
        channel = state.final_ref
        if not channel:
            await step.before_call()
            channel = str((await self.client.conversations_open(users=user))["channel"]["id"])
            await step.save(final_ref=channel)
        if state.final == "sending" and await self._find(channel, blocks.OUTCOME_EVENT, request.id, None, None):
            await step.save(final="sent")
            return True
        message = blocks.outcome_dm(request)
        await step.before_call()
        await step.save(durable=True, final="sending")
        await self.client.chat_postMessage(
            channel=channel,
            text=message.text,
            blocks=message.blocks,
            metadata=blocks.outcome_metadata(request.id),
            unfurl_links=False,
            unfurl_media=False,
        )
        await step.save(final="sent")
        return True

    # --- finding what an interrupted attempt may have posted -----------------------------------

    async def _find(
        self,
        channel: str,
        event_type: str,
        request_id: str,
        seq: int | None,
        since: float | None,
        thread: str | None = None,
    ) -> str | None:
        """The ts of our message carrying this metadata, or None. Pages are bounded."""
        bot = await self.people.bot_id()
        cursor = None
        for _ in range(LOOKUP_PAGES):
            args: dict[str, Any] = {"channel": channel, "include_all_metadata": True, "limit": 200}
            if cursor:
                args["cursor"] = cursor
            if thread:
                page = await self.client.conversations_replies(ts=thread, **args)
            else:
                if since is not None:
                    args["oldest"] = f"{since - LOOKBACK:.6f}"
                page = await self.client.conversations_history(**args)
            for message in page.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if (
                    meta.get("event_type") == event_type
                    and payload.get("request_id") == request_id
                    and (seq is None or payload.get("seq") == seq)
                    and (bot is None or message.get("bot_id") in (None, bot))
                ):
                    ts = message.get("ts")
                    return str(ts) if ts else None
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None


# --- the job, and its outbox subscription -----------------------------------------------------------


async def sync_request(request_id: str, seq: int = 0) -> Any:
    """RQ job: bring one request's Slack card, thread and DM up to date (`seq`: the triggering record)."""
    return await engine.run_job(SlackDelivery.for_job, request_id)


def job_id(seq: int, record: dict[str, Any]) -> str:
    return f"slack-{seq}"


JOB = JobSpec(name=CHANNEL, func=sync_request, job_id=job_id)


def subscribers(settings: Settings) -> list[Subscriber]:
    """The outbox subscription for Slack, when Slack is on (raises ConfigError when misconfigured)."""
    if SlackConfig.from_settings(settings) is None:
        return []
    return [engine.subscriber(JOB.name, JOB.func, JOB.job_id)]


__all__ = ["JOB", "SlackDelivery", "subscribers", "sync_request"]
