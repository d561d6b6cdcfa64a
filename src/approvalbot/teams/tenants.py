"""Only our tenants: an activity from any other Microsoft Entra tenant is refused before the bot sees it.

A multi-tenant bot can be installed by anyone, in any tenant, and the Bot Framework
token proves only that Teams sent the activity, not from which organisation. So
every activity names its tenant (`channelData.tenant.id`, else
`conversation.tenantId`), and one from a tenant not in the settings is answered 403
and changes nothing: no conversation remembered, no reply, no member lookup, no
decision. The gate runs inside `CloudAdapter.process`, after the token check, so a
bad token is still a 401 and only authenticated (or, in dev mode, local) traffic
can cause an audit record.

The refusal is audited as `identity.refused` (`foreign_workspace`), at most once per
tenant, user and minute and at most `REFUSALS_PER_MINUTE` in all, so a flood of
foreign activities cannot grow the audit log without bound.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import Activity
from redis.asyncio import Redis

from approvalbot.core.errors import Refusal
from approvalbot.core.models import ChatIdentity
from approvalbot.service import ApprovalService
from approvalbot.store import keys
from approvalbot.teams.settings import TeamsSettings, tenant_key

log = logging.getLogger("approvalbot.teams.tenants")

REFUSAL_WINDOW = 60  # seconds: one audit record per identity and refusal code in this window
REFUSALS_PER_MINUTE = 100  # and at most this many such records per minute, all identities together
MAX_ID = 128  # characters of a sender-chosen id kept in an audit record


def tenant_of(activity: Activity) -> str | None:
    """The activity's tenant, lower case; None when it names none or two different ones.

    Teams always sends `channelData.tenant.id`. Teams spells the conversation's field
    `tenantId` while botbuilder 4.17 maps `tenantID`, so msrest leaves Teams' value in
    `additional_properties`: both are read. Two different tenants in one activity is not
    something Teams sends: refused.
    """
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = data.get("tenant")
    from_data = tenant_key(tenant.get("id") if isinstance(tenant, dict) and isinstance(tenant.get("id"), str) else "")
    conversation = activity.conversation
    extra = getattr(conversation, "additional_properties", None) or {}
    raw = (getattr(conversation, "tenant_id", None) or extra.get("tenantId")) if conversation is not None else None
    from_conversation = tenant_key(raw if isinstance(raw, str) else "")
    if from_data and from_conversation and from_data != from_conversation:
        return None
    return from_data or from_conversation or None


def sender_identity(activity: Activity, tenant: str | None) -> ChatIdentity:
    """The identity an activity claims (tenant + AAD object id, else the Teams user id), for audit records."""
    sender = activity.from_property
    who = (getattr(sender, "aad_object_id", None) or getattr(sender, "id", None) or "unknown") if sender else "unknown"
    return ChatIdentity(channel="teams", workspace=(tenant or None) and tenant[:MAX_ID], user_id=str(who)[:MAX_ID])


async def audit_refusal(
    service: ApprovalService, redis: Redis, identity: ChatIdentity, code: Refusal, detail: str
) -> bool:
    """Record `identity.refused` once per identity, code and minute, within a global budget; True if written."""
    digest = hashlib.sha256(f"{code.value}|{identity.key}".encode()).hexdigest()[:32]
    if not await redis.set(f"{keys.PREFIX}teams:refused:{digest}", "1", nx=True, ex=REFUSAL_WINDOW):
        return False
    budget = f"{keys.PREFIX}teams:refused:minute:{int(time.time() // 60)}"
    pipe = redis.pipeline(transaction=True)
    pipe.incr(budget)
    pipe.expire(budget, 2 * REFUSAL_WINDOW)
    count, _ = await pipe.execute()
    if int(count) > REFUSALS_PER_MINUTE:
        log.warning("Teams: refusal audit budget spent this minute; not recording %s", code.value)
        return False
    await service.identity_refused(identity, code.value, detail)
    return True


class TenantGate:
    """Wraps the bot for ONE inbound activity; `refused` tells the endpoint to answer 403."""

    def __init__(self, bot: Any, ts: TeamsSettings, service: ApprovalService, redis: Redis):
        self.bot = bot
        self.ts = ts
        self.service = service
        self.redis = redis
        self.refused = False

    async def on_turn(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        tenant = tenant_of(activity)
        if self.ts.allows(tenant):
            await self.bot.on_turn(turn_context)
            return
        self.refused = True
        identity = sender_identity(activity, tenant)
        detail = f"a Teams {activity.type or 'activity'} from a tenant that is not allowed"
        if await audit_refusal(self.service, self.redis, identity, Refusal.FOREIGN_WORKSPACE, detail):
            log.warning("Teams: refused a %s from tenant %s (not allowed)", activity.type, identity.workspace or "-")
