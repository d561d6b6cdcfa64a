"""Posting, updating and mirroring in Slack, from RQ jobs, each thing exactly once.

One job per audit record "syncs" its request: post the card if it is missing,
update it if it changed, reply in its thread with every record not mirrored yet
(in order), and DM the owner once the request is final. Any job can do all of
it, so jobs for one request converge whatever order they run in.

What makes "nothing is posted twice" hold when a job is retried, or its worker
dies between Slack's answer and our write:

* Per-request state in Redis (`keys.delivery(id, "slack")`): channel, card ts,
  last mirrored sequence number, DM state, digest of the last rendered card.
* A short per-request lock (token + expiry, refreshed before each write), so
  two workers never sync one request at the same time.
* Before each post an intent marker is saved (`posting`, `mirroring`, `dm`),
  and every message carries Slack message metadata naming the request (and
  record). A later attempt that finds a marker without a result looks for the
  message in the channel history (or the thread) before posting again.

Errors: 429 reschedules the job for Retry-After (short waits are slept in the
client); 5xx, timeouts and connection errors raise so RQ retries with backoff;
anything else Slack refuses is permanent and recorded as a `delivery.failed`
audit event (once per step and error code), leaving the request decidable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from rq import Retry, get_current_job
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.config import load_settings
from approvalbot.core.events import EventType, event_for
from approvalbot.core.machine import SYSTEM
from approvalbot.core.models import ApprovalRequest
from approvalbot.jobs.outbox import Subscriber
from approvalbot.slack import blocks
from approvalbot.slack.client import (
    error_code,
    is_rate_limited,
    is_transient,
    make_client,
    retry_after,
)
from approvalbot.slack.escape import mention
from approvalbot.slack.identity import ChannelDirectory, ChannelNotFound, SlackDirectory
from approvalbot.slack.settings import SlackConfig
from approvalbot.store import keys
from approvalbot.store.audit import AuditLog
from approvalbot.store.identities import IdentityStore
from approvalbot.store.requests import RequestStore

log = logging.getLogger("approvalbot.slack.delivery")

CHANNEL = "slack"
RETRY = Retry(max=8, interval=[1, 2, 5, 10, 30, 60, 120, 300])
RATE_LIMIT_RETRIES = 25
BUSY_RETRIES = 25
LOCK_MS = 60_000
LOCK_WAIT = 5.0
LOOKBACK = 600  # seconds of history searched before an uncertain post
LOOKUP_PAGES = 10

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RateLimited(Exception):
    def __init__(self, seconds: int):
        super().__init__(f"rate limited for {seconds} s")
        self.seconds = seconds


class Busy(Exception):
    """Another worker holds this request's delivery lock (or we lost ours)."""


class Failed(Exception):
    """Slack refused for good; recorded, and this step is skipped."""

    def __init__(self, step: str, code: str):
        super().__init__(f"{step}: {code}")
        self.step = step
        self.code = code


def state_key(request_id: str) -> str:
    return keys.delivery(request_id, CHANNEL)


def lock_key(request_id: str) -> str:
    return state_key(request_id) + ":lock"


@dataclass
class State:
    """What we know we (may have) posted for one request."""

    channel: str | None = None
    ts: str | None = None
    posting: float | None = None
    mirrored: int = 0
    mirroring: int | None = None
    rendered: str | None = None
    dm: str | None = None  # "sending", "sent" or "failed"
    dm_channel: str | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> State:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            channel=data.get("channel"),
            ts=data.get("ts"),
            posting=float(data["posting"]) if data.get("posting") else None,
            mirrored=int(data.get("mirrored") or 0),
            mirroring=int(data["mirroring"]) if data.get("mirroring") else None,
            rendered=data.get("rendered"),
            dm=data.get("dm"),
            dm_channel=data.get("dm_channel"),
            errors={k[4:]: v for k, v in data.items() if k.startswith("err:")},
        )

    def public(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ts": self.ts,
            "mirrored_seq": self.mirrored,
            "owner_notified": self.dm == "sent",
            "errors": dict(self.errors),
        }


async def load_state(redis: Redis, request_id: str) -> State:
    return State.parse(await redis.hgetall(state_key(request_id)))


class Syncer:
    """Brings one request's Slack presence up to date with its state and audit records."""

    def __init__(
        self,
        redis: Redis,
        client: AsyncWebClient,
        config: SlackConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.redis = redis
        self.client = client
        self.config = config
        self.clock = clock
        self.requests = RequestStore(redis)
        self.audit = AuditLog(redis)
        self.identities = IdentityStore(redis)
        self.people = SlackDirectory(client, redis)
        self.channels = ChannelDirectory(client, redis)
        self._release = redis.register_script(_RELEASE)
        self._refresh = redis.register_script(_REFRESH)
        self._token = ""
        self._request_id = ""

    # --- locking -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, request_id: str):
        token = secrets.token_hex(8)
        deadline = time.monotonic() + LOCK_WAIT
        while not await self.redis.set(lock_key(request_id), token, nx=True, px=LOCK_MS):
            if time.monotonic() > deadline:
                raise Busy(request_id)
            await asyncio.sleep(0.05)
        self._token, self._request_id = token, request_id
        try:
            yield
        finally:
            await self._release(keys=[lock_key(request_id)], args=[token])

    async def _still_mine(self) -> None:
        """Before every write to Slack: extend the lock, or stop if it was lost."""
        if not await self._refresh(keys=[lock_key(self._request_id)], args=[self._token, LOCK_MS]):
            raise Busy(self._request_id)

    async def _save(self, request_id: str, **fields: Any) -> None:
        mapping = {k: str(v) for k, v in fields.items() if v is not None}
        drop = [k for k, v in fields.items() if v is None]
        pipe = self.redis.pipeline(transaction=True)
        if mapping:
            pipe.hset(state_key(request_id), mapping=mapping)
        if drop:
            pipe.hdel(state_key(request_id), *drop)
        await pipe.execute()

    # --- the job -----------------------------------------------------------------

    async def sync(self, request_id: str) -> str:
        request = await self.requests.get(request_id)
        if request is None or request.policy.effect != "require_approval":
            return "nothing to do"  # settled by policy alone: no human needs to see it
        async with self._locked(request_id):
            await self.audit.seal()
            request = await self.requests.get(request_id) or request
            state = await load_state(self.redis, request_id)
            done = []
            if await self._step(request, state, "card", self._card):
                done.append("card")
                if await self._step(request, state, "thread", self._mirror):
                    done.append("thread")
            final = request.status.final and state.dm not in ("sent", "failed")
            if final and await self._step(request, state, "dm", self._dm):
                done.append("dm")
            return "synced " + ",".join(done) if done else "not delivered"

    async def _step(
        self,
        request: ApprovalRequest,
        state: State,
        step: str,
        work: Callable[[ApprovalRequest, State], Awaitable[None]],
    ) -> bool:
        """Run one step; permanent failures are recorded once, others propagate for a retry."""
        try:
            await work(request, state)
        except ChannelNotFound:
            await self._failed(request, state, step, ChannelNotFound.code)
            return False
        except Failed as failed:
            await self._failed(request, state, failed.step, failed.code)
            return False
        except SlackApiError as exc:
            if is_rate_limited(exc):
                raise RateLimited(retry_after(exc.response.headers)) from None
            if is_transient(exc):
                raise
            await self._failed(request, state, step, error_code(exc))
            return False
        if step in state.errors:
            await self._save(request.id, **{f"err:{step}": None})
            state.errors.pop(step)
        return True

    async def _failed(self, request: ApprovalRequest, state: State, step: str, code: str) -> None:
        """Record a delivery.failed audit event, once per step and error code."""
        if state.errors.get(step) == code:
            return
        log.warning("slack delivery of %s failed at %s: %s", request.id, step, code)
        fresh = await self.requests.get(request.id) or request
        event = event_for(
            fresh,
            EventType.DELIVERY_FAILED,
            SYSTEM,
            self.clock(),
            f"Slack {step} failed: {code}",
            channel=CHANNEL,
            step=step,
            error=code,
        )
        await self.audit.seal_committed(await self.requests.record(fresh, [event]))
        await self._save(request.id, **{f"err:{step}": code})
        state.errors[step] = code

    # --- the card ----------------------------------------------------------------

    async def render(self, request: ApprovalRequest) -> blocks.Rendered:
        emails = [a for a in request.policy.approvers if "@" in a]
        return blocks.card(request, await self.people.mentions_for(emails))

    async def _card(self, request: ApprovalRequest, state: State) -> None:
        rendered = await self.render(request)
        if state.ts is None:
            channel = state.channel or await self.channels.resolve(request.policy.channel or self.config.channel)
            if state.posting is not None:
                found = await self._find(channel, blocks.CARD_EVENT, request.id, None, state.posting)
                if found:
                    await self._remember_card(request.id, state, channel, found, None)
            if state.ts is None:
                await self._still_mine()
                state.posting = time.time()
                await self._save(request.id, posting=state.posting, channel=channel)
                answer = await self.client.chat_postMessage(
                    channel=channel,
                    text=rendered.text,
                    blocks=rendered.blocks,
                    metadata=blocks.card_metadata(request.id),
                    unfurl_links=False,
                    unfurl_media=False,
                )
                await self._remember_card(request.id, state, answer["channel"], answer["ts"], rendered.digest)
                return
        if state.rendered != rendered.digest:
            await self._still_mine()
            await self.client.chat_update(
                channel=state.channel, ts=state.ts, text=rendered.text, blocks=rendered.blocks
            )
            await self._save(request.id, rendered=rendered.digest)
            state.rendered = rendered.digest

    async def _remember_card(self, request_id: str, state: State, channel: str, ts: str, digest: str | None) -> None:
        await self._save(request_id, channel=channel, ts=ts, rendered=digest, posting=None)
        state.channel, state.ts, state.rendered, state.posting = channel, ts, digest, None

    # --- the thread --------------------------------------------------------------

    async def _mirror(self, request: ApprovalRequest, state: State) -> None:
        for seq in await self.requests.audit_seqs(request.id):
            if seq <= state.mirrored:
                continue
            record = None
            async for stored in self.audit.records(seq, seq):
                record = stored
            if record is None or record.hash is None:
                return  # not sealed yet: a later job mirrors it, still in order
            if state.mirroring == seq:
                found = await self._find(state.channel, blocks.AUDIT_EVENT, request.id, seq, None, thread=state.ts)
                if found:
                    await self._remember_mirrored(request.id, state, seq)
                    continue
            body = record.as_dict()
            reply = blocks.audit_reply(seq, record.hash, body, await self._mentions_for(request, body))
            await self._still_mine()
            await self._save(request.id, mirroring=seq)
            state.mirroring = seq
            await self.client.chat_postMessage(
                channel=state.channel,
                thread_ts=state.ts,
                text=reply.text,
                blocks=reply.blocks,
                metadata=blocks.audit_metadata(request.id, seq),
                unfurl_links=False,
                unfurl_media=False,
            )
            await self._remember_mirrored(request.id, state, seq)

    async def _remember_mirrored(self, request_id: str, state: State, seq: int) -> None:
        await self._save(request_id, mirrored=seq, mirroring=None)
        state.mirrored, state.mirroring = seq, None

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

    # --- the owner's DM ----------------------------------------------------------

    async def _dm(self, request: ApprovalRequest, state: State) -> None:
        user = await self.people.user_for(request.owner)
        if user is None:
            await self._save(request.id, dm="failed")
            state.dm = "failed"
            raise Failed("dm", "users_not_found")
        channel = state.dm_channel
        if channel is None:
            channel = (await self.client.conversations_open(users=user))["channel"]["id"]
            await self._save(request.id, dm_channel=channel)
            state.dm_channel = channel
        if state.dm == "sending" and await self._find(channel, blocks.OUTCOME_EVENT, request.id, None, None):
            await self._save(request.id, dm="sent")
            state.dm = "sent"
            return
        message = blocks.outcome_dm(request)
        await self._still_mine()
        await self._save(request.id, dm="sending")
        state.dm = "sending"
        await self.client.chat_postMessage(
            channel=channel,
            text=message.text,
            blocks=message.blocks,
            metadata=blocks.outcome_metadata(request.id),
            unfurl_links=False,
            unfurl_media=False,
        )
        await self._save(request.id, dm="sent")
        state.dm = "sent"

    # --- finding what an interrupted attempt may have posted ---------------------

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
                    return message.get("ts")
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None


# --- RQ entry point and outbox subscription ---------------------------------------


def async_redis_from(connection) -> Redis:
    """An asyncio client for the server the job's (sync) connection talks to."""
    kwargs = connection.connection_pool.connection_kwargs
    common = {k: kwargs[k] for k in ("db", "username", "password") if kwargs.get(k) is not None}
    if kwargs.get("path"):
        return Redis(unix_socket_path=kwargs["path"], **common)
    ssl = connection.connection_pool.connection_class.__name__ == "SSLConnection"
    return Redis(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379), ssl=ssl, **common)


async def _run(connection, config: SlackConfig, request_id: str) -> str:
    redis = async_redis_from(connection)
    try:
        return await Syncer(redis, make_client(config), config).sync(request_id)
    finally:
        await redis.aclose()


def sync_request(request_id: str, seq: int = 0) -> Any:
    """RQ job: sync one request with Slack. `seq` is the audit record that triggered it."""
    config = SlackConfig.from_settings(load_settings())
    if config is None:
        return "slack is off"
    job = get_current_job()
    try:
        return asyncio.run(_run(job.connection, config, request_id))
    except RateLimited as limited:
        log.info("slack rate limit while syncing %s: retrying in %s s", request_id, limited.seconds)
        return Retry(max=RATE_LIMIT_RETRIES, interval=max(limited.seconds, 1))
    except Busy:
        return Retry(max=BUSY_RETRIES, interval=1)


def subscribers(settings) -> list[Subscriber]:
    """The outbox subscription for Slack: one sync job per audit record, when Slack is on."""
    if SlackConfig.from_settings(settings) is None:
        return []
    return [
        Subscriber(
            name="slack",
            wants=lambda record: bool(record.get("request_id")),
            func=sync_request,
            args=lambda seq, record: (record["request_id"], seq),
            job_id=lambda seq, record: f"slack-{seq}",
            retry=RETRY,
        )
    ]


def failure_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r.get("type") == EventType.DELIVERY_FAILED and (r.get("data") or {}).get("channel") == CHANNEL
    ]


__all__ = ["State", "Syncer", "load_state", "subscribers", "sync_request"]
