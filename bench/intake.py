"""Intake benchmark: POST /v1/requests through the full path vs one-Redis-write baseline.

    .venv/bin/python bench/intake.py [--seconds 10] [--concurrency 32] [--rate 200]

Full path: auth, validation, policy, atomic commit with audit record, sealing,
response; the worker dispatches each audit record (a card job per request when
Slack is configured). The baseline parses the same JSON and does one SET.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from common import (
    ROOT,
    cli,
    closed_loop,
    cpu_seconds,
    free_port,
    machine,
    open_loop,
    process,
    redis_server,
    service_env,
    wait_until_idle,
)

BODY = {
    "action": "dataset.export",
    "resource": "s3://warehouse/customers",
    "params": {"rows": 120000, "format": "parquet", "pii": False},
    "justification": "quarterly churn analysis",
    "context": {"code_path": "pipelines/export.py:88", "run_url": "https://ci.example.com/run/77"},
}


def poster(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def post(http, n: str) -> bool:
        async with http.post(url, json=BODY, headers=headers) as resp:
            await resp.read()
            return resp.status == 201

    return post


async def measure(name: str, url: str, token: str | None, args, pids: list[int]) -> tuple:
    post = poster(url, token)
    await closed_loop(name, post, args.concurrency, 1.0)  # warm-up
    cpu_before = sum(cpu_seconds(p) for p in pids)
    throughput = await closed_loop(name, post, args.concurrency, args.seconds)
    cpu = (sum(cpu_seconds(p) for p in pids) - cpu_before) / throughput.count
    paced = await open_loop(f"{name} @ {args.rate:g}/s", post, args.rate, args.seconds)
    return throughput, paced, cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate", type=float, default=200)
    args = p.parse_args()
    with redis_server() as redis_url:
        # One agent sends everything here: its quotas stay on (their checks are part of the cost
        # measured) but high enough never to refuse, or this would measure 429s.
        env = service_env(
            redis_url, APPROVALBOT_AGENT_RATE="1000000/1000000", APPROVALBOT_MAX_PENDING_PER_AGENT="100000000"
        )
        token = cli(env, "agents", "add", "bench-bot", "--owner", "owner@example.com")
        web_port, base_port = free_port(), free_port()
        py = sys.executable
        with (
            process([py, "-m", "approvalbot", "web", "--port", str(web_port)], env, web_port) as web,
            process([py, "-m", "approvalbot", "worker"], env) as worker,
            process([py, str(ROOT / "bench" / "baseline_server.py"), str(base_port)], env, base_port) as baseline,
        ):
            wait_until_idle([web.pid, worker.pid, baseline.pid])  # the worker has no port to wait for
            ours = asyncio.run(
                measure(
                    "approvalbot intake", f"http://127.0.0.1:{web_port}/v1/requests", token, args, [web.pid, worker.pid]
                )
            )
            base = asyncio.run(
                measure("baseline (1 SET)", f"http://127.0.0.1:{base_port}/v1/requests", None, args, [baseline.pid])
            )
    print(
        f"machine: {machine()}; Redis: {'REDIS_URL' if 'REDIS_URL' in __import__('os').environ else 'embedded Valkey'}"
    )
    print(f"closed loop, {args.concurrency} connections, {args.seconds:g} s; open loop at {args.rate:g} req/s")
    for result in (*ours[:2], *base[:2]):
        print(result.line())
    print(f"throughput ratio approvalbot/baseline: {ours[0].rate / base[0].rate:.2f}")
    print(
        f"server CPU per request: approvalbot {ours[2] * 1e6:.0f} us (web + worker), "
        f"baseline {base[2] * 1e6:.0f} us; ratio baseline/approvalbot {base[2] / ours[2]:.2f}"
    )


if __name__ == "__main__":
    main()
