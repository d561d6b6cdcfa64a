"""Who a Slack user is, and where a channel is: Slack lookups cached in Redis.

The clicker's identity is the user id in the signed payload, turned into an
email by `users.info` (Slack verifies workspace members' emails) and matched to
approvalbot's approvers by that email, so one person is one identity in every
channel. Answers are cached with a TTL: a changed email or a deleted account
takes effect within the TTL, and negative answers are cached for less.
"""

from __future__ import annotations

import json
import re

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.core.models import EMAIL_RE
from approvalbot.slack.escape import USER_ID_RE
from approvalbot.slack.settings import CHANNEL_ID_RE
from approvalbot.store import keys
from approvalbot.store.codec import text

USER_TTL = 3600
MISS_TTL = 300
CHANNEL_TTL = 3600
CHANNEL_PAGES = 20


def user_key(user_id: str) -> str:
    return f"{keys.PREFIX}slack:user:{user_id}"


def email_key(email: str) -> str:
    return f"{keys.PREFIX}slack:email:{email}"


def channel_key(name: str) -> str:
    return f"{keys.PREFIX}slack:channel:{name}"


BOT_KEY = f"{keys.PREFIX}slack:bot"


class ChannelNotFound(LookupError):
    code = "channel_not_found"


def _cached(raw: bytes | str, field: str) -> str | None:
    """One string field of a cached JSON answer (`null` there is a cached miss)."""
    value = json.loads(raw).get(field)
    return value if isinstance(value, str) else None


def _error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


class SlackDirectory:
    def __init__(self, client: AsyncWebClient, redis: Redis, ttl: int = USER_TTL):
        self.client = client
        self.redis = redis
        self.ttl = ttl

    async def email_of(self, user_id: str) -> str | None:
        """The verified email of a workspace member; None for bots, deleted users and unknown ids."""
        if not USER_ID_RE.match(user_id or ""):
            return None
        cached = await self.redis.get(user_key(user_id))
        if cached is not None:
            return _cached(cached, "email")
        try:
            answer = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            if _error(exc) in ("user_not_found", "user_not_visible"):
                await self.redis.set(user_key(user_id), json.dumps({"email": None}), ex=MISS_TTL)
                return None
            raise
        user = answer.get("user") or {}
        email = (user.get("profile") or {}).get("email")
        if user.get("deleted") or user.get("is_bot") or not email or not EMAIL_RE.match(email.strip()):
            email = None
        else:
            email = email.strip().lower()
        await self.redis.set(user_key(user_id), json.dumps({"email": email}), ex=self.ttl if email else MISS_TTL)
        return email

    async def user_for(self, email: str) -> str | None:
        """The Slack user id for an email (for mentions and DMs); None if not in the workspace."""
        email = email.strip().lower()
        cached = await self.redis.get(email_key(email))
        if cached is not None:
            return _cached(cached, "user") or None
        try:
            answer = await self.client.users_lookupByEmail(email=email)
        except SlackApiError as exc:
            if _error(exc) in ("users_not_found", "user_not_found"):
                await self.redis.set(email_key(email), json.dumps({"user": None}), ex=MISS_TTL)
                return None
            raise
        user = answer.get("user") or {}
        user_id = user.get("id") if not user.get("deleted") else None
        if user_id and not USER_ID_RE.match(user_id):
            user_id = None
        await self.redis.set(email_key(email), json.dumps({"user": user_id}), ex=self.ttl if user_id else MISS_TTL)
        return user_id

    async def mentions_for(self, emails: list[str], limit: int = 10) -> dict[str, str]:
        """Best effort: emails that resolve to Slack users; lookup failures just mean no mention."""
        found: dict[str, str] = {}
        for email in emails[:limit]:
            if "@" not in email:
                continue
            try:
                user_id = await self.user_for(email)
            except SlackApiError:
                continue
            if user_id:
                found[email] = user_id
        return found

    async def bot_id(self) -> str | None:
        """Our own bot id, to recognise our messages when looking one up after a crash."""
        cached = await self.redis.get(BOT_KEY)
        if cached is not None:
            return text(cached) or None
        answer = await self.client.auth_test()
        bot = answer.get("bot_id") or ""
        await self.redis.set(BOT_KEY, bot, ex=24 * 3600)
        return bot or None


class ChannelDirectory:
    """Channel names (#approvals) to ids (C0123...), which chat.update and history need."""

    def __init__(self, client: AsyncWebClient, redis: Redis):
        self.client = client
        self.redis = redis

    async def resolve(self, target: str) -> str:
        target = target.strip()
        if CHANNEL_ID_RE.match(target):
            return target
        name = target.lstrip("#").lower()
        if not re.match(r"^[a-z0-9][a-z0-9_\-]{0,79}$", name):
            raise ChannelNotFound(target)
        cached = await self.redis.get(channel_key(name))
        if cached:
            return text(cached)
        cursor = None
        for _ in range(CHANNEL_PAGES):
            page = await self.client.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
            )
            for channel in page.get("channels") or []:
                channel_id = channel.get("id")
                if channel.get("name") == name and isinstance(channel_id, str) and CHANNEL_ID_RE.match(channel_id):
                    await self.redis.set(channel_key(name), channel_id, ex=CHANNEL_TTL)
                    return channel_id
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        raise ChannelNotFound(target)
