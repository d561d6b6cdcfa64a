"""/healthz's view of Redis: down only when Redis is down, not when this process is busy.

The probe has its own connection, outside the request pool: when a flood holds every pooled
connection, a ping through that pool would wait in line (or fail with "no connection") and
report Redis down while Redis is fine. Concurrent probes share one ping in flight, so a crowd
of health checks is one command too.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import ConnectionPool, Redis

PING_TIMEOUT = 5.0


class HealthProbe:
    def __init__(self, redis: Redis, timeout: float = PING_TIMEOUT):
        pool = redis.connection_pool
        # Same server and options (TLS, socket, credentials) as the request pool; two connections at most.
        own = ConnectionPool(connection_class=pool.connection_class, max_connections=2, **pool.connection_kwargs)
        self.redis = Redis(connection_pool=own)
        self.timeout = timeout
        self._ping: asyncio.Task[bool] | None = None

    async def redis_up(self) -> bool:
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self._ping)

    async def _probe(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        if self._ping is not None and not self._ping.done():
            self._ping.cancel()
        await self.redis.aclose()
