"""Slack threads as audit witnesses: the records the delivery engine mirrored, read back.

Each mirrored record is a thread reply whose text starts `#<seq> <hash12>` and whose
message metadata names the request and seq (`blocks.audit_reply`, `blocks.audit_metadata`).
Only replies our bot posted count (anyone in the channel can post text that looks like
a record, nobody else can post as our bot), and the metadata must agree with the text
and with the thread's request. `conversations.replies` is read with
`include_all_metadata`, 200 a page and at most `MAX_PAGES` pages per thread.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.audit.witness import HASH_PREFIX, Unread, Witnessed
from approvalbot.channels import WitnessUnavailable
from approvalbot.slack import blocks
from approvalbot.slack.client import error_code, make_client
from approvalbot.slack.identity import SlackDirectory
from approvalbot.slack.settings import SlackConfig
from approvalbot.store.deliveries import PostedThread

MAX_PAGES = 25
PAGE = 200
# A CLI may wait out Slack's rate limit for conversations.replies (tier 3) longer than a job would.
MAX_WAIT = 30
RECORD_TEXT = re.compile(rf"#(\d+) ([0-9a-f]{{{HASH_PREFIX}}})\b")


class SlackWitness:
    """Reads the threads of posted cards with the bot token."""

    def __init__(self, config: SlackConfig, client: AsyncWebClient | None = None):
        self.config = config
        self.client = client or make_client(config, timeout=20, max_wait=MAX_WAIT)

    async def close(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None and not session.closed:
            await session.close()

    async def witnessed(self, redis: Redis, threads: Sequence[PostedThread]) -> AsyncIterator[Witnessed | Unread]:
        try:
            bot = await SlackDirectory(self.client, redis).bot_id()
        except SlackApiError as exc:
            raise WitnessUnavailable(
                f"Slack refused auth.test ({error_code(exc)}): check SLACK_BOT_TOKEN and SLACK_API_URL"
            ) from None
        if not bot:
            raise WitnessUnavailable("Slack did not say which bot the token belongs to (auth.test has no bot_id)")
        for thread in threads:
            channel, ts = thread.state.where, thread.state.message_id
            where = f"{channel}/{ts}"
            if not channel:
                yield Unread(thread.request_id, where, "no_channel_recorded")
                continue
            try:
                async for message in self._replies(channel, ts):
                    found = _witness(message, thread.request_id, bot, channel)
                    if found is not None:
                        yield found
            except SlackApiError as exc:
                yield Unread(thread.request_id, where, error_code(exc))

    async def _replies(self, channel: str, ts: str) -> AsyncIterator[dict[str, Any]]:
        cursor = None
        for _ in range(MAX_PAGES):
            args: dict[str, Any] = {"channel": channel, "ts": ts, "include_all_metadata": True, "limit": PAGE}
            if cursor:
                args["cursor"] = cursor
            page = await self.client.conversations_replies(**args)
            for message in page.get("messages") or []:
                if isinstance(message, dict):
                    yield message
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return


def _witness(message: dict[str, Any], request_id: str, bot: str, channel: str) -> Witnessed | None:
    """The record a reply witnesses: our bot's, with audit metadata for this request agreeing with its text."""
    if message.get("bot_id") != bot or message.get("subtype") == "message_deleted":
        return None
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    if meta.get("event_type") != blocks.AUDIT_EVENT or payload.get("request_id") != request_id:
        return None
    seq = payload.get("seq")
    shown = RECORD_TEXT.match(str(message.get("text") or ""))
    if not isinstance(seq, int) or isinstance(seq, bool) or shown is None or int(shown.group(1)) != seq:
        return None
    return Witnessed(request_id, seq, shown.group(2), f"{channel}/{message.get('ts', '')}")


def build(config: SlackConfig | None) -> SlackWitness:
    if config is None:
        raise WitnessUnavailable("Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET to read its threads")
    return SlackWitness(config)
