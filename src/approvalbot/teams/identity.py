"""Who clicked: a Teams user resolved to the email every other channel uses.

The email comes from the Bot Framework connector (`TeamsInfo.get_member`), on a
request Teams itself authenticated; never from a name or email in the activity's
payload. Results are cached in Redis by AAD object id (tenant-scoped). When the
connector cannot be reached, a cached answer (up to a week old) is used, keyed
only by `from.aadObjectId`; with no cached answer the clicker stays unresolved and
the core refuses them as an unknown approver.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.core.teams import TeamsInfo
from botbuilder.schema import Activity
from redis.asyncio import Redis

from approvalbot.core.models import Actor, Approver, Channel, normalize_email
from approvalbot.service import human_actor
from approvalbot.store import codec, keys
from approvalbot.store.identities import IdentityStore
from approvalbot.teams import sdk

log = logging.getLogger("approvalbot.teams.identity")

FRESH_SECONDS = 3600
KEEP_SECONDS = 7 * 24 * 3600
SEEN = keys.PREFIX + "teams:seen"
SEEN_KEEP = 500


def member_key(tenant_id: str | None, who: str) -> str:
    return f"{keys.PREFIX}teams:member:{tenant_id or '-'}:{who}"


@dataclass(frozen=True)
class Clicker:
    user_id: str  # the Teams user id ("29:…"), what refresh.userIds lists
    aad_object_id: str | None
    tenant_id: str | None
    email: str | None  # None: could not be resolved
    source: str  # "teams", "cache", "stale-cache" or "none"

    @property
    def channel_user(self) -> str:
        return self.aad_object_id or self.user_id


class IdentityResolver:
    def __init__(self, redis: Redis):
        self.redis = redis
        self.identities = IdentityStore(redis)

    async def resolve(self, turn_context: TurnContext) -> Clicker:
        activity = turn_context.activity
        sender = activity.from_property
        user_id = (sender.id if sender else "") or ""
        aad = (getattr(sender, "aad_object_id", None) or None) if sender else None
        tenant = tenant_of(activity)
        key = member_key(tenant, aad or user_id)
        cached = await self._cached(key)
        if cached and time.time() - cached["at"] < FRESH_SECONDS:
            return await self._seen(Clicker(user_id, aad, tenant, cached["email"], "cache"))
        email = None
        try:
            sdk.connector(turn_context)  # our timeout, no hidden retries
            member = await TeamsInfo.get_member(turn_context, user_id)
            member_aad = getattr(member, "aad_object_id", None)
            if aad and member_aad and member_aad != aad:
                log.warning("Teams member lookup returned another AAD object id; not trusting it")
            else:
                email = _email_of(member)
        except Exception as exc:
            log.warning("Teams member lookup failed (%s)", sdk.classify(exc) or exc.__class__.__name__)
            if cached:
                return await self._seen(Clicker(user_id, aad, tenant, cached["email"], "stale-cache"))
            return Clicker(user_id, aad, tenant, None, "none")
        if email is None:
            return Clicker(user_id, aad, tenant, None, "none")
        await self.redis.set(key, json.dumps({"email": email, "user_id": user_id, "at": time.time()}), ex=KEEP_SECONDS)
        return await self._seen(Clicker(user_id, aad, tenant, email, "teams"))

    async def _cached(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return data if data.get("email") else None
        except ValueError:
            return None

    async def _seen(self, clicker: Clicker) -> Clicker:
        """Remember recent Teams users, so cards can ask their clients to auto-refresh."""
        if clicker.user_id:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(SEEN, {clicker.user_id: time.time()})
            pipe.zremrangebyrank(SEEN, 0, -SEEN_KEEP - 1)
            await pipe.execute()
        return clicker

    async def approver_for(self, clicker: Clicker) -> Approver | None:
        return await self.identities.get_approver(clicker.email) if clicker.email else None

    @staticmethod
    def actor_for(clicker: Clicker, approver: Approver | None) -> Actor:
        """The actor the core judges: a registered approver, or a person known only by email."""
        if approver is not None and approver.email == clicker.email:
            return human_actor(approver, Channel.TEAMS, clicker.channel_user)
        return Actor(
            kind="human",
            id=f"teams:{clicker.channel_user}",
            email=clicker.email,
            channel=Channel.TEAMS,
            channel_user=clicker.channel_user,
        )


def tenant_of(activity: Activity) -> str | None:
    """Teams always sends channelData.tenant.id; the SDK's conversation.tenant_id may be missing."""
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = (data.get("tenant") or {}).get("id")
    if not tenant and activity.conversation is not None:
        tenant = activity.conversation.tenant_id
    return tenant or None


async def recent_user_ids(redis: Redis, limit: int = 60) -> list[str]:
    return [codec.member(u) for u in await redis.zrevrange(SEEN, 0, limit - 1)]


def _email_of(member: object) -> str | None:
    for candidate in (getattr(member, "email", None), getattr(member, "user_principal_name", None)):
        if candidate:
            try:
                return normalize_email(candidate)
            except ValueError:
                continue
    return None
