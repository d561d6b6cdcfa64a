"""CPU per `ApprovalService.create`, in process: the intake path without HTTP or a load generator.

    .venv/bin/python bench/service_cpu.py [--requests 3000]

The same body as bench/intake.py, from one agent (quotas on, never reached), one after the other
and 32 in flight. Process CPU time per request is printed with the wall time. With no load
generator and no aiohttp on the same two cores, this is the steadiest figure for comparing two
commits: run it with each one's venv from one checkout (`OTHER/.venv/bin/python bench/service_cpu.py`
measures OTHER's code, since the venv installs its own checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from common import machine, redis_server
from intake import BODY

from approvalbot.config import Settings
from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.runtime import Runtime


async def measure(url: str, requests: int) -> list[str]:
    settings = Settings(
        REDIS_URL=url,
        APPROVALBOT_DATA_DIR=tempfile.mkdtemp(prefix="ab-bench-data-"),
        APPROVALBOT_AGENT_RATE="1000000/1000000",
        APPROVALBOT_MAX_PENDING_PER_AGENT="100000000",
    )
    rt = Runtime(settings=settings, redis_url=url, policy=Policy.default())
    redis = rt.async_redis()
    service = rt.service(redis)
    agent, _ = await service.identities.add_agent("bench-bot", "owner@example.com")
    body = RequestCreate.model_validate(BODY)
    for _ in range(200):  # warm-up: connections, caches
        await service.create(agent, body)
    lines = []
    for in_flight in (1, 32):
        gate = asyncio.Semaphore(in_flight)

        async def one(gate: asyncio.Semaphore) -> None:
            async with gate:
                await service.create(agent, body)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(gate) for _ in range(requests)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        lines.append(
            f"service.create, {in_flight:2d} in flight: {cpu / requests * 1e6:5.0f} us CPU, "
            f"{wall / requests * 1e6:5.0f} us wall per request"
        )
    await redis.aclose()
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args()
    with redis_server() as url:
        lines = asyncio.run(measure(url, args.requests))
    print(f"machine: {machine()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
