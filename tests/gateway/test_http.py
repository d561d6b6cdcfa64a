"""The gateway over Streamable HTTP on both sides, with the MCP SDK's own client.

Towards the agent: `approvalbot gateway --http` behind the agent token. Towards the upstream:
a recorder server on loopback that wants its own bearer token, which the gateway reads from
`${UP_TOKEN}` in gateway.yaml, so the agent never holds it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from approvalbot.core.policy import Policy
from tests.gateway.test_gateway import POLICY, calls, outcome_recorded, text
from tests.helpers import approve_when_asked, eventually

UPSTREAM = Path(__file__).with_name("upstream_server.py")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, env=env, stderr=out)


async def listening(port: int, proc: subprocess.Popen, log: Path, within: float = 60) -> None:
    """Until the process accepts connections; the machine is shared, so start-up may be slow."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {tail(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}: {tail(log)}")


@dataclass
class Running:
    url: str  # the gateway's /mcp
    record: Path
    token: str


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@asynccontextmanager
async def gateway_over_http(api, tmp_path: Path) -> AsyncIterator[Running]:
    record = tmp_path / "calls.jsonl"
    up_port, gw_port = free_port(), free_port()
    secret = "upstream-secret-only-the-gateway-holds"
    up_log, gw_log = tmp_path / "upstream.log", tmp_path / "gateway.log"
    up_env = {**os.environ, "RECORD_FILE": str(record), "UPSTREAM_TOKEN": secret}
    upstream = spawn([sys.executable, str(UPSTREAM), "--http", str(up_port)], up_env, up_log)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "upstreams:\n"
        "  files:\n"
        '    url: "http://127.0.0.1:${UP_PORT}/mcp"\n'
        '    headers: {Authorization: "Bearer ${UP_TOKEN}"}\n'
        "    resource_args: {write_file: path, read_file: path}\n"
        "    timeout: 30\n"
    )
    gw_env = {
        **os.environ,
        "APPROVALBOT_URL": api.base,
        "APPROVALBOT_TOKEN": api.agent_token,
        "UP_PORT": str(up_port),
        "UP_TOKEN": secret,
    }
    cmd = [sys.executable, "-m", "approvalbot", "gateway", "--config", str(config), "--http", f"127.0.0.1:{gw_port}"]
    gateway = spawn(cmd, gw_env, gw_log)
    try:
        await listening(up_port, upstream, up_log)
        await listening(gw_port, gateway, gw_log)
        yield Running(f"http://127.0.0.1:{gw_port}/mcp", record, api.agent_token)
    finally:
        stop(gateway)
        stop(upstream)


@asynccontextmanager
async def agent(running: Running, **session_args) -> AsyncIterator[ClientSession]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {running.token}"})
    async with (
        http,
        streamable_http_client(running.url, http_client=http) as streams,
        ClientSession(streams[0], streams[1], **session_args) as session,
    ):
        await asyncio.wait_for(session.initialize(), 30)
        yield session


async def test_the_agent_needs_its_token(api, tmp_path):
    async with gateway_over_http(api, tmp_path) as running:
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(timeout=30) as http:
            bare = await http.post(running.url, json=INITIALIZE, headers=headers)
            wrong = await http.post(
                running.url, json=INITIALIZE, headers={**headers, "Authorization": "Bearer abk_agent_wrong"}
            )
            basic = await http.post(running.url, json=INITIALIZE, headers=headers, auth=("etl-bot", running.token))
        assert (bare.status_code, wrong.status_code, basic.status_code) == (401, 401, 401)
        assert bare.headers["www-authenticate"] == "Bearer"
        assert api.agent_token not in bare.text
        assert calls(running.record) == []


async def test_allowed_and_approved_over_http_both_ways(api, tmp_path):
    async with gateway_over_http(api, tmp_path) as running, agent(running) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"read_file", "write_file"} <= names  # one upstream: names unchanged

        allowed = await asyncio.wait_for(session.call_tool("read_file", {"path": "/tmp/a"}), 60)
        assert not allowed.is_error and "contents of /tmp/a" in text(allowed)
        assert calls(running.record) == [{"tool": "read_file", "arguments": {"path": "/tmp/a"}}]

        denied = await asyncio.wait_for(session.call_tool("write_file", {"path": "/etc/x", "content": "x"}), 60)
        assert denied.is_error and "no-secrets" in text(denied)

        decider = asyncio.create_task(approve_when_asked(api, within=60))
        arguments = {"path": "/srv/report.csv", "content": "a,b\n1,2\n"}
        approved = await asyncio.wait_for(session.call_tool("write_file", arguments), 90)
        decided = await decider
        assert not approved.is_error, text(approved)
        writes = [c for c in calls(running.record) if c["tool"] == "write_file"]
        assert writes == [{"tool": "write_file", "arguments": arguments}]  # exactly the approved arguments, once
        assert decided["params"] == arguments
        types_ = await outcome_recorded(api, decided["id"], "executed")
        assert types_.count("grant.consumed") == 1


async def test_tool_list_changes_reach_the_agent(api, tmp_path):
    changed = asyncio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with gateway_over_http(api, tmp_path) as running, agent(running, message_handler=on_message) as session:
        before = {t.name for t in (await session.list_tools()).tools}
        assert "read_extra" not in before
        grown = await asyncio.wait_for(session.call_tool("read_grow", {}), 60)
        assert not grown.is_error, text(grown)
        await asyncio.wait_for(changed.wait(), 30)
        after = {t.name for t in (await session.list_tools()).tools}
        assert "read_extra" in after
        extra = await asyncio.wait_for(session.call_tool("read_extra", {"path": "/tmp/e"}), 60)
        assert not extra.is_error and "extra /tmp/e" in text(extra)


async def test_requests_carry_the_client_over_http(api, tmp_path):
    async with gateway_over_http(api, tmp_path) as running, agent(running) as session:
        await session.list_tools()
        await asyncio.wait_for(session.call_tool("read_file", {"path": "/tmp/c"}), 60)

        async def created():
            found = [json.loads(r.body) async for r in api.service.audit.records()]
            return [r for r in found if r.get("type") == "request.created"] or None

        (rec,) = await eventually(created, 30)
        req = await api.service.get(rec["request_id"])
        assert req.action == "mcp.files.read_file" and req.resource == "/tmp/c"
        assert req.context["upstream"] == "files" and req.context["mcp_client"]


@pytest.mark.parametrize(
    ("files", "argv", "env", "expected"),
    [
        ({"g.yaml": "upstreams: [\n  a: b\n"}, ["--config", "g.yaml"], {}, "g.yaml is not valid YAML: expected"),
        (
            {"g.yaml": 'upstreams:\n  f: {url: "http://127.0.0.1/${GW_TEST_UNSET}"}\n'},
            ["--config", "g.yaml"],
            {},
            "${GW_TEST_UNSET} is used in the gateway configuration but not set",
        ),
        ({"g.yaml": "upstreams:\n  f: {command: x, timeout: soon}\n"}, ["--config", "g.yaml"], {}, "`timeout`"),
        ({}, ["--config", "missing.yaml"], {}, "cannot read"),
        ({}, ["--name", "f", "--http", "nonsense", "--", "true"], {}, "--http wants HOST:PORT"),
        ({}, ["--name", "f", "--http", "127.0.0.1:99999", "--", "true"], {}, "--http wants HOST:PORT"),
        ({}, ["--name", "f", "--http", "127.0.0.1:8765", "--", "true"], {"APPROVALBOT_TOKEN": ""}, "no token"),
    ],
)
def test_config_errors_are_one_clear_line(tmp_path, monkeypatch, capsys, files, argv, env, expected):
    from approvalbot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APPROVALBOT_TOKEN", "abk_agent_x")
    monkeypatch.delenv("GW_TEST_UNSET", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    assert main(["gateway", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("approvalbot gateway: ") and expected in err, err
    assert "abk_agent_x" not in err
