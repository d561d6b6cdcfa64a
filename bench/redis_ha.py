"""Production-shaped Redis: what MIN_REPLICAS costs, how much one primary can take, what a failover pauses.

    .venv/bin/python bench/redis_ha.py [--seconds 5] [--rounds 150]

Real redis-server processes on loopback (tests/reliability/redis_procs.py): a primary with one
replica. In the same run, for APPROVALBOT_MIN_REPLICAS=0 and =1 (alternated, twice each):

- intake: POST /v1/requests, 16 clients closed-loop against one web process + a worker;
- decision -> agent: an approver's API call until the agent's held-open GET ?wait= returns.

Headroom of one primary: the same intake spread over 1, 2 and 3 web processes, with the
primary's own CPU per request (INFO cpu), so what one Redis core could absorb is
1 s / (Redis CPU per request), whatever the load generator and web processes manage here.

Failover pause: three sentinels, two web processes and a worker on the Sentinel URL, steady
load; SIGKILL the primary, bring it back as a replica of the new one. Printed: the promotion
time and the longest gap without a 2xx, for MIN_REPLICAS=0 and =1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import Iterator

import aiohttp
import redis as sync_redis
from common import ROOT, Result, cli, closed_loop, free_port, machine, process, service_env

sys.path.insert(0, str(ROOT))
from tests.reliability.redis_procs import (
    Cluster,
    Server,
    primary_port,
    servers,
    wait_for_sentinels,
)

BODY = {"action": "dataset.export", "resource": "s3://warehouse/customers", "params": {"rows": 120000}}
LIMITS_OFF = {"APPROVALBOT_AGENT_RATE": "off", "APPROVALBOT_MAX_PENDING_PER_AGENT": "0"}
PY = sys.executable


@contextlib.contextmanager
def service(url: str, env: dict[str, str], webs: int = 1) -> Iterator[list[str]]:
    ports = [free_port() for _ in range(webs)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(process([PY, "-m", "approvalbot", "web", "--port", str(port)], env, port))
        stack.enter_context(process([PY, "-m", "approvalbot", "worker"], env))
        yield [f"http://127.0.0.1:{p}" for p in ports]


async def intake(bases: list[str], agent: str, seconds: float, concurrency: int = 16) -> Result:
    headers = {"Authorization": f"Bearer {agent}"}
    counter = itertools.count()

    async def post(http: aiohttp.ClientSession, n: str) -> bool:
        base = bases[next(counter) % len(bases)]
        async with http.post(f"{base}/v1/requests", json=BODY, headers=headers) as r:
            await r.read()
            return r.status == 201

    return await closed_loop(f"intake x{len(bases)} web", post, concurrency, seconds)


async def decision_latency(base: str, agent: str, approver: str, rounds: int) -> Result:
    auth_a, auth_r = {"Authorization": f"Bearer {agent}"}, {"Authorization": f"Bearer {approver}"}
    latencies = []
    async with aiohttp.ClientSession() as agent_http, aiohttp.ClientSession() as approver_http:
        for _ in range(rounds):
            async with agent_http.post(f"{base}/v1/requests", json=BODY, headers=auth_a) as r:
                request_id = (await r.json())["id"]
            arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()

            async def wait(request_id: str = request_id, arrived: asyncio.Future[float] = arrived) -> None:
                async with agent_http.get(f"{base}/v1/requests/{request_id}?wait=30", headers=auth_a) as r:
                    await r.read()
                    arrived.set_result(time.perf_counter())

            waiter = asyncio.create_task(wait())
            await asyncio.sleep(0.01)  # the long-poll reaches the server and registers
            started = time.perf_counter()
            async with approver_http.post(
                f"{base}/v1/requests/{request_id}/decisions", json={"decision": "approve"}, headers=auth_r
            ) as r:
                assert r.status == 200, await r.text()
            latencies.append(await arrived - started)
            await waiter
    return Result("decision -> agent", rounds, 0, sum(latencies), latencies)


def redis_cpu(port: int) -> float:
    client = sync_redis.Redis(port=port)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def tokens(env: dict[str, str]) -> tuple[str, str]:
    agent = cli(env, "agents", "add", f"bench-{time.monotonic_ns()}", "--owner", "owner@example.com")
    approver = cli(env, "approvers", "add", f"reviewer-{time.monotonic_ns()}@example.com")
    return agent, approver


def replicas_cost(group: Cluster, args: argparse.Namespace) -> None:
    primary = group.redis()
    group.replica_of(primary.port)
    url = f"redis://127.0.0.1:{primary.port}/0"
    agent, approver = tokens(service_env(url))
    print("\nMIN_REPLICAS (primary + 1 replica on loopback, one web process + worker, same run):")
    for replicas in (0, 1, 0, 1):
        env = service_env(url, APPROVALBOT_MIN_REPLICAS=str(replicas), **LIMITS_OFF)
        with service(url, env) as bases:
            load = asyncio.run(intake(bases, agent, args.seconds))
            decided = asyncio.run(decision_latency(bases[0], agent, approver, args.rounds))
        print(
            f"  MIN_REPLICAS={replicas}: intake {load.rate:6.0f} req/s p50 {load.pct(50):5.2f} ms "
            f"p99 {load.pct(99):6.2f} ms ({load.errors} errors); decision -> agent p50 {decided.pct(50):5.2f} ms "
            f"p99 {decided.pct(99):6.2f} ms"
        )


def headroom(group: Cluster, args: argparse.Namespace) -> None:
    primary = group.redis()
    url = f"redis://127.0.0.1:{primary.port}/0"
    agent, _ = tokens(service_env(url))
    env = service_env(url, **LIMITS_OFF)
    print("\nOne primary's headroom (intake spread over N web processes, 32 clients):")
    for webs in (1, 2, 3):
        with service(url, env, webs) as bases:
            before = redis_cpu(primary.port)
            load = asyncio.run(intake(bases, agent, args.seconds, concurrency=32))
            used = redis_cpu(primary.port) - before
        per_request = used / max(load.count, 1)
        print(
            f"  {webs} web: {load.rate:6.0f} req/s, p99 {load.pct(99):6.2f} ms; Redis CPU {per_request * 1e6:5.0f} µs "
            f"per request, Redis core busy {used / load.seconds:4.0%} -> one Redis core ≈ "
            f"{1 / per_request if per_request else float('inf'):,.0f} req/s"
        )


async def steady_load(bases: list[str], agent: str, stop: asyncio.Event, successes: list[float]) -> None:
    headers = {"Authorization": f"Bearer {agent}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def lane(i: int) -> None:
            n = 0
            while not stop.is_set():
                key = f"{i}-{n}"
                try:
                    async with http.post(
                        f"{bases[n % len(bases)]}/v1/requests", json=BODY, headers={**headers, "Idempotency-Key": key}
                    ) as r:
                        await r.read()
                        if r.status in (200, 201):
                            successes.append(time.monotonic())
                            n += 1
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.02)

        await asyncio.gather(*(lane(i) for i in range(4)))


async def kill_under_load(
    group: Cluster, primary: Server, sentinels: list[Server], bases: list[str], agent: str
) -> tuple[float, float, list[float]]:
    """Steady load, SIGKILL the primary, bring it back as a replica; (kill, promotion, 2xx times)."""
    successes: list[float] = []
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(bases, agent, stop, successes))
    await asyncio.sleep(3)
    old = primary.port
    killed = time.monotonic()
    primary.kill()
    while primary_port(sentinels[0]) == old:
        assert time.monotonic() < killed + 60, "no promotion"
        await asyncio.sleep(0.05)
    promoted = time.monotonic()
    group.replica_of(primary_port(sentinels[0]), port=old)
    await asyncio.sleep(4)
    stop.set()
    await load
    return killed, promoted, successes


def failover(args: argparse.Namespace) -> None:
    print("\nFailover pause (Sentinel, down-after 1 s, two web processes + worker, steady intake):")
    for replicas in (0, 1):
        with servers() as group:
            primary = group.redis()
            group.replica_of(primary.port)
            sentinels = [group.sentinel(primary.port) for _ in range(3)]
            wait_for_sentinels(sentinels, "mymaster", replicas=1)
            url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster/0"
            env = service_env(url, APPROVALBOT_MIN_REPLICAS=str(replicas), **LIMITS_OFF)
            agent, _ = tokens(env)
            with service(url, env, webs=2) as bases:
                killed, promoted, successes = asyncio.run(kill_under_load(group, primary, sentinels, bases, agent))
            around = sorted(t for t in successes if t > killed - 1)
            gap = max((b - a for a, b in itertools.pairwise(around)), default=float("nan"))
            print(
                f"  MIN_REPLICAS={replicas}: promotion {promoted - killed:4.2f} s after the kill; longest time "
                f"without a 2xx {gap:4.2f} s ({len(successes)} requests acknowledged)"
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=150)
    args = p.parse_args()
    print(f"machine: {machine()}")
    with servers() as group:
        replicas_cost(group, args)
    with servers() as group:
        headroom(group, args)
    failover(args)


if __name__ == "__main__":
    main()
