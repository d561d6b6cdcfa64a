"""Bearer-token checks that a crowd of bad tokens cannot turn into a crowd of Redis calls.

In order, cheapest first:
1. the shape: every token approvalbot issues is a known prefix and 43 URL-safe characters
   (some leeway, 32 to 64, for tokens made by hand in tests or future lengths); anything else is
   refused without touching Redis;
2. a short in-process memory of tokens found unknown or revoked (an LRU of digests with a TTL),
   so repeating a bad token costs nothing for a few seconds;
3. one lookup per token at a time: concurrent requests with the same token share the lookup in
   flight, so 4,000 identical bogus tokens arriving at once cost one Redis call;
4. the lookup is bounded in time; past it, the caller gets `AuthUnavailable` (503), not a hang.

Only "not found" is remembered, never a success: revoking a token takes effect at once. A miss
is not remembered when a Redis connection failed or the primary changed while it was looked up
(a failover: a node without the token's record could have answered). A token
remembered as unknown stays refused for at most `NEGATIVE_TTL` seconds after it becomes valid,
which only matters for an approver whose person is re-enabled (issued tokens are new strings).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from approvalbot.store import connections
from approvalbot.store.identities import IdentityStore, Principal, token_digest, well_formed

NEGATIVE_TTL = 10.0
NEGATIVE_SIZE = 4096
LOOKUP_TIMEOUT = 3.0


class AuthUnavailable(Exception):
    """The token could not be checked in time (Redis slow or the process overloaded): answer 503."""


class NegativeCache:
    """Digests of tokens found unknown, each forgotten after `ttl` seconds; the oldest go first when full."""

    def __init__(
        self, size: int = NEGATIVE_SIZE, ttl: float = NEGATIVE_TTL, clock: Callable[[], float] = time.monotonic
    ):
        self.size, self.ttl, self.clock = size, ttl, clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, digest: str) -> bool:
        until = self._until.get(digest)
        if until is None:
            return False
        if until <= self.clock():
            del self._until[digest]
            return False
        return True

    def add(self, digest: str) -> None:
        self._until[digest] = self.clock() + self.ttl
        self._until.move_to_end(digest)
        while len(self._until) > self.size:
            self._until.popitem(last=False)


class Authenticator:
    def __init__(
        self, identities: IdentityStore, timeout: float = LOOKUP_TIMEOUT, unknown: NegativeCache | None = None
    ):
        self.identities = identities
        self.timeout = timeout
        self.unknown = unknown if unknown is not None else NegativeCache()
        self._in_flight: dict[str, asyncio.Future[Principal | None]] = {}
        self.lookups = 0  # Redis lookups made (for tests and curiosity)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal behind `token`, or None when it is malformed, unknown or revoked."""
        if not well_formed(token):
            return None
        digest = token_digest(token)
        if digest in self.unknown:
            return None
        shared = self._in_flight.get(digest)
        if shared is not None:
            return await asyncio.shield(shared)  # a waiter that goes away must not cancel the others' lookup
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._in_flight[digest] = future
        epoch = connections.epoch()
        try:
            found = await self._lookup(token)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "exception never retrieved" warning when nobody shared it
            raise
        else:
            future.set_result(found)
            if found is None and connections.epoch() == epoch:
                self.unknown.add(digest)
            return found
        finally:
            del self._in_flight[digest]

    async def _lookup(self, token: str) -> Principal | None:
        self.lookups += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await self.identities.authenticate(token)
        except TimeoutError:
            raise AuthUnavailable(f"the token lookup took longer than {self.timeout:g} s") from None
