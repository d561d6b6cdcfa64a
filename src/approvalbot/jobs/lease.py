"""One short Redis lease, taken and given back atomically, for every "only one worker at a time" need.

Acquire, extend and release are single Lua steps that compare the holder's token,
so a slow holder whose lease expired can never extend or delete a lease that is
someone else's by now (a GET followed by a DEL could).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from redis.asyncio import Redis

# One TTL for every lease: long enough for a few network calls between two extends,
# short enough that a killed worker's lease frees its work soon.
LEASE_MS = 30_000

_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(Exception):
    """The lease expired and may be someone else's now: stop writing, and retry later."""


class Lease:
    """A token-guarded lease on `key`; re-acquiring one's own lease just extends it."""

    def __init__(self, redis: Redis, key: str, ms: int = LEASE_MS, token: str | None = None):
        self.redis = redis
        self.key = key
        self.ms = ms
        self.token = token or secrets.token_hex(8)

    async def try_acquire(self) -> bool:
        return bool(await self.redis.eval(_ACQUIRE, 1, self.key, self.token, self.ms))

    async def acquire(self, wait: float = 0.0) -> bool:
        """Take the lease, polling for up to `wait` seconds while someone else holds it."""
        deadline = time.monotonic() + wait
        while not await self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def extend(self) -> None:
        """Before each write that must be ours alone; raises LeaseLost if it is not ours any more."""
        if not await self.redis.eval(_EXTEND, 1, self.key, self.token, self.ms):
            raise LeaseLost(self.key)

    async def release(self) -> None:
        await self.redis.eval(_RELEASE, 1, self.key, self.token)
