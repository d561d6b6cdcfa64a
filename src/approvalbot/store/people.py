"""Persons: one record per human, with their addresses, groups, tokens and linked chat identities.

Two indexes make "one human, one person" hold under concurrency: every canonical
address (primary or alias) and every chat identity points to exactly one person,
and both are claimed with SET NX. An identity, once linked, belongs to its person
by id; nothing here ever re-points it because an email changed.

Every change is written together with its audit record (one MULTI), then sealed.

Data written before persons existed (one `ab:approver:<email>` record per
approver) is upgraded in place, on first use of an address and by
`migrate_approvers`; the approver keeps its id, so its tokens keep working.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from approvalbot.core.addresses import canonical_email, canonical_or_none
from approvalbot.core.events import Event, EventType, event_about_people
from approvalbot.core.models import Actor, Channel, ChatIdentity, Person
from approvalbot.store import codec, keys, replication
from approvalbot.store.audit import AuditLog
from approvalbot.store.requests import audit_body
from approvalbot.store.tokens import IdentityError, new_id, new_token, token_digest

__all__ = ["ADMIN", "IdentityError", "LinkRefused", "PersonStore", "RequesterCache", "Requesters", "valid_group"]

ADMIN = Actor(kind="system", id="admin", channel=Channel.SYSTEM)
"""The actor of changes made with the `approvalbot` command (whoever can run it administers the data)."""

MAX_GROUP = 100


@dataclass(frozen=True)
class LinkRefused:
    """A first-use link that did not happen; `message` names the command an admin runs instead."""

    code: Literal["no_person", "ambiguous"]
    message: str


@dataclass(frozen=True)
class Requesters:
    """The persons behind a new request, as of people version `version`."""

    version: str
    ids: tuple[str, ...]


class RequesterCache:
    """Whom an agent's owner and on-behalf-of addresses name, remembered per process.

    Resolving them costs two or three reads on every new request, and they change only when an
    admin changes people. An entry is never trusted on its own: it carries the people version it
    was read at, and the commit script refuses a new request whose version is no longer current
    (`requests.PeopleChanged`), so the service resolves again and retries. Self-approval is thus
    judged on the persons as they are when the request is committed, never on a stale memory.
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str], Requesters] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> Requesters | None:
        return self._entries.get(key)

    def put(self, key: tuple[str, str, str], found: Requesters) -> None:
        self._entries[key] = found
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def valid_group(group: str) -> str:
    if not group or "@" in group or group == "*" or len(group) > MAX_GROUP or not group.isprintable():
        raise IdentityError(f"invalid group name {group!r}")
    return group


def link_command(identity: ChatIdentity, email: str = "EMAIL") -> str:
    return f"approvalbot people link {email} --{identity.channel} {identity.workspace or '-'}/{identity.user_id}"


class PersonStore:
    def __init__(
        self,
        redis: Redis,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.redis = redis
        self.audit = audit or AuditLog(redis)
        self.clock = clock

    # --- reading ---------------------------------------------------------------------------

    async def get(self, person_id: str) -> Person | None:
        raw = await self.redis.get(keys.person(person_id))
        return Person.model_validate_json(raw) if raw else None

    async def by_email(self, email: str) -> Person | None:
        """The person with this primary address or alias (canonicalised first); None if none or invalid."""
        address = canonical_or_none(email)
        if address is None:
            return None
        found = await self.redis.get(keys.person_address(address))
        if found:
            return await self.get(codec.text(found))
        return await self._migrate_one(address)

    async def by_identity(self, identity: ChatIdentity) -> Person | None:
        found = await self.redis.get(keys.person_identity(identity.key))
        return await self.get(codec.text(found)) if found else None

    async def version(self) -> str:
        """The people version (see keys.PEOPLE_VERSION): read it BEFORE the lookups it vouches for."""
        raw = await self.redis.get(keys.PEOPLE_VERSION)
        return codec.text(raw) if raw else "0"

    async def list(self) -> list[Person]:
        await self.migrate_approvers()
        ids = sorted(codec.text(x) for x in await self.redis.smembers(keys.PERSONS))
        if not ids:
            return []
        docs = await self.redis.mget([keys.person(i) for i in ids])
        people = [Person.model_validate_json(d) for d in docs if d]
        return sorted(people, key=lambda p: (p.created_at, p.email))

    # --- changing --------------------------------------------------------------------------

    async def add(
        self,
        email: str,
        name: str | None = None,
        aliases: Iterable[str] = (),
        groups: Iterable[str] = (),
        *,
        approver: bool = True,
        actor: Actor = ADMIN,
    ) -> Person:
        """Create a person, or merge into the one that already has this address.

        Aliases and groups are added, never dropped (a revoked person starts again
        with only the groups given). `approver=False` (an agent's owner) never turns
        an existing approver into a non-approver.
        """
        primary = canonical_email(email)
        wanted_aliases = {canonical_email(a) for a in aliases} - {primary}
        wanted_groups = {valid_group(g) for g in groups}
        existing = await self.by_email(primary)
        for alias in sorted(wanted_aliases):
            owner = await self.by_email(alias)
            if owner is not None and (existing is None or owner.id != existing.id):
                raise IdentityError(f"{alias} already belongs to {owner.email}; remove it there first")
        if existing is None:
            person = Person(
                id=new_id("per"),
                email=primary,
                name=name,
                aliases=sorted(wanted_aliases),
                groups=sorted(wanted_groups),
                created_at=self.clock(),
                may_approve=approver,
            )
        else:
            kept_groups = set() if existing.revoked and approver else set(existing.groups)
            person = existing.model_copy(
                update={
                    "name": name or existing.name,
                    "aliases": sorted((set(existing.aliases) | wanted_aliases) - {existing.email}),
                    "groups": sorted(kept_groups | wanted_groups),
                    "revoked": existing.revoked and not approver,
                    "may_approve": existing.may_approve or approver,
                }
            )
            if person == existing:
                return existing
        await self._claim_addresses(person, person.addresses() - (existing.addresses() if existing else set()))
        kind = EventType.PERSON_ADDED if existing is None else EventType.PERSON_UPDATED
        await self._save(person, event_about_people(kind, actor, self.clock(), **_summary(person)))
        return person

    async def ensure_owner(self, email: str, actor: Actor = ADMIN) -> Person:
        """The person behind an agent's owner address, created (not as an approver) if absent."""
        found = await self.by_email(email)
        return found if found is not None else await self.add(email, approver=False, actor=actor)

    async def revoke(self, email: str, actor: Actor = ADMIN) -> Person:
        """Approver access ends now (tokens deleted); the person stays, so self-approval still knows them."""
        person = await self._require(email)
        person = person.model_copy(update={"revoked": True})
        pipe = self.redis.pipeline(transaction=True)
        await self._drop_tokens(pipe, person.id)
        data = {**_summary(person), "revoked": True}
        await self._save(person, event_about_people(EventType.PERSON_UPDATED, actor, self.clock(), **data), pipe)
        return person

    async def remove(self, email: str, actor: Actor = ADMIN) -> Person:
        """Forget a person: tokens, addresses and linked identities go with them."""
        person = await self._require(email)
        pipe = self.redis.pipeline(transaction=True)
        await self._drop_tokens(pipe, person.id)
        for address in person.addresses():
            if await self._owner_of(keys.person_address(address)) == person.id:
                pipe.delete(keys.person_address(address))
        for identity in person.identities:
            if await self._owner_of(keys.person_identity(identity.key)) == person.id:
                pipe.delete(keys.person_identity(identity.key), keys.person_identity(identity.key) + ":address")
        pipe.delete(keys.person(person.id))
        pipe.srem(keys.PERSONS, person.id)
        event = event_about_people(EventType.PERSON_REMOVED, actor, self.clock(), **_summary(person))
        await self.write_audited(pipe, event)
        return person

    async def link(self, email: str, identity: ChatIdentity, actor: Actor = ADMIN) -> Person:
        """An admin binds a chat identity to a person (refused if another person holds it)."""
        person = await self._require(email)
        holder = await self._owner_of(keys.person_identity(identity.key))
        if holder == person.id:
            return person
        if holder is not None:
            other = await self.get(holder)
            raise IdentityError(
                f"{identity.key} is linked to {other.email if other else holder}; run `approvalbot people unlink` first"
            )
        return await self._link(person, identity, actor, "admin")

    async def unlink(self, email: str, identity: ChatIdentity, actor: Actor = ADMIN) -> Person:
        person = await self._require(email)
        if await self._owner_of(keys.person_identity(identity.key)) != person.id:
            raise IdentityError(f"{identity.key} is not linked to {person.email}")
        person = person.model_copy(update={"identities": [i for i in person.identities if i.key != identity.key]})
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.person_identity(identity.key), keys.person_identity(identity.key) + ":address")
        event = event_about_people(
            EventType.PERSON_UNLINKED,
            actor,
            self.clock(),
            person_id=person.id,
            email=person.email,
            identity=_id(identity),
        )
        await self._save(person, event, pipe)
        return person

    async def link_on_first_use(self, identity: ChatIdentity, verified_email: str | None) -> Person | LinkRefused:
        """The person a chat identity belongs to, linking it now if its verified address names one person.

        An identity already linked answers its person whatever the address says now
        (a later profile change never moves it; the change is audited once, as
        `identity.changed`). Otherwise it links only when the verified address is
        exactly one person's primary email or alias.
        """
        address = canonical_or_none(verified_email) if verified_email else None
        linked = await self.by_identity(identity)
        if linked is not None:
            await self._note_address(identity, linked, address)
            return linked
        person = await self.by_email(address) if address else None
        if person is None:
            shown = address or "no verified address"
            return LinkRefused(
                "no_person",
                f"no registered person has this identity's address ({shown}); an admin can run "
                f"`approvalbot people add EMAIL` or `{link_command(identity)}`",
            )
        if not await self.redis.set(keys.person_identity(identity.key), person.id, nx=True):
            raced = await self.by_identity(identity)  # linked concurrently: whoever won owns it
            return raced if raced is not None else LinkRefused("ambiguous", f"try again, or `{link_command(identity)}`")
        actor = Actor(
            kind="human",
            id=person.id,
            email=address,
            channel=Channel(identity.channel),
            channel_user=identity.user_id,
            person_id=person.id,
            workspace=identity.workspace,
        )
        await self.redis.set(keys.person_identity(identity.key) + ":address", address or "")
        return await self._link(person, identity, actor, "first_use", claimed=True)

    async def issue_token(self, person: Person) -> str:
        """A new approver token for this person (shown once; only its digest is kept)."""
        token = new_token("approver")
        digest = token_digest(token)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.token(digest), json.dumps({"kind": "approver", "person_id": person.id}))
        pipe.sadd(keys.person_tokens(person.id), digest)
        await pipe.execute()
        return token

    async def write_audited(self, pipe: Pipeline, event: Event, *, changes_people: bool = True) -> int:
        """Run `pipe` (a MULTI) with the event appended to the audit log, then seal it; returns its seq.

        Unless told it `changes_people` not (an audit-only record), the MULTI also increments the
        people version, which drops what every process remembers about who is who (`RequesterCache`).
        """
        if changes_people:
            pipe.incr(keys.PEOPLE_VERSION)
        body = audit_body(event)
        pipe.rpush(keys.AUDIT_LOG, body)
        seq = int((await pipe.execute())[-1])
        await self.audit.seal(seq)
        await replication.confirm(self.redis, replication.Proof.record(seq, body))
        return seq

    # --- the upgrade from approver records -------------------------------------------------

    async def migrate_approvers(self) -> int:
        """Turn every approver record of the previous version into a person (idempotent)."""
        done = 0
        for raw in await self.redis.smembers(keys.APPROVERS):
            if await self._migrate_one(codec.text(raw)) is not None:
                done += 1
        return done

    async def _migrate_one(self, address: str) -> Person | None:
        raw = await self.redis.get(keys.approver(address))
        if not raw:
            return None
        old: dict[str, Any] = json.loads(raw)
        person = Person(
            id=old["id"],
            email=canonical_or_none(old["email"]) or address,
            groups=sorted(set(old.get("groups") or [])),
            created_at=old["created_at"],
            revoked=bool(old.get("revoked", False)),
        )
        if not await self.redis.set(keys.person_address(person.email), person.id, nx=True):
            holder = await self._owner_of(keys.person_address(person.email))
            await self._forget_approver_record(address)
            return await self.get(holder) if holder else None
        pipe = self.redis.pipeline(transaction=True)
        old_tokens = keys.approver(address) + ":tokens"
        pipe.sunionstore(keys.person_tokens(person.id), [keys.person_tokens(person.id), old_tokens])
        self._forget_approver_record_in(pipe, address)
        event = event_about_people(
            EventType.PERSON_ADDED, ADMIN, self.clock(), migrated_from="approver", **_summary(person)
        )
        await self._save(person, event, pipe)
        return person

    async def _forget_approver_record(self, address: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._forget_approver_record_in(pipe, address)
        await pipe.execute()

    @staticmethod
    def _forget_approver_record_in(pipe: Pipeline, address: str) -> None:
        pipe.delete(keys.approver(address), keys.approver(address) + ":tokens")
        pipe.srem(keys.APPROVERS, address)

    # --- helpers ---------------------------------------------------------------------------

    async def _require(self, email: str) -> Person:
        person = await self.by_email(canonical_email(email))
        if person is None:
            raise IdentityError(f"no person with the address {canonical_email(email)}")
        return person

    async def _owner_of(self, key: str) -> str | None:
        raw = await self.redis.get(key)
        return codec.text(raw) if raw else None

    async def _claim_addresses(self, person: Person, addresses: set[str]) -> None:
        """Each address names one person: claim them all, or none (another add won a race)."""
        claimed: list[str] = []
        for address in sorted(addresses):
            key = keys.person_address(address)
            if await self.redis.set(key, person.id, nx=True) or await self._owner_of(key) == person.id:
                claimed.append(key)
                continue
            for done in claimed:
                await self.redis.delete(done)
            raise IdentityError(f"{address} already belongs to another person")

    async def _save(self, person: Person, event: Event, pipe: Pipeline | None = None) -> None:
        pipe = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        pipe.set(keys.person(person.id), person.model_dump_json())
        pipe.sadd(keys.PERSONS, person.id)
        await self.write_audited(pipe, event)

    async def _drop_tokens(self, pipe: Pipeline, person_id: str) -> None:
        digests = await self.redis.smembers(keys.person_tokens(person_id))
        if digests:
            pipe.delete(*(keys.token(codec.text(d)) for d in digests))
        pipe.delete(keys.person_tokens(person_id))

    async def _link(
        self, person: Person, identity: ChatIdentity, actor: Actor, how: str, claimed: bool = False
    ) -> Person:
        if not claimed and not await self.redis.set(keys.person_identity(identity.key), person.id, nx=True):
            raise IdentityError(f"{identity.key} was linked by someone else just now; look again")
        fresh = await self.get(person.id) or person
        person = fresh.model_copy(
            update={"identities": [*(i for i in fresh.identities if i.key != identity.key), identity]}
        )
        event = event_about_people(
            EventType.PERSON_LINKED,
            actor,
            self.clock(),
            person_id=person.id,
            email=person.email,
            identity=_id(identity),
            how=how,
        )
        await self._save(person, event)
        return person

    async def _note_address(self, identity: ChatIdentity, person: Person, address: str | None) -> None:
        """Record once when a linked identity's verified address stops matching its person."""
        seen_key = keys.person_identity(identity.key) + ":address"
        raw = await self.redis.getset(seen_key, address or "")
        previous = codec.text(raw) if raw is not None else None
        if previous == (address or ""):
            return
        if address is not None and address in person.addresses():
            return
        actor = Actor(
            kind="human",
            id=person.id,
            email=address,
            channel=Channel(identity.channel),
            channel_user=identity.user_id,
            person_id=person.id,
            workspace=identity.workspace,
        )
        event = event_about_people(
            EventType.IDENTITY_CHANGED,
            actor,
            self.clock(),
            person_id=person.id,
            email=person.email,
            identity=_id(identity),
            previous_address=previous or None,
            address=address,
        )
        await self.write_audited(self.redis.pipeline(transaction=True), event, changes_people=False)


def _summary(person: Person) -> dict[str, Any]:
    return {
        "person_id": person.id,
        "email": person.email,
        "aliases": person.aliases,
        "groups": person.groups,
        "may_approve": person.may_approve,
    }


def _id(identity: ChatIdentity) -> dict[str, Any]:
    return identity.model_dump(mode="json", exclude_none=True)
