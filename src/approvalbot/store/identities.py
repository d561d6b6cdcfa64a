"""Agents, approvers and their bearer tokens.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a
copy of the database does not let anyone act as an agent or an approver. A slow
password hash buys nothing for secrets with this much entropy.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from redis.asyncio import Redis

from approvalbot.core.models import Agent, Approver, normalize_email
from approvalbot.store import codec, keys

TokenKind = Literal["agent", "approver"]
TOKEN_PREFIX = {"agent": "abk_agent_", "approver": "abk_appr_"}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Principal:
    """Who a bearer token proves the caller to be."""

    kind: TokenKind
    agent: Agent | None = None
    approver: Approver | None = None


class IdentityError(ValueError):
    pass


def _token_record(kind: TokenKind, doc: Agent | Approver) -> str:
    return json.dumps({"kind": kind, "doc": doc.model_dump(mode="json")})


class IdentityStore:
    def __init__(self, redis: Redis):
        self.redis = redis

    async def _issue(self, kind: TokenKind, doc: Agent | Approver) -> str:
        """The token record carries a snapshot of its subject, so authenticating is one GET."""
        token = TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)
        await self.redis.set(keys.token(token_digest(token)), _token_record(kind, doc))
        return token

    async def _refresh_tokens(self, subject_key: str, kind: TokenKind, doc: Agent | Approver) -> None:
        """Keep every live token's snapshot in step with its subject (e.g. new groups)."""
        record = _token_record(kind, doc)
        for digest in await self.redis.smembers(subject_key + ":tokens"):
            await self.redis.set(keys.token(codec.text(digest)), record, xx=True)

    async def _revoke_tokens(self, subject_key: str) -> None:
        digests = await self.redis.smembers(subject_key + ":tokens")
        if digests:
            await self.redis.delete(*(keys.token(codec.text(d)) for d in digests))

    async def add_agent(self, name: str, owner: str) -> tuple[Agent, str]:
        owner = normalize_email(owner)
        if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise IdentityError("agent names use letters, digits, '.', '-' and '_' (at most 100)")
        agent = Agent(id=new_id("agt"), name=name, owner=owner, created_at=datetime.now(UTC))
        if not await self.redis.set(keys.agent_name(name), agent.id, nx=True):
            existing = await self.get_agent_by_name(name)
            if existing and not existing.revoked:
                raise IdentityError(f"an agent named {name!r} already exists")
            await self.redis.set(keys.agent_name(name), agent.id)
        token = await self._issue("agent", agent)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.agent(agent.id), agent.model_dump_json())
        pipe.sadd(keys.AGENTS, agent.id)
        pipe.sadd(keys.agent(agent.id) + ":tokens", token_digest(token))
        await pipe.execute()
        return agent, token

    async def get_agent(self, agent_id: str) -> Agent | None:
        raw = await self.redis.get(keys.agent(agent_id))
        return Agent.model_validate_json(raw) if raw else None

    async def get_agent_by_name(self, name: str) -> Agent | None:
        agent_id = await self.redis.get(keys.agent_name(name))
        return await self.get_agent(codec.text(agent_id)) if agent_id else None

    async def list_agents(self) -> list[Agent]:
        ids = sorted(codec.text(x) for x in await self.redis.smembers(keys.AGENTS))
        agents = [await self.get_agent(i) for i in ids]
        return sorted((a for a in agents if a), key=lambda a: a.created_at)

    async def revoke_agent(self, name: str) -> Agent:
        agent = await self.get_agent_by_name(name)
        if agent is None:
            raise IdentityError(f"no agent named {name!r}")
        agent = agent.model_copy(update={"revoked": True})
        await self._revoke_tokens(keys.agent(agent.id))
        await self.redis.set(keys.agent(agent.id), agent.model_dump_json())
        return agent

    async def add_approver(self, email: str, groups: list[str]) -> tuple[Approver, str]:
        email = normalize_email(email)
        for group in groups:
            if not group or "@" in group or group == "*" or len(group) > 100:
                raise IdentityError(f"invalid group name {group!r}")
        existing = await self.get_approver(email)
        approver = Approver(
            id=existing.id if existing else new_id("apr"),
            email=email,
            groups=sorted(set(groups) | (set(existing.groups) if existing and not existing.revoked else set())),
            created_at=existing.created_at if existing else datetime.now(UTC),
        )
        token = await self._issue("approver", approver)
        await self._refresh_tokens(keys.approver(email), "approver", approver)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.approver(email), approver.model_dump_json())
        pipe.sadd(keys.APPROVERS, email)
        pipe.sadd(keys.approver(email) + ":tokens", token_digest(token))
        await pipe.execute()
        return approver, token

    async def get_approver(self, email: str) -> Approver | None:
        raw = await self.redis.get(keys.approver(email.lower()))
        return Approver.model_validate_json(raw) if raw else None

    async def list_approvers(self) -> list[Approver]:
        emails = sorted(codec.text(x) for x in await self.redis.smembers(keys.APPROVERS))
        found = [await self.get_approver(e) for e in emails]
        return [a for a in found if a]

    async def revoke_approver(self, email: str) -> Approver:
        approver = await self.get_approver(email)
        if approver is None:
            raise IdentityError(f"no approver {email!r}")
        approver = approver.model_copy(update={"revoked": True})
        await self._revoke_tokens(keys.approver(approver.email))
        await self.redis.set(keys.approver(approver.email), approver.model_dump_json())
        return approver

    async def authenticate(self, token: str) -> Principal | None:
        """One GET per call: revocation deletes the digest, so it takes effect at once."""
        if not token or len(token) > 200:
            return None
        raw = await self.redis.get(keys.token(token_digest(token)))
        if not raw:
            return None
        record = json.loads(raw)
        if record["kind"] == "agent":
            agent = Agent.model_validate(record["doc"])
            return None if agent.revoked else Principal("agent", agent=agent)
        approver = Approver.model_validate(record["doc"])
        return None if approver.revoked else Principal("approver", approver=approver)
