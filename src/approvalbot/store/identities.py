"""Agents, approvers (persons), executors and their bearer tokens.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored (see
store/tokens.py). An approver token authenticates a person, read fresh on every
call, so a change to the person (groups, aliases, revocation) applies at once.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from approvalbot.core.addresses import canonical_email
from approvalbot.core.events import EventType, event_about_people
from approvalbot.core.models import Actor, Agent, Approver, ChatIdentity, Executor, Person
from approvalbot.store import codec, keys
from approvalbot.store.audit import AuditLog
from approvalbot.store.people import ADMIN, PersonStore
from approvalbot.store.requests import load_script
from approvalbot.store.tokens import (
    TOKEN_PREFIX,
    IdentityError,
    TokenKind,
    new_id,
    new_token,
    token_digest,
    token_id,
    well_formed,
)

__all__ = [
    "TOKEN_PREFIX",
    "Auditor",
    "AuditorToken",
    "IdentityError",
    "IdentityStore",
    "Principal",
    "TokenKind",
    "new_callback_secret",
    "new_id",
    "token_digest",
    "well_formed",
]


@dataclass(frozen=True)
class Auditor:
    """An auditor: may read the audit log, its verification and evidence reports, and nothing else."""

    id: str
    email: str


@dataclass(frozen=True)
class Principal:
    """Who a bearer token proves the caller to be, and the token's public id (for audit records)."""

    kind: TokenKind
    agent: Agent | None = None
    approver: Person | None = None
    executor: Executor | None = None
    auditor: Auditor | None = None
    token_id: str = ""

    @property
    def identity(self) -> ChatIdentity:
        """The concrete identity used: the API token."""
        return ChatIdentity(channel="api", user_id=self.token_id)


CALLBACK_SECRET_PREFIX = "abcb_"


def new_callback_secret() -> str:
    """256 random bits; the prefix makes a leaked one recognisable in a secret scanner."""
    return CALLBACK_SECRET_PREFIX + secrets.token_urlsafe(32)


def _valid_name(name: str, what: str) -> str:
    if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise IdentityError(f"{what} names use letters, digits, '.', '-' and '_' (at most 100)")
    return name


AUDITOR_TOKENS_PREFIX, AUDITOR_TOKENS_SUFFIX = f"{keys.PREFIX}auditor:", ":tokens"


def _auditor_tokens(email: str) -> str:
    return f"{AUDITOR_TOKENS_PREFIX}{email}{AUDITOR_TOKENS_SUFFIX}"


@dataclass(frozen=True)
class AuditorToken:
    """One live auditor token, as `approvalbot auditors list` shows it (never the token itself)."""

    email: str
    token_id: str  # the token's public name in audit records
    auditor_id: str
    created_at: str | None  # ISO 8601; None for tokens issued before it was recorded


class IdentityStore:
    def __init__(self, redis: Redis, audit: AuditLog | None = None):
        self.redis = redis
        self.people = PersonStore(redis, audit)
        self._token_person_script = redis.register_script(load_script("token_person.lua"))

    async def _issue(self, kind: TokenKind, doc: Agent | Executor) -> str:
        """Agent and executor token records carry a snapshot of their subject, so authenticating is one GET."""
        token = new_token(kind)
        await self.redis.set(
            keys.token(token_digest(token)), json.dumps({"kind": kind, "doc": doc.model_dump(mode="json")})
        )
        return token

    async def _revoke_tokens(self, subject_key: str) -> None:
        digests = await self.redis.smembers(subject_key + ":tokens")
        if digests:
            await self.redis.delete(*(keys.token(codec.text(d)) for d in digests))

    async def add_agent(self, name: str, owner: str, actor: Actor = ADMIN) -> tuple[Agent, str]:
        """A new agent and its token; its owner becomes a person (not an approver) if not one already."""
        owner = canonical_email(owner)
        _valid_name(name, "agent")
        person = await self.people.ensure_owner(owner, actor)
        agent = Agent(id=new_id("agt"), name=name, owner=owner, owner_id=person.id, created_at=datetime.now(UTC))
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
        pipe.set(keys.agent_callback_secret(agent.id), new_callback_secret())
        await pipe.execute()
        return agent, token

    async def callback_secret(self, agent_id: str) -> str | None:
        """The agent's own callback secret; None for agents created before per-agent secrets
        (their callbacks are signed with the shared APPROVALBOT_CALLBACK_SECRET)."""
        raw = await self.redis.get(keys.agent_callback_secret(agent_id))
        return codec.text(raw) if raw else None

    async def rotate_callback_secret(self, name: str) -> tuple[Agent, str]:
        """A new callback secret for the agent; callbacks sent from now on are signed with it."""
        agent = await self.get_agent_by_name(name)
        if agent is None or agent.revoked:
            raise IdentityError(f"no active agent named {name!r}")
        secret = new_callback_secret()
        await self.redis.set(keys.agent_callback_secret(agent.id), secret)
        return agent, secret

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
        """`approvers add`: create or update the person (as an approver) and issue a token."""
        person = await self.people.add(email, groups=groups, approver=True)
        return person, await self.people.issue_token(person)

    async def get_approver(self, email: str) -> Approver | None:
        """The person with this address (primary or alias); may be one who is not an approver."""
        return await self.people.by_email(email)

    async def list_approvers(self) -> list[Approver]:
        return [p for p in await self.people.list() if p.may_approve]

    async def revoke_approver(self, email: str) -> Approver:
        return await self.people.revoke(email)

    async def add_executor(self, name: str, agent_name: str, actor: Actor = ADMIN) -> tuple[Executor, str]:
        """An executor may consume the grants of one agent, and nothing else."""
        _valid_name(name, "executor")
        agent = await self.get_agent_by_name(agent_name)
        if agent is None or agent.revoked:
            raise IdentityError(f"no active agent named {agent_name!r}")
        executor = Executor(
            id=new_id("exe"), name=name, agent_id=agent.id, agent_name=agent.name, created_at=datetime.now(UTC)
        )
        if not await self.redis.set(keys.executor_name(name), executor.id, nx=True):
            existing = await self.get_executor_by_name(name)
            if existing and not existing.revoked:
                raise IdentityError(f"an executor named {name!r} already exists")
            await self.redis.set(keys.executor_name(name), executor.id)
        token = await self._issue("executor", executor)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.executor(executor.id), executor.model_dump_json())
        pipe.sadd(keys.EXECUTORS, executor.id)
        pipe.sadd(keys.executor(executor.id) + ":tokens", token_digest(token))
        event = event_about_people(
            EventType.EXECUTOR_ADDED, actor, datetime.now(UTC), executor_id=executor.id, name=name, agent_id=agent.id
        )
        await self.people.write_audited(pipe, event)
        return executor, token

    async def get_executor(self, executor_id: str) -> Executor | None:
        raw = await self.redis.get(keys.executor(executor_id))
        return Executor.model_validate_json(raw) if raw else None

    async def get_executor_by_name(self, name: str) -> Executor | None:
        executor_id = await self.redis.get(keys.executor_name(name))
        return await self.get_executor(codec.text(executor_id)) if executor_id else None

    async def list_executors(self) -> list[Executor]:
        ids = sorted(codec.text(x) for x in await self.redis.smembers(keys.EXECUTORS))
        found = [await self.get_executor(i) for i in ids]
        return sorted((e for e in found if e), key=lambda e: e.created_at)

    async def revoke_executor(self, name: str, actor: Actor = ADMIN) -> Executor:
        executor = await self.get_executor_by_name(name)
        if executor is None:
            raise IdentityError(f"no executor named {name!r}")
        executor = executor.model_copy(update={"revoked": True})
        await self._revoke_tokens(keys.executor(executor.id))
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.executor(executor.id), executor.model_dump_json())
        event = event_about_people(
            EventType.EXECUTOR_REVOKED, actor, datetime.now(UTC), executor_id=executor.id, name=name
        )
        await self.people.write_audited(pipe, event)
        return executor

    async def add_auditor(self, email: str, actor: Actor = ADMIN) -> tuple[Auditor, str]:
        """A read-only auditor token (audit log, verification, evidence reports); shown once.

        Each call issues a new token for the address; `revoke_auditor` ends them all.
        """
        email = canonical_email(email)
        auditor = Auditor(id=new_id("aud"), email=email)
        token = new_token("auditor")
        digest = token_digest(token)
        pipe = self.redis.pipeline(transaction=True)
        doc = {"id": auditor.id, "email": email, "created_at": datetime.now(UTC).isoformat()}
        pipe.set(keys.token(digest), json.dumps({"kind": "auditor", "doc": doc}))
        pipe.sadd(_auditor_tokens(email), digest)
        event = event_about_people(
            EventType.AUDITOR_ADDED,
            actor,
            datetime.now(UTC),
            auditor_id=auditor.id,
            email=email,
            token_id=token_id(digest),
        )
        await self.people.write_audited(pipe, event)
        return auditor, token

    async def revoke_auditor(self, email: str, actor: Actor = ADMIN) -> int:
        """Delete every auditor token of this address; returns how many there were."""
        email = canonical_email(email)
        digests = await self.redis.smembers(_auditor_tokens(email))
        if not digests:
            raise IdentityError(f"no auditor tokens for {email}")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*(keys.token(codec.text(d)) for d in digests), _auditor_tokens(email))
        event = event_about_people(EventType.AUDITOR_REVOKED, actor, datetime.now(UTC), email=email)
        await self.people.write_audited(pipe, event)
        return len(digests)

    async def list_auditors(self) -> list[AuditorToken]:
        """Every live auditor token, by address then issue time. Auditor tokens have no index of
        their own: this walks the per-address token sets with SCAN (an admin command, not a hot path)."""
        found: list[AuditorToken] = []
        async for key in self.redis.scan_iter(match=_auditor_tokens("*"), count=1000):
            name = codec.text(key)
            email = name[len(AUDITOR_TOKENS_PREFIX) : -len(AUDITOR_TOKENS_SUFFIX)]
            digests = sorted(codec.text(d) for d in await self.redis.smembers(name))
            records = await self.redis.mget([keys.token(d) for d in digests]) if digests else []
            for digest, raw in zip(digests, records, strict=True):
                if not raw:
                    continue  # revoked meanwhile
                doc = json.loads(raw).get("doc", {})
                found.append(AuditorToken(email, token_id(digest), str(doc.get("id", "")), doc.get("created_at")))
        return sorted(found, key=lambda t: (t.email, t.created_at or "", t.token_id))

    async def authenticate(self, token: str) -> Principal | None:
        """Revocation deletes the digest, so it takes effect at once; approvers read their person fresh."""
        if not well_formed(token):  # no lookup for junk
            return None
        digest = token_digest(token)
        person_doc: bytes | None = None
        if token.startswith(TOKEN_PREFIX["approver"]):  # record and person in one round trip
            found = await self._token_person_script(keys=[keys.token(digest)], args=[keys.person("")])
            raw, person_doc = (found[0], found[1]) if found else (None, None)
        else:
            raw = await self.redis.get(keys.token(digest))
        if not raw:
            return None
        record = json.loads(raw)
        tid = token_id(digest)
        if record["kind"] == "agent":
            agent = Agent.model_validate(record["doc"])
            return None if agent.revoked else Principal("agent", agent=agent, token_id=tid)
        if record["kind"] == "executor":
            executor = Executor.model_validate(record["doc"])
            return None if executor.revoked else Principal("executor", executor=executor, token_id=tid)
        if record["kind"] == "auditor":
            doc = record["doc"]
            return Principal("auditor", auditor=Auditor(id=doc["id"], email=doc["email"]), token_id=tid)
        if person_doc is not None and isinstance(record.get("person_id"), str):
            person: Person | None = Person.model_validate_json(person_doc)
        else:
            person = await self._token_person(record)
        if person is None or person.revoked or not person.may_approve:
            return None
        return Principal("approver", approver=person, token_id=tid)

    async def _token_person(self, record: dict[str, object]) -> Person | None:
        """New records name the person; records from before persons carry an approver snapshot,
        whose id the person kept (the lookup by address upgrades the approver on first use)."""
        person_id = record.get("person_id")
        if isinstance(person_id, str):
            return await self.people.get(person_id)
        doc = record.get("doc")
        if not isinstance(doc, dict):
            return None
        person = await self.people.get(str(doc.get("id")))
        if person is None:
            person = await self.people.by_email(str(doc.get("email")))
        return person if person is not None and person.id == doc.get("id") else None
