"""Slow clients against the real listener (web/server.py) on loopback, with raw sockets.

A client that trickles its headers or body is dropped after the read timeout (short here: 0.5 s);
a handler may still take its time (long-polls); connections over the limit get a 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from redis.asyncio import Redis

from approvalbot.app import build_app
from approvalbot.runtime import Runtime
from approvalbot.web.server import Listening, serve

READ_TIMEOUT = 0.5


@dataclass
class Served:
    listening: Listening
    agent_token: str

    @property
    def port(self) -> int:
        return self.listening.port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def listening(rt: Runtime, redis: Redis, max_connections: int = 100) -> AsyncIterator[Served]:
    service = rt.service(redis)
    _, token = await service.identities.add_agent("slow-bot", "owner@example.com")
    app = build_app(rt.settings, service)
    running = await serve(app, "127.0.0.1", 0, read_timeout=READ_TIMEOUT, max_connections=max_connections)
    try:
        yield Served(running, token)
    finally:
        await running.close()


@pytest.fixture
async def served(rt: Runtime, redis: Redis) -> AsyncIterator[Served]:
    async with listening(rt, redis) as s:
        yield s


async def closed_within(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; (what it sent, how long that took)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        data = await asyncio.wait_for(reader.read(), timeout=limit)
    except ConnectionResetError:  # closed while we were still sending: the kernel answers with a reset
        data = b""
    return data, loop.time() - started


async def test_half_sent_headers_are_dropped(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /v1/requests HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    await writer.drain()
    data, took = await closed_within(reader, 10)
    assert data == b"" and took >= READ_TIMEOUT * 0.8
    writer.close()


async def test_trickled_headers_are_dropped_however_busy_the_trickle(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    dripping = asyncio.create_task(trickle())
    data, _ = await closed_within(reader, 10)
    # The trickle takes 20 s: it was cut (still running, or failed writing), not finished.
    still_sending = not dripping.done() or dripping.exception() is not None
    dripping.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await dripping
    assert data == b"" and still_sending  # every byte arrived in time, the request never did
    writer.close()


async def test_half_sent_body_is_dropped(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /v1/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + served.agent_token.encode() + b'\r\nContent-Length: 100\r\n\r\n{"action":'
    )
    await writer.drain()
    data, _ = await closed_within(reader, 10)
    assert b"201" not in data
    writer.close()


async def test_normal_requests_keep_working_during_slow_clients(served: Served) -> None:
    slow = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(20)]
    for _, writer in slow:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {served.agent_token}"}
        for _ in range(3):  # on one kept-alive connection, with pauses shorter than the timeout
            async with http.post(served.base + "/v1/requests", json={"action": "a.b"}, headers=headers) as resp:
                assert resp.status == 201
            await asyncio.sleep(READ_TIMEOUT / 3)
        # A handler may take longer than the read timeout: the long-poll is answered, not dropped.
        async with http.post(served.base + "/v1/requests", json={"action": "a.b"}, headers=headers) as resp:
            rid = (await resp.json())["id"]
        async with http.get(f"{served.base}/v1/requests/{rid}?wait={READ_TIMEOUT * 3}", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "pending"
    for reader, writer in slow:
        assert await closed_within(reader, 10) == (b"", pytest.approx(0, abs=10))
        writer.close()
    assert served.listening.guard.dropped >= 20


async def test_a_body_over_the_limit_gets_413_at_once(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /v1/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + served.agent_token.encode() + b"\r\nContent-Length: 10000000\r\n\r\n{"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readline(), timeout=5)
    assert b" 413 " in head
    writer.close()


async def test_connections_over_the_limit_get_503_and_retry_after(rt: Runtime, redis: Redis) -> None:
    async with listening(rt, redis, max_connections=5) as s:
        held = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(5)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer and b"unavailable" in answer
        writer.close()
        assert s.listening.guard.refused == 1
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http, http.get(s.base + "/healthz") as resp:
            assert resp.status == 200
