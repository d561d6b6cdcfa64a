"""Signed checkpoints of the audit chain's head (in the manner of CloudTrail digest files).

A checkpoint says "at time `at`, the chain was `seq` records long and its head
hash was `hash`", signed with the service's Ed25519 key. The signed message is
the canonical JSON of {"at", "hash", "key_id", "prev", "seq"}; the stored record
adds "sig" (base64url, no padding). `prev` is the SHA-256 of the previous
checkpoint's canonical JSON, so the checkpoints form a signed chain of their own:
removing one (even together with the records it covered) breaks the next one's
link. Checkpoints made before `prev` existed sign the four other fields and
still verify. Anyone holding the public key can then check an
exported log offline: recomputing the chain must reproduce every checkpoint's
hash, and a log that is shorter than a checkpoint has lost its tail.

The dataclass and signature check are pure; `checkpoint` and `maybe_checkpoint`
read and write Redis through an `AuditLog`.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from approvalbot.audit.signing import (
    Keyring,
    Signer,
    b64url,
    b64url_decode,
    verify_signature,
)
from approvalbot.core.chain import canonical
from approvalbot.store import keys
from approvalbot.store.audit import AuditLog
from approvalbot.store.requests import load_script

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


FIRST_PREV = "0" * 64  # what the first checkpoint names as its predecessor


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    key_id: str
    sig: str
    # SHA-256 (hex) of the previous checkpoint's canonical JSON (FIRST_PREV for the first one), signed
    # with the rest: deleting a checkpoint breaks the link of the next one. None: made before links.
    prev: str | None = None

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"at": self.at, "hash": self.hash, "key_id": self.key_id, "seq": self.seq}
        if self.prev is not None:
            fields["prev"] = self.prev
        return fields

    def message(self) -> bytes:
        """Exactly the bytes that are signed (checkpoints without `prev` sign the four older fields)."""
        return canonical(self._fields())

    def as_dict(self) -> dict[str, Any]:
        return {**self._fields(), "sig": self.sig}

    def to_json(self) -> bytes:
        return canonical(self.as_dict())

    def digest(self) -> str:
        """What the next checkpoint names as `prev`."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def make(
        cls, seq: int, head: str, signer: Signer, now: datetime | None = None, prev: str = FIRST_PREV
    ) -> Checkpoint:
        unsigned = cls(seq, head, iso(now or datetime.now(UTC)), signer.key_id, "", prev)
        return cls(seq, head, unsigned.at, signer.key_id, b64url(signer.sign(unsigned.message())), prev)

    @classmethod
    def from_dict(cls, raw: Any) -> Checkpoint:
        """Strict parsing: a checkpoint that is not exactly well-formed is rejected (ValueError)."""
        if not isinstance(raw, Mapping):
            raise ValueError("a checkpoint must be a JSON object")
        seq, head, at, kid, sig = (raw.get(k) for k in ("seq", "hash", "at", "key_id", "sig"))
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("checkpoint seq must be a positive integer")
        if not isinstance(head, str) or not HEX64.match(head):
            raise ValueError("checkpoint hash must be 64 lowercase hex digits")
        if not (isinstance(at, str) and at and isinstance(kid, str) and kid and isinstance(sig, str) and sig):
            raise ValueError("checkpoint at, key_id and sig must be non-empty strings")
        prev = raw.get("prev")
        if prev is not None and not (isinstance(prev, str) and HEX64.match(prev)):
            raise ValueError("checkpoint prev must be 64 lowercase hex digits")
        return cls(seq, head, at, kid, sig, prev)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Checkpoint:
        try:
            return cls.from_dict(json.loads(raw))
        except json.JSONDecodeError:
            raise ValueError("a checkpoint is not valid JSON") from None

    def signature_problem(self, keyring: Keyring) -> str | None:
        """None when the signature is good; otherwise why not."""
        key = keyring.get(self.key_id)
        if key is None:
            return f"signed with key {self.key_id}, which is not among the trusted public keys"
        try:
            signature = b64url_decode(self.sig)
        except (binascii.Error, ValueError):
            return "the signature is not base64url"
        if not verify_signature(key, signature, self.message()):
            return "the signature does not match the checkpoint"
        return None


async def read_checkpoints(redis: Redis, upto: int | None = None) -> list[Checkpoint]:
    """The stored checkpoints, oldest first (those with seq <= `upto`, if given)."""
    found = [Checkpoint.from_json(raw) for raw in await redis.lrange(keys.AUDIT_CHECKPOINTS, 0, -1)]
    return [c for c in found if upto is None or c.seq <= upto]


async def latest_checkpoint(redis: Redis) -> Checkpoint | None:
    raw = await redis.lindex(keys.AUDIT_CHECKPOINTS, -1)
    return Checkpoint.from_json(raw) if raw else None


@cache
def _script_text(name: str) -> str:

    return load_script(name)


def _append_script(redis: Redis) -> AsyncScript:
    # Registering is local (it only hashes the text); the script is loaded on first use.
    return redis.register_script(_script_text("checkpoint.lua"))


async def checkpoint(audit_log: AuditLog, signer: Signer, now: datetime | None = None) -> Checkpoint | None:
    """Seal, then sign the chain's head; None when the log is empty or the head is already signed."""
    await audit_log.seal()
    seq, head = await audit_log.head()
    if seq == 0:
        return None
    raw_last = await audit_log.redis.lindex(keys.AUDIT_CHECKPOINTS, -1)
    last = Checkpoint.from_json(raw_last) if raw_last else None
    if last is not None and last.seq >= seq:
        return None
    made = Checkpoint.make(seq, head, signer, now, last.digest() if last else FIRST_PREV)
    appended = await _append_script(audit_log.redis)(
        keys=[keys.AUDIT_CHECKPOINTS, keys.AUDIT_CHAIN], args=[seq, head, made.to_json(), raw_last or ""]
    )
    return made if appended else None


async def maybe_checkpoint(
    audit_log: AuditLog, signer: Signer, every_seconds: float, now: datetime | None = None
) -> Checkpoint | None:
    """For the ticker: checkpoint when the last one is at least `every_seconds` old (or there is none).

    Safe to call from every worker on every tick: the check is one LINDEX, and
    concurrent checkpointers cannot append the same head twice.
    """
    now = now or datetime.now(UTC)
    last = await latest_checkpoint(audit_log.redis)
    if last is not None:
        try:
            age = (now - parse_time(last.at)).total_seconds()
        except ValueError:
            age = every_seconds
        if age < every_seconds:
            return None
    return await checkpoint(audit_log, signer, now)
