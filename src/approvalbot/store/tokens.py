"""Bearer tokens: how they are made, stored and named.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a
copy of the database does not let anyone act as an agent, approver or executor.
A slow password hash buys nothing for secrets with this much entropy.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Literal

TokenKind = Literal["agent", "approver", "executor", "auditor"]
TOKEN_PREFIX: dict[TokenKind, str] = {
    "agent": "abk_agent_",
    "approver": "abk_appr_",
    "executor": "abk_exec_",
    "auditor": "abk_audit_",
}
# Issued tokens are a prefix and 43 URL-safe characters; 32 to 64 leaves room for other lengths.
TOKEN_SHAPE = re.compile("(?:" + "|".join(re.escape(p) for p in TOKEN_PREFIX.values()) + ")[A-Za-z0-9_-]{32,64}")


class IdentityError(ValueError):
    """An identity command that cannot be done as asked; the message says why and is safe to show."""


def well_formed(token: str) -> bool:
    """Could this be a token approvalbot issued? Checked before any lookup: junk never reaches Redis."""
    return TOKEN_SHAPE.fullmatch(token) is not None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(digest: str) -> str:
    """A token's public name in audit records: derived from the digest, so old tokens have one too,
    and too short to help anyone guess the token."""
    return "tok_" + digest[:16]


def new_token(kind: TokenKind) -> str:
    return TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
