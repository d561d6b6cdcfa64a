"""What Slack says about a user, and where a channel is: Slack lookups cached in Redis.

`users.info` answers are the verified facts identity rests on: the user's email
(Slack verifies members' addresses), their team, and whether they are deleted, a bot
or a stranger (Slack Connect). They are cached for at most `USER_TTL` seconds, and a
`user_change` event drops the entry at once (`forget`), so a changed, deleted or
moved account takes effect within a minute. Which person a user *is* is not cached
here: that is the linked identity in the person store, which an email change never
moves.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.core.models import EMAIL_RE
from approvalbot.slack.escape import USER_ID_RE
from approvalbot.slack.settings import CHANNEL_ID_RE, TEAM_ID_RE
from approvalbot.store import keys
from approvalbot.store.codec import text

USER_TTL = 60
MISS_TTL = 30
EMAIL_TTL = 3600
CHANNEL_TTL = 3600
AUTH_TTL = 24 * 3600
CHANNEL_PAGES = 20


def user_key(user_id: str) -> str:
    return f"{keys.PREFIX}slack:user:{user_id}"


def email_key(email: str) -> str:
    return f"{keys.PREFIX}slack:email:{email}"


def channel_key(name: str) -> str:
    return f"{keys.PREFIX}slack:channel:{name}"


AUTH_KEY = f"{keys.PREFIX}slack:auth"


class ChannelNotFound(LookupError):
    code = "channel_not_found"


@dataclass(frozen=True)
class SlackProfile:
    """The part of a `users.info` answer identity needs; `email` only when Slack shows a plausible one."""

    user_id: str
    team_id: str | None
    enterprise_id: str | None
    email: str | None
    deleted: bool = False
    is_bot: bool = False
    is_stranger: bool = False

    @property
    def member(self) -> bool:
        """A live human account of a workspace (not deleted, not a bot, not a Slack Connect stranger)."""
        return not (self.deleted or self.is_bot or self.is_stranger)

    @classmethod
    def from_user(cls, user_id: str, user: dict[str, object]) -> SlackProfile:
        profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
        raw_email = profile.get("email") if isinstance(profile, dict) else None
        email = raw_email.strip().lower() if isinstance(raw_email, str) and EMAIL_RE.match(raw_email.strip()) else None
        enterprise = user.get("enterprise_user")
        enterprise_id = enterprise.get("enterprise_id") if isinstance(enterprise, dict) else None
        team = user.get("team_id")
        return cls(
            user_id=user_id,
            team_id=team if isinstance(team, str) and TEAM_ID_RE.match(team) else None,
            enterprise_id=enterprise_id if isinstance(enterprise_id, str) and TEAM_ID_RE.match(enterprise_id) else None,
            email=email,
            deleted=bool(user.get("deleted")),
            is_bot=bool(user.get("is_bot")),
            is_stranger=bool(user.get("is_stranger")),
        )


def _error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def _cached(raw: bytes | str, field: str) -> str | None:
    """One string field of a cached JSON answer (`null` there is a cached miss)."""
    value = json.loads(raw).get(field)
    return value if isinstance(value, str) else None


class SlackDirectory:
    def __init__(self, client: AsyncWebClient, redis: Redis, ttl: int = USER_TTL):
        self.client = client
        self.redis = redis
        self.ttl = min(ttl, USER_TTL)

    async def profile(self, user_id: str) -> SlackProfile | None:
        """What Slack says about a user now (cached <= 60 s); None for ids Slack does not know.

        Raises SlackApiError when Slack cannot answer: the caller must not guess.
        """
        if not USER_ID_RE.match(user_id or ""):
            return None
        cached = await self.redis.get(user_key(user_id))
        if cached is not None:
            data = json.loads(cached)
            return SlackProfile(**data) if data else None
        try:
            answer = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            if _error(exc) in ("user_not_found", "user_not_visible"):
                await self.redis.set(user_key(user_id), "null", ex=MISS_TTL)
                return None
            raise
        user = answer.get("user")
        found = SlackProfile.from_user(user_id, user if isinstance(user, dict) else {})
        await self.redis.set(user_key(user_id), json.dumps(asdict(found)), ex=self.ttl)
        return found

    async def forget(self, user_id: str, email: str | None = None) -> None:
        """Drop what is cached about a user (Slack sent `user_change`): the next action asks Slack again."""
        doomed = [user_key(user_id)]
        if email:
            doomed.append(email_key(email.strip().lower()))
        await self.redis.delete(*doomed)

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
        await self.redis.set(email_key(email), json.dumps({"user": user_id}), ex=EMAIL_TTL if user_id else MISS_TTL)
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

    async def _auth(self) -> dict[str, str]:
        """`auth.test` for our own token (cached a day: a token's team and bot never change)."""
        cached = await self.redis.get(AUTH_KEY)
        if cached is not None:
            return {k: v for k, v in json.loads(cached).items() if isinstance(v, str)}
        answer = await self.client.auth_test()
        found = {k: str(answer.get(k) or "") for k in ("bot_id", "team_id", "enterprise_id")}
        await self.redis.set(AUTH_KEY, json.dumps(found), ex=AUTH_TTL)
        return found

    async def bot_id(self) -> str | None:
        """Our own bot id, to recognise our messages when looking one up after a crash."""
        return (await self._auth()).get("bot_id") or None

    async def own_team(self) -> str | None:
        """The workspace our bot token belongs to: the one workspace served without configuration."""
        team = (await self._auth()).get("team_id") or ""
        return team if TEAM_ID_RE.match(team) else None


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
