"""The HTTP listener: a bound on open connections and on how long a client may take to send a request.

aiohttp's server has no header-read timeout: a client that sends half a request line and then
one byte a minute (slowloris) holds its connection, and its memory, for as long as it likes.
This module closes that hole below aiohttp, at the protocol level, with only public interfaces
(an asyncio protocol factory wrapping the runner's `web.Server`, and one middleware):

- every connection gets a timer of `read_timeout` seconds when it opens; the middleware stops
  it once a request has fully arrived (headers parsed by aiohttp, body received to its end),
  so a handler may take as long as it needs (long-polls wait up to 60 s); when the handler
  returns, the timer starts again for the next request on the connection. A connection that
  trickles its headers or its body, or sits idle after a response, is closed when it fires;
- at most `max_connections` connections are open at once; one more gets a canned
  `503 Service Unavailable` with `Retry-After` and is closed, so a flood costs a write, not a
  handler, and the server never stops accepting.

A body whose declared length is over the app's limit is refused with 413 before it is read; a
chunked body over the limit cannot be received in full and is dropped by the timer. Both limits belong at the edge
too: docs/deploy.md shows the matching reverse-proxy settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("approvalbot.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BUSY_RETRY_AFTER = 1
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: %d\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)
BUSY_BODY = b'{"error":{"code":"unavailable","message":"too many open connections; retry shortly"}}'
CLOSE_SECONDS = 90.0  # a shutdown that has not finished by then is stuck; log and let the process go
LINGER = 1.0  # how long a refused connection may still send (discarded) before it is closed


@dataclass(eq=False)
class ConnectionGuard:
    """The two limits, the count of open connections, and which transport belongs to which guard."""

    read_timeout: float
    max_connections: int
    open: int = 0
    dropped: int = 0  # connections closed by the read timer
    refused: int = 0  # connections answered 503 at the limit
    _guards: dict[asyncio.BaseTransport, _Guarded] = field(default_factory=dict, repr=False)

    def factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        """The protocol factory for `loop.create_server`: aiohttp's handler, timed; or a refusal when full."""

        def make() -> asyncio.BaseProtocol:
            if self.open >= self.max_connections:
                self.refused += 1
                log.warning("refusing a connection: %d open, the limit (APPROVALBOT_MAX_CONNECTIONS)", self.open)
                return _Refuse()
            return _Guarded(self, server())

        return make

    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Stop the timer once the whole request is in; start it again when the handler is done."""
        guarded = self._guards.get(request.transport) if request.transport is not None else None
        if guarded is None:  # not served through this guard (e.g. a test server)
            return await handler(request)
        length = request.content_length
        if length is not None and length > request.client_max_size:
            # Refused unread (aiohttp would read up to the limit first): JSON like every error, then close.
            too_large = web.json_response(
                {"error": {"code": "payload_too_large", "message": "the request body is too large"}}, status=413
            )
            too_large.force_close()
            return too_large
        if request.body_exists:
            try:
                await request.content.wait_eof()
            except Exception:  # the timer (or the client) closed the connection mid-body
                raise web.HTTPRequestTimeout() from None
        guarded.disarm()
        try:
            return await handler(request)
        finally:
            guarded.arm()


class _Guarded(asyncio.Protocol):
    """aiohttp's request handler, with the read timer around it (every protocol call is passed on)."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self.guard, self.inner = guard, inner
        self.transport: asyncio.BaseTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.guard.open += 1
        self.guard._guards[transport] = self
        self.arm()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.guard.open -= 1
        if self.transport is not None:
            self.guard._guards.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def arm(self) -> None:
        self.disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.timer = asyncio.get_running_loop().call_later(self.guard.read_timeout, self._expired)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        self.guard.dropped += 1
        log.info("closing a connection that sent no complete request within %g s", self.guard.read_timeout)
        if self.transport is not None:
            self.transport.close()


class _Refuse(asyncio.Protocol):
    """Over the connection limit: answer 503 at once, half-close, discard what arrives, close soon."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY % (BUSY_RETRY_AFTER, len(BUSY_BODY), BUSY_BODY))
        if transport.can_write_eof():
            transport.write_eof()  # a FIN, not a reset: the client reads the 503 even if it is still sending
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        """Discarded: the answer is already sent."""

    def eof_received(self) -> bool | None:
        return False  # close now: the client is done too


@dataclass
class Listening:
    """A running listener; `close()` stops accepting, then shuts aiohttp down."""

    runner: web.AppRunner
    server: asyncio.Server
    guard: ConnectionGuard

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        try:
            await asyncio.wait_for(self.runner.cleanup(), timeout=CLOSE_SECONDS)
        except TimeoutError:
            log.warning("the web server did not shut down within %g s; leaving the rest to process exit", CLOSE_SECONDS)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    read_timeout: float,
    max_connections: int,
    backlog: int = 1024,
) -> Listening:
    """Listen on host:port with both limits. Adds the guard's middleware first in `app` (before it is frozen)."""
    guard = ConnectionGuard(read_timeout, max_connections)

    @web.middleware
    async def read_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await guard.middleware(request, handler)

    app.middlewares.insert(0, read_guard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(guard.factory(runner.server), host, port, reuse_address=True, backlog=backlog)
    return Listening(runner, server, guard)
