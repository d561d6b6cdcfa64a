"""The request-id format and the pending-list cursor: one definition for every channel.

Ids are made and recognised here, so a channel can reject junk before any lookup
without drifting from what the service actually generates. The cursor is opaque
to clients (API query string, Slack button value) but has one encoding, checked
on the way back in, because it arrives from outside.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

REQUEST_ID_PREFIX = "req_"
_ID_BYTES = 10  # 80 random bits: 16 base32 characters, no padding
REQUEST_ID_PATTERN = REQUEST_ID_PREFIX + "[a-z2-7]{16}"
REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)  # use fullmatch: `$` would let a trailing newline through
EXAMPLE_REQUEST_ID = "req_abcdefgh234567ab"  # for help texts; has the real shape

_CURSOR_RE = re.compile(rf"(\d{{1,16}}):({REQUEST_ID_PATTERN})")

Cursor = tuple[int, str]
"""Where a pending page ends: (queue score in ms, request id)."""


def new_request_id() -> str:
    return REQUEST_ID_PREFIX + base64.b32encode(secrets.token_bytes(_ID_BYTES)).decode().lower()


def is_request_id(value: object) -> bool:
    return isinstance(value, str) and REQUEST_ID_RE.fullmatch(value) is not None


def encode_cursor(cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(f"{cursor[0]}:{cursor[1]}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> Cursor | None:
    """The cursor `encode_cursor` made, or None for anything else."""
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    match = _CURSOR_RE.fullmatch(text)
    return (int(match[1]), match[2]) if match else None
