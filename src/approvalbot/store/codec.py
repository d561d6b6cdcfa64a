"""Replies from redis-py as the str this code works with.

Our clients never set `decode_responses`, so replies arrive as bytes; redis-py's
annotations say `bytes | str` because they cannot know that. These helpers accept
both, so the types hold without casts and without trusting a client setting.
"""

from __future__ import annotations


def text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def blob(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def member(row: object) -> str:
    """One member of a sorted-set range read without scores.

    redis-py annotates every ZRANGE reply as possibly scored (pairs); without
    `withscores` it never is, and anything else is a bug worth failing loudly on.
    """
    if isinstance(row, (bytes, str)):
        return text(row)
    raise TypeError(f"expected a sorted-set member, got {type(row).__name__}")
