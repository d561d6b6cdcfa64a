"""Decision-to-agent latency: from an approver's call to the agent's held-open GET returning.

    .venv/bin/python bench/decision_latency.py [--rounds 300]

Web and worker run as separate processes; the agent waits with ?wait=30 on one
connection while the approver decides on another. The baseline is the round
trip of a plain GET /healthz on the same server, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
from common import Result, cli, free_port, machine, process, redis_server, service_env


async def run(base: str, agent: str, approver: str, rounds: int) -> tuple[Result, Result]:
    auth_a = {"Authorization": f"Bearer {agent}"}
    auth_r = {"Authorization": f"Bearer {approver}"}
    latencies, baseline = [], []
    async with aiohttp.ClientSession() as agent_http, aiohttp.ClientSession() as approver_http:
        for _ in range(rounds):
            async with agent_http.post(f"{base}/v1/requests", json={"action": "infra.scale"}, headers=auth_a) as r:
                request_id = (await r.json())["id"]
            arrived = asyncio.get_running_loop().create_future()

            async def wait(request_id: str, arrived: asyncio.Future[float]) -> None:
                async with agent_http.get(f"{base}/v1/requests/{request_id}?wait=30", headers=auth_a) as r:
                    await r.read()
                    arrived.set_result(time.perf_counter())

            waiter = asyncio.create_task(wait(request_id, arrived))
            await asyncio.sleep(0.01)  # let the long-poll reach the server and register
            started = time.perf_counter()
            async with approver_http.post(
                f"{base}/v1/requests/{request_id}/decisions", json={"decision": "approve"}, headers=auth_r
            ) as r:
                assert r.status == 200, await r.text()
            latencies.append(await arrived - started)
            await waiter
            started = time.perf_counter()
            async with approver_http.get(f"{base}/healthz") as r:
                await r.read()
            baseline.append(time.perf_counter() - started)
    total = sum(latencies)
    return (
        Result("API approve -> agent wakes", rounds, 0, total, latencies),
        Result("baseline GET /healthz", rounds, 0, sum(baseline), baseline),
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args()
    with redis_server() as redis_url:
        # One agent asks back to back: limits it never reaches keep the quota checks on the path.
        env = service_env(
            redis_url, APPROVALBOT_AGENT_RATE="1000000/1000000", APPROVALBOT_MAX_PENDING_PER_AGENT="100000000"
        )
        agent = cli(env, "agents", "add", "bench-bot", "--owner", "owner@example.com")
        approver = cli(env, "approvers", "add", "reviewer@example.com")
        port = free_port()
        py = sys.executable
        with (
            process([py, "-m", "approvalbot", "web", "--port", str(port)], env, port),
            process([py, "-m", "approvalbot", "worker"], env),
        ):
            ours, base = asyncio.run(run(f"http://127.0.0.1:{port}", agent, approver, args.rounds))
    print(f"machine: {machine()}")
    for r in (ours, base):
        print(f"{r.name:<30} p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):6.2f} ms  ({r.count} rounds)")


if __name__ == "__main__":
    main()
