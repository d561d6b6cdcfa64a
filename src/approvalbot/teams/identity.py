"""Who clicked: a Teams user (tenant + AAD object id) resolved to a person.

A Teams identity is `ChatIdentity("teams", <tenant id>, <AAD object id>)`, and the
person behind it is the one it is linked to (`PersonStore.by_identity`), by id: an
email never identifies a Teams user on its own, and a later change of the account's
address never moves the identity to someone else.

An identity not linked yet is linked on first use only when the Bot Framework
connector (`TeamsInfo.get_member`, an authenticated call, for the tenant the activity
came from) returns the same AAD object id and tenant, and its UPN or email is exactly
one person's primary email or alias (`PersonStore.link_on_first_use`). Otherwise the
clicker is refused with a message naming `approvalbot people link`, and the refusal
is audited (`identity.refused`, bounded). A name or email in the activity payload is
never read. Connector answers are cached for at most `FRESH_SECONDS`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from botbuilder.core import TurnContext
from botbuilder.core.teams import TeamsInfo
from redis.asyncio import Redis

from approvalbot.core.addresses import canonical_or_none
from approvalbot.core.errors import Refusal
from approvalbot.core.models import Actor, Channel, ChatIdentity, Person
from approvalbot.service import ApprovalService, human_actor
from approvalbot.store import codec, keys
from approvalbot.store.people import LinkRefused, link_command
from approvalbot.teams import sdk
from approvalbot.teams.settings import tenant_key
from approvalbot.teams.tenants import audit_refusal, tenant_of

log = logging.getLogger("approvalbot.teams.identity")

FRESH_SECONDS = 60  # issue 11: cached identity data lives at most a minute
SEEN_KEEP = 500


def member_key(tenant_id: str | None, aad: str) -> str:
    return f"{keys.PREFIX}teams:member:{tenant_id or '-'}:{aad}"


def seen_key(tenant_id: str | None) -> str:
    """Recent Teams users of ONE tenant: a card only ever lists users of its conversation's tenant."""
    return f"{keys.PREFIX}teams:seen:{tenant_id or '-'}"


@dataclass(frozen=True)
class Clicker:
    """Whoever sent an activity, and the person they are (None: not linked and not linkable now)."""

    user_id: str  # the Teams user id ("29:…"), what refresh.userIds lists
    aad_object_id: str | None  # lower case
    tenant_id: str | None  # lower case; always an allowed tenant (the gate refused the others)
    person: Person | None
    email: str | None = None  # the address the connector verified, if it was asked; shown, never trusted
    refused: LinkRefused | None = None  # why no person: the identity could not be linked
    source: str = "none"  # "link", "teams" (just linked), "cache" or "none"

    @property
    def channel_user(self) -> str:
        return self.aad_object_id or self.user_id

    @property
    def identity(self) -> ChatIdentity | None:
        if not (self.aad_object_id and self.tenant_id):
            return None
        return ChatIdentity(channel="teams", workspace=self.tenant_id, user_id=self.aad_object_id)

    def actor(self) -> Actor:
        """The actor the core judges: the linked person through this identity, or an unknown human."""
        if self.person is not None:
            return human_actor(self.person, Channel.TEAMS, self.channel_user, workspace=self.tenant_id)
        return Actor(
            kind="human",
            id=f"teams:{self.channel_user}",
            channel=Channel.TEAMS,
            channel_user=self.channel_user,
            workspace=self.tenant_id,
        )


class IdentityResolver:
    def __init__(self, service: ApprovalService, redis: Redis):
        self.service = service
        self.redis = redis
        self.people = service.people

    async def resolve(self, turn_context: TurnContext) -> Clicker:
        clicker = await self._resolve(turn_context)
        if clicker.person is not None:
            await self._seen(clicker.tenant_id, clicker.user_id)
        return clicker

    async def _resolve(self, turn_context: TurnContext) -> Clicker:
        activity = turn_context.activity
        sender = activity.from_property
        user_id = (sender.id if sender else "") or ""
        aad = tenant_key(getattr(sender, "aad_object_id", None) if sender else None) or None
        tenant = tenant_of(activity)
        if not (aad and tenant):
            return Clicker(user_id, aad, tenant, None)
        identity = ChatIdentity(channel="teams", workspace=tenant, user_id=aad)
        linked = await self.people.by_identity(identity)
        addresses, source = await self._verified(turn_context, tenant, aad, user_id)
        if linked is not None:
            if addresses:  # audits once if the account's address moved away from its person
                await self.people.link_on_first_use(identity, addresses[0])
            return Clicker(user_id, aad, tenant, linked, addresses[0] if addresses else None, source="link")
        if not addresses:
            return Clicker(user_id, aad, tenant, None, source=source)
        result = await self._link(identity, addresses)
        if isinstance(result, LinkRefused):
            await audit_refusal(
                self.service,
                self.redis,
                identity,
                Refusal.IDENTITY_UNKNOWN,
                f"Teams identity not linked ({result.code}): {result.message}",
            )
            return Clicker(user_id, aad, tenant, None, addresses[0], result, source)
        return Clicker(user_id, aad, tenant, result, addresses[0], source="teams")

    async def _link(self, identity: ChatIdentity, addresses: list[str]) -> Person | LinkRefused:
        """Link when the verified addresses (UPN, email) name exactly one person; refuse when they name two."""
        found = {p.id: (p, a) for a in addresses if (p := await self.people.by_email(a)) is not None}
        if len(found) > 1:
            return LinkRefused(
                "ambiguous",
                f"this Teams account's addresses ({', '.join(addresses)}) belong to different people; "
                f"an admin can run `{link_command(identity)}`",
            )
        address = next(iter(found.values()))[1] if found else addresses[0]
        return await self.people.link_on_first_use(identity, address)

    async def _verified(self, turn_context: TurnContext, tenant: str, aad: str, user_id: str) -> tuple[list[str], str]:
        """The member's canonical UPN and email as the connector reports them for this tenant (cached ≤ 60 s)."""
        key = member_key(tenant, aad)
        raw = await self.redis.get(key)
        if raw:
            try:
                cached = json.loads(raw)
                if time.time() - float(cached["at"]) < FRESH_SECONDS:
                    return [str(a) for a in cached["addresses"]], "cache"
            except (ValueError, KeyError, TypeError):
                pass
        try:
            sdk.connector(turn_context)  # our timeout, no hidden retries
            member = await TeamsInfo.get_member(turn_context, user_id)
        except Exception as exc:
            log.warning("Teams member lookup failed (%s)", sdk.classify(exc) or exc.__class__.__name__)
            return [], "none"
        if tenant_key(getattr(member, "aad_object_id", None)) != aad:
            log.warning("Teams member lookup returned another AAD object id; not trusting it")
            return [], "none"
        member_tenant = tenant_key(getattr(member, "tenant_id", None))
        if member_tenant and member_tenant != tenant:
            log.warning("Teams member lookup returned another tenant; not trusting it")
            return [], "none"
        addresses = _addresses_of(member)
        await self.redis.set(key, json.dumps({"addresses": addresses, "at": time.time()}), ex=FRESH_SECONDS)
        return addresses, "teams"

    async def _seen(self, tenant: str | None, user_id: str) -> None:
        """Remember recent Teams users per tenant, so cards can ask their clients to auto-refresh."""
        if user_id and tenant:
            key = seen_key(tenant)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(key, {user_id: time.time()})
            pipe.zremrangebyrank(key, 0, -SEEN_KEEP - 1)
            await pipe.execute()


async def recent_user_ids(redis: Redis, tenant: str | None, limit: int = 60) -> list[str]:
    """The Teams users of this tenant who used the bot most recently (none for no tenant)."""
    if not tenant:
        return []
    return [codec.member(u) for u in await redis.zrevrange(seen_key(tenant_key(tenant)), 0, limit - 1)]


def _addresses_of(member: object) -> list[str]:
    """UPN first (the sign-in name Entra guarantees unique in the tenant), then email; canonical, distinct."""
    out: list[str] = []
    for candidate in (getattr(member, "user_principal_name", None), getattr(member, "email", None)):
        address = canonical_or_none(candidate) if isinstance(candidate, str) and candidate else None
        if address and address not in out:
            out.append(address)
    return out
