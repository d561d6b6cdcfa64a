"""The hash chain over audit records, as pure functions shared by the server and offline verifiers.

hash[n] = SHA-256( hash[n-1] "\\n" n "\\n" body[n] ), with hash[0] = 64 zeros, where
body[n] is the record's canonical JSON (sorted keys, no spaces, UTF-8). Binding the
sequence number into the hash makes reordering and insertion detectable on their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

GENESIS = "0" * 64


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def params_digest(params: dict[str, Any] | None) -> str:
    """SHA-256 (hex) of params' canonical JSON: what a grant binds and what the masked view records,
    so an executor can check the exact params against either (one definition, used by both)."""
    return hashlib.sha256(canonical(params or {})).hexdigest()


def link(prev_hash: str, seq: int, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode())
    digest.update(b"\n%d\n" % seq)
    digest.update(body)
    return digest.hexdigest()


def chain(bodies: Iterable[bytes], prev_hash: str = GENESIS, first_seq: int = 1) -> Iterator[str]:
    for seq, body in enumerate(bodies, start=first_seq):
        prev_hash = link(prev_hash, seq, body)
        yield prev_hash
