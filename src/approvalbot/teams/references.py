"""Where cards can go: the Teams conversations the bot was added to, kept in Redis.

A conversation reference is stored when the bot is added to a team (its channel) or
a group chat, and removed when it is removed. Policy rules route a request to
references by name (`channel: "#sec-approvals"` matches a channel named
`sec-approvals`, `Team/sec-approvals`, or the conversation id); with no routing rule
cards go to every team channel, never to personal or group chats. Only conversations
of allowed tenants are ever targets, even if a reference from another tenant is stored
(by an older version, or before the tenant list changed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from approvalbot.store import codec, keys
from approvalbot.teams.settings import tenant_key

CHANNEL, GROUP_CHAT, PERSONAL = "channel", "groupChat", "personal"
STORED_KINDS = (CHANNEL, GROUP_CHAT)

REFS = keys.PREFIX + "teams:convs"


def conversation_hash(conversation_id: str) -> str:
    """Short stable name for a conversation in Redis keys and job state (ids hold ':', '@', ';')."""
    return hashlib.sha256(conversation_id.encode()).hexdigest()[:16]


def ref_key(conv_hash: str) -> str:
    return f"{keys.PREFIX}teams:conv:{conv_hash}"


def delivery_channel(conv_hash: str) -> str:
    """The `channel` part of `keys.delivery(request_id, channel)` for one Teams conversation."""
    return f"teams:{conv_hash}"


def normalize(name: str) -> str:
    return name.strip().lstrip("#").strip().lower()


@dataclass
class ConversationRef:
    id: str
    kind: str
    name: str
    service_url: str
    reference: dict[str, Any]  # a serialized botbuilder ConversationReference
    team: str | None = None
    team_id: str | None = None
    # The team's Microsoft 365 group id (channelData.team.aadGroupId): Graph names teams by it.
    aad_group_id: str | None = None
    tenant_id: str | None = None
    added_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    added_by: str | None = None
    # Set when the connector answered 403/404 for this conversation (the bot was removed, the
    # channel deleted): nothing more is posted here until the bot is added again.
    gone: str = ""
    gone_at: str = ""

    @property
    def state(self) -> str:
        return f"gone ({self.gone} since {self.gone_at[:19]}Z)" if self.gone else "active"

    @property
    def hash(self) -> str:
        return conversation_hash(self.id)

    @property
    def display(self) -> str:
        return f"{self.team}/{self.name}" if self.team else self.name

    def names(self) -> set[str]:
        out = {normalize(self.name), normalize(self.id)}
        if self.team:
            out.add(normalize(f"{self.team}/{self.name}"))
        return {n for n in out if n}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ConversationRef:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class ReferenceStore:
    def __init__(self, redis: Redis):
        self.redis = redis

    async def save(self, ref: ConversationRef) -> bool:
        """Store or refresh a reference (clearing `gone`); keeps the first `added_at`. True when new."""
        existing = await self.get(ref.hash)
        if existing is not None:
            ref.added_at = existing.added_at
            ref.added_by = existing.added_by or ref.added_by
            if not ref.team:
                ref.team = existing.team
            ref.aad_group_id = ref.aad_group_id or existing.aad_group_id
            if ref.name in ("", ref.id) and existing.name:
                ref.name = existing.name
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(ref_key(ref.hash), ref.to_json())
        pipe.sadd(REFS, ref.hash)
        await pipe.execute()
        return existing is None or bool(existing.gone)  # added back after it was gone: welcome again

    async def remove(self, conversation_id: str) -> bool:
        h = conversation_hash(conversation_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(ref_key(h))
        pipe.srem(REFS, h)
        deleted, _ = await pipe.execute()
        return bool(deleted)

    async def forget_team(self, team_id: str) -> list[ConversationRef]:
        """Forget every conversation of a team (the bot left it, or it was deleted or archived)."""
        gone = [r for r in await self.all() if r.team_id == team_id or r.id == team_id]
        for ref in gone:
            await self.remove(ref.id)
        return gone

    async def mark_gone(self, conv_hash: str, code: str) -> bool:
        """The connector refused this conversation for good; True when it was not marked before."""
        ref = await self.get(conv_hash)
        if ref is None or ref.gone:
            return False
        ref.gone, ref.gone_at = code, datetime.now(UTC).isoformat()
        await self.redis.set(ref_key(ref.hash), ref.to_json())
        return True

    async def rename(self, conversation_id: str, name: str | None = None, team: str | None = None) -> None:
        ref = await self.get(conversation_hash(conversation_id))
        if ref is None:
            return
        if name:
            ref.name = name
        if team:
            ref.team = team
        await self.redis.set(ref_key(ref.hash), ref.to_json())

    async def get(self, conv_hash: str) -> ConversationRef | None:
        raw = await self.redis.get(ref_key(conv_hash))
        return ConversationRef.from_json(raw) if raw else None

    async def all(self) -> list[ConversationRef]:
        hashes = sorted(codec.text(h) for h in await self.redis.smembers(REFS))
        if not hashes:
            return []
        raws = await self.redis.mget([ref_key(h) for h in hashes])
        refs = [ConversationRef.from_json(r) for r in raws if r]
        return sorted(refs, key=lambda r: (r.kind, r.display.lower(), r.id))

    async def route(self, hint: str | None, tenants: Collection[str]) -> tuple[list[ConversationRef], bool]:
        """Targets for a request among the conversations of `tenants` (lower case), and whether a
        routing hint was given but matched nothing there."""
        refs = [r for r in await self.all() if not r.gone and r.tenant_id and tenant_key(r.tenant_id) in tenants]
        if hint and normalize(hint):
            wanted = normalize(hint)
            matched = [r for r in refs if wanted in r.names()]
            return matched, not matched and bool(refs)
        return [r for r in refs if r.kind == CHANNEL], False
