"""Reliability fixtures: the service as real OS processes against the test Redis.

Every test in this directory carries the `reliability` marker (added at collection), so
`pytest -m "not reliability"` is the fast suite and `pytest -m reliability` this one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from approvalbot.store.identities import IdentityStore

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A directory cannot carry `pytestmark`, so its tests are marked here, by where they live."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.reliability)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("APPROVALBOT_")}
    env.update(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=str(data_dir), APPROVALBOT_TICK_SECONDS="0.2")
    env["APPROVALBOT_CALLBACK_ALLOW"] = "127.0.0.1"  # the tests' callback receivers listen on loopback
    env.update(extra)
    return env


class Proc:
    """One approvalbot process; kill() is SIGKILL, stop() a graceful SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], port: int | None = None):
        self.args, self.env, self.port = args, env, port
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "approvalbot", *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.port:
            deadline = time.monotonic() + 20
            while True:
                if self.popen.poll() is not None:
                    raise AssertionError(self.popen.stderr.read())
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError("web process did not start") from None
                    time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> str:
        if self.popen is None or self.popen.poll() is not None:
            return ""
        self.popen.send_signal(signal.SIGTERM)
        try:
            _, err = self.popen.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            _, err = self.popen.communicate()
        return err

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def spawn(tmp_path) -> Iterator:
    procs: list[Proc] = []

    def make(redis_url: str, *args: str, web: bool = False, **env: str) -> Proc:
        port = free_port() if web else None
        full = [*args, "--port", str(port)] if web else list(args)
        proc = Proc(full, service_env(redis_url, tmp_path / "data", **env), port).start()
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.kill()


async def make_tokens(redis_url: str, approvers: int = 1) -> tuple[str, list[str]]:
    redis = Redis.from_url(redis_url)
    ids = IdentityStore(redis)
    _, agent = await ids.add_agent("test-bot", "owner@example.com")
    tokens = [(await ids.add_approver(f"r{i}@example.com", ["security"]))[1] for i in range(approvers)]
    await redis.aclose()
    return agent, tokens
