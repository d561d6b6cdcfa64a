"""Signed checkpoints of the audit chain's head (in the manner of CloudTrail digest files).

A checkpoint says "at time `at`, the chain was `seq` records long and its head
hash was `hash`", signed with the service's Ed25519 key. The signed message is
the canonical JSON of {"at", "hash", "key_id", "seq"}; the stored record adds
"sig" (base64url, no padding). Anyone holding the public key can then check an
exported log offline: recomputing the chain must reproduce every checkpoint's
hash, and a log that is shorter than a checkpoint has lost its tail.

The dataclass and signature check are pure; `checkpoint` and `maybe_checkpoint`
read and write Redis through an `AuditLog`.
"""

from __future__ import annotations

import binascii
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


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    key_id: str
    sig: str

    def message(self) -> bytes:
        """Exactly the bytes that are signed."""
        return canonical({"at": self.at, "hash": self.hash, "key_id": self.key_id, "seq": self.seq})

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "key_id": self.key_id, "sig": self.sig}

    def to_json(self) -> bytes:
        return canonical(self.as_dict())

    @classmethod
    def make(cls, seq: int, head: str, signer: Signer, now: datetime | None = None) -> Checkpoint:
        unsigned = cls(seq, head, iso(now or datetime.now(UTC)), signer.key_id, "")
        return cls(seq, head, unsigned.at, signer.key_id, b64url(signer.sign(unsigned.message())))

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
        return cls(seq, head, at, kid, sig)

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
    last = await latest_checkpoint(audit_log.redis)
    if last is not None and last.seq >= seq:
        return None
    made = Checkpoint.make(seq, head, signer, now)
    appended = await _append_script(audit_log.redis)(
        keys=[keys.AUDIT_CHECKPOINTS, keys.AUDIT_CHAIN], args=[seq, head, made.to_json()]
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
