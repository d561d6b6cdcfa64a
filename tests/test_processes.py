"""The real command line: serve with the embedded server, web + worker processes, restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from aiohttp import web

from approvalbot.jobs.callbacks import SIGNATURE_HEADER, verify
from tests.helpers import call_once

BIN = [sys.executable, "-m", "approvalbot"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(data_dir: Path, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("APPROVALBOT_")}
    env["APPROVALBOT_DATA_DIR"] = str(data_dir)
    env["APPROVALBOT_TICK_SECONDS"] = "0.2"
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, *args], env=env, capture_output=True, text=True, timeout=60)


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([*BIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"did not stop on signal: {err}") from None
    return proc.returncode, err


def valkey_running_for(data_dir: Path) -> bool:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"valkey-server" in cmd and str(data_dir).encode() in cmd:
            return True
    return False


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="ab-", dir="/tmp"))
    yield path / "data"
    subprocess.run(["pkill", "-f", f"valkey-server.*{path}"], check=False)


async def test_serve_embedded_restart_keeps_everything_and_cli_works_alongside(short_dir):
    env = env_for(short_dir)
    # The CLI works before the service ever ran (it starts the embedded server and stops it).
    made = cli(env, "agents", "add", "etl-bot", "--owner", "dana@example.com")
    assert made.returncode == 0, made.stderr
    agent = made.stdout.strip()
    assert agent.startswith("abk_agent_") and "\n" not in agent
    assert not valkey_running_for(short_dir)

    port = free_port()
    proc = start(env, "serve", "--port", str(port))
    try:
        wait_http(port, proc)
        base = f"http://127.0.0.1:{port}"
        # ...and while it runs, on the same data.
        approver = cli(env, "approvers", "add", "alice@example.com").stdout.strip()
        status, req = await call_once("POST", f"{base}/v1/requests", agent, json={"action": "model.deploy"})
        assert status == 201
        status, _ = await call_once(
            "POST", f"{base}/v1/requests/{req['id']}/decisions", approver, json={"decision": "deny", "reason": "freeze"}
        )
        assert status == 200
        status, req2 = await call_once("POST", f"{base}/v1/requests", agent, json={"action": "model.deploy"})
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    assert not valkey_running_for(short_dir)

    proc = start(env, "serve", "--port", str(port))
    try:
        wait_http(port, proc)
        status, again = await call_once("GET", f"{base}/v1/requests/{req['id']}", agent)
        assert (status, again["status"], again["outcome_reason"]) == (200, "denied", "freeze")
        status, page = await call_once("GET", f"{base}/v1/requests?status=pending", approver)
        assert [i["id"] for i in page["items"]] == [req2["id"]]
    finally:
        code, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    listed = cli(env, "agents", "list")
    assert "etl-bot" in listed.stdout and agent not in listed.stdout + listed.stderr


async def test_web_and_worker_processes_deliver_a_signed_callback(redis_url, tmp_path):
    received: list[tuple[bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    env = env_for(
        tmp_path / "data",
        redis_url,
        APPROVALBOT_CALLBACK_SECRET="s3cret-for-test",
        APPROVALBOT_CALLBACK_ALLOW="127.0.0.1",
    )
    added = cli(env, "agents", "add", "ci-bot", "--owner", "dana@example.com")
    agent = added.stdout.strip()  # stdout: only the token, for scripts
    (own_secret,) = re.findall(r"abcb_[A-Za-z0-9_-]+", added.stderr)  # stderr: the agent's callback secret, once
    assert own_secret not in added.stdout and agent.count("\n") == 0
    approver = cli(env, "approvers", "add", "alice@example.com").stdout.strip()
    port = free_port()
    web_proc = start(env, "web", "--port", str(port))
    worker_proc = start(env, "worker")
    try:
        wait_http(port, web_proc)
        base = f"http://127.0.0.1:{port}"
        _, req = await call_once(
            "POST",
            f"{base}/v1/requests",
            agent,
            json={"action": "infra.scale", "callback_url": f"http://127.0.0.1:{hook_port}/hook"},
        )
        await call_once("POST", f"{base}/v1/requests/{req['id']}/decisions", approver, json={"decision": "approve"})
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            await __import__("asyncio").sleep(0.05)
        assert len(received) == 1
        body, header = received[0]
        assert json.loads(body)["status"] == "approved"
        assert verify(own_secret.encode(), body, header)  # signed with the agent's own secret
        assert not verify(b"s3cret-for-test", body, header)  # not the shared one: that is for older agents
        assert not verify(b"another-secret", body, header)
    finally:
        for proc in (web_proc, worker_proc):
            code, err = stop(proc, signal.SIGTERM)
            assert code == 0, err
        await runner.cleanup()


def test_bad_policy_file_stops_start_up_naming_the_line(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: x\n    match: {action: '*'}\n    effect: maybe\n")
    env = env_for(tmp_path / "data", APPROVALBOT_POLICY=str(policy))
    result = cli(env, "serve", "--port", str(free_port()))
    assert result.returncode == 2
    assert "line 4" in result.stderr and "effect" in result.stderr
    assert "Traceback" not in result.stderr


def test_rotate_secret_prints_a_new_secret_and_worker_queues_are_checked(redis_url, tmp_path):
    env = env_for(tmp_path / "data", redis_url)
    added = cli(env, "agents", "add", "ci-bot", "--owner", "dana@example.com")
    (first,) = re.findall(r"abcb_[A-Za-z0-9_-]+", added.stderr)
    rotated = cli(env, "agents", "rotate-secret", "ci-bot")
    assert rotated.returncode == 0, rotated.stderr
    assert re.fullmatch(r"abcb_[A-Za-z0-9_-]+\n", rotated.stdout) and first not in rotated.stdout
    missing = cli(env, "agents", "rotate-secret", "nobody")
    assert missing.returncode == 2 and "nobody" in missing.stderr
    bad = cli(env, "worker", "--queues", "delivery,timers2", "--burst")
    assert bad.returncode == 2 and "unknown queue" in bad.stderr
