"""Long-poll wake-ups pushed through Redis pub/sub.

commit.lua publishes a request's id on every change; each web process keeps one
subscription and wakes its local waiters, so an agent's held-open call returns
within milliseconds of a decision made in any process or channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis

from approvalbot.store import keys

log = logging.getLogger("approvalbot.waiters")
# A subscription to a primary that vanished without closing the socket would wait forever;
# a ping after this many idle seconds turns that into an error, and the loop re-subscribes
# through the connection factory (with Sentinel: on the newly promoted primary).
PING_SECONDS = 5.0


class Waiters:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="approvalbot-waiters")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        """Cancel the listener and wait a bounded time: a client library that swallows the cancellation
        must not hold the shutdown forever."""
        if self._task:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=5)
            if not done:
                log.warning("waiters listener did not stop within 5 s; abandoning it")
            elif not self._task.cancelled() and self._task.exception() is not None:
                log.warning("waiters listener had failed: %r", self._task.exception())

    async def _listen(self) -> None:
        """Resubscribe after a lost connection; wake everyone then, as changes may have been missed."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.CHANGED_CHANNEL)
                self._ready.set()
                self._wake_all()
                idle = 0.0
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        self._wake(message["data"].decode())
                        idle = 0.0
                        continue
                    idle += 1.0
                    if idle >= PING_SECONDS:  # a silent primary may be gone (failover): find out
                        await pubsub.ping()
                        idle = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: retry, and let waiters re-check
                log.warning("waiters subscription lost (%s); retrying", exc.__class__.__name__)
                self._wake_all()
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py 8.1 leaves PubSub.aclose unannotated (close/reset are deprecated aliases)
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, request_id: str) -> None:
        for event in self._waiting.get(request_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watch(self, request_id: str) -> Iterator[asyncio.Event]:
        """Register before re-reading state, so a change between read and wait is not missed."""
        event = asyncio.Event()
        self._waiting[request_id].add(event)
        try:
            yield event
        finally:
            self._waiting[request_id].discard(event)
            if not self._waiting[request_id]:
                del self._waiting[request_id]
