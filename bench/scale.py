"""Scale: 100,000 pending requests. First-page latency of the approver list, Redis memory per request.

    .venv/bin/python bench/scale.py [--requests 100000]

Requests are created through the service (the same commit and audit path as the
API, without HTTP, to fill Redis quickly); the list is then read over HTTP from
the real web server. Baseline: GET /healthz on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
from common import cli, free_port, machine, process, redis_server, service_env
from redis.asyncio import Redis

from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.service import ApprovalService


async def fill(redis_url: str, agent_name: str, n: int) -> float:
    redis = Redis.from_url(redis_url)
    service = ApprovalService(redis, Policy.default())
    agent = await service.identities.get_agent_by_name(agent_name)
    body = RequestCreate(
        action="dataset.export",
        resource="s3://warehouse/customers",
        params={"rows": 120000, "format": "parquet"},
        justification="quarterly churn analysis",
        context={"code_path": "pipelines/export.py:88"},
    )
    started = time.perf_counter()
    for start in range(0, n, 50):
        await asyncio.gather(*(service.create(agent, body) for _ in range(min(50, n - start))))
    elapsed = time.perf_counter() - started
    await redis.aclose()
    return elapsed


async def used_memory(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.aclose()


async def timed_gets(url: str, headers: dict, rounds: int = 50) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as http:
        for _ in range(rounds):
            started = time.perf_counter()
            async with http.get(url, headers=headers) as r:
                await r.read()
                assert r.status == 200
            out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=100_000)
    args = p.parse_args()
    with redis_server() as redis_url:
        # 100,000 pending from one agent: lift the per-agent limits (the checks stay on the path).
        env = service_env(
            redis_url, APPROVALBOT_AGENT_RATE="1000000/1000000", APPROVALBOT_MAX_PENDING_PER_AGENT="100000000"
        )
        cli(env, "agents", "add", "bench-bot", "--owner", "owner@example.com")
        approver = cli(env, "approvers", "add", "reviewer@example.com")
        before = asyncio.run(used_memory(redis_url))
        seconds = asyncio.run(fill(redis_url, "bench-bot", args.requests))
        after = asyncio.run(used_memory(redis_url))
        port = free_port()
        with process([sys.executable, "-m", "approvalbot", "web", "--port", str(port)], env, port):
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {approver}"}
            page = asyncio.run(timed_gets(f"{base}/v1/requests?status=pending&limit=50", auth))
            health = asyncio.run(timed_gets(f"{base}/healthz", {}))
    print(f"machine: {machine()}")
    print(
        f"created {args.requests} pending requests in {seconds:.1f} s ({args.requests / seconds:.0f}/s via the service)"
    )
    print(f"Redis memory per pending request (incl. its audit record): {(after - before) / args.requests:.0f} bytes")
    print(f"first page of GET /v1/requests (50 items): p50 {page[len(page) // 2]:.2f} ms, max {page[-1]:.2f} ms")
    print(f"baseline GET /healthz:                      p50 {health[len(health) // 2]:.2f} ms, max {health[-1]:.2f} ms")


if __name__ == "__main__":
    main()
