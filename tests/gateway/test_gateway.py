"""The gateway driven by the MCP SDK's own client over stdio, against a real approvalbot on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from approvalbot.core.policy import Policy
from tests.helpers import approve_when_asked, eventually

UPSTREAM = Path(__file__).with_name("upstream_server.py")
POLICY = """
rules:
  - name: reads
    match: {action: "mcp.files.read_*"}
    effect: allow
  - name: no-secrets
    match: {action: "mcp.files.write_file", resource: "/etc/*"}
    effect: deny
  - name: writes
    match: {action: "mcp.files.*"}
    effect: require_approval
    approvers: ["*"]
"""


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


def params(api, record: Path, *extra: str) -> StdioServerParameters:
    env = {**os.environ, "APPROVALBOT_URL": api.base, "APPROVALBOT_TOKEN": api.agent_token, "RECORD_FILE": str(record)}
    cmd = [
        "-m",
        "approvalbot",
        "gateway",
        "--name",
        "files",
        "--resource-arg",
        "write_file=path",
        "--resource-arg",
        "read_file=path",
        *extra,
        "--",
        sys.executable,
        str(UPSTREAM),
    ]
    return StdioServerParameters(command=sys.executable, args=cmd, env=env)


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def text(result) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


async def audit_types(api, request_id: str) -> list[str]:
    out = []
    async for r in api.service.audit.records():
        rec = json.loads(r.body)
        if rec.get("request_id") == request_id:
            out.append(rec["type"])
    return out


async def outcome_recorded(api, request_id: str, last: str) -> list[str]:
    """The request's audit types once its outcome is in: the gateway reports it after answering the agent."""
    return await eventually(lambda: _ending(api, request_id, last), 10, lambda: f"no {last} record for {request_id}")


async def _ending(api, request_id: str, last: str) -> list[str] | None:
    types = await audit_types(api, request_id)
    return types if types and types[-1] == last else None


async def test_allowed_denied_approved_and_crash_over_stdio(api, tmp_path):
    record = tmp_path / "calls.jsonl"
    async with stdio_client(params(api, record)) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), 30)
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"read_file", "write_file", "crash"} <= names

        allowed = await asyncio.wait_for(session.call_tool("read_file", {"path": "/tmp/a"}), 30)
        assert not allowed.is_error and "contents of /tmp/a" in text(allowed)
        assert calls(record) == [{"tool": "read_file", "arguments": {"path": "/tmp/a"}}]
        # Allowed: created and its grant used in one call to approvalbot, then the outcome, once each.
        (read_id,) = await api.service.redis.zrange("ab:final", 0, -1)
        types = await outcome_recorded(api, read_id.decode(), "executed")
        assert types.count("grant.consumed") == 1 and types.count("executed") == 1

        denied = await asyncio.wait_for(session.call_tool("write_file", {"path": "/etc/passwd", "content": "x"}), 30)
        assert denied.is_error and "no-secrets" in text(denied)
        assert len(calls(record)) == 1  # the upstream never saw it

        decider = asyncio.create_task(approve_when_asked(api, within=30))
        progress: list[float] = []

        async def on_progress(p, total, message):
            progress.append(p)

        approved = await asyncio.wait_for(
            session.call_tool("write_file", {"path": "/srv/x", "content": "hello"}, progress_callback=on_progress), 60
        )
        decided = await decider
        assert not approved.is_error, text(approved)
        assert calls(record)[-1] == {"tool": "write_file", "arguments": {"path": "/srv/x", "content": "hello"}}
        assert len(calls(record)) == 2  # once
        assert progress  # told the client it was waiting
        types = await outcome_recorded(api, decided["id"], "executed")
        assert types.count("grant.consumed") == 1
        req = await api.service.get(decided["id"])
        assert req.resource == "/srv/x" and req.context["upstream"] == "files" and "mcp_client" in req.context

        decider = asyncio.create_task(approve_when_asked(api, "deny", "not today", within=30))
        refused = await asyncio.wait_for(session.call_tool("write_file", {"path": "/srv/y", "content": "z"}), 60)
        await decider
        assert refused.is_error and "alice@example.com" in text(refused) and "not today" in text(refused)
        assert len(calls(record)) == 2

        decider = asyncio.create_task(approve_when_asked(api, within=30))
        crashed = await asyncio.wait_for(session.call_tool("crash", {"path": "/srv/z"}), 60)
        decided = await decider
        assert crashed.is_error
        await outcome_recorded(api, decided["id"], "execution_failed")

        again = await asyncio.wait_for(session.call_tool("read_file", {"path": "/tmp/b"}), 60)
        assert not again.is_error  # the gateway restarted the upstream and kept serving

        unknown = await asyncio.wait_for(session.call_tool("nope", {}), 30)
        assert unknown.is_error
        huge = await asyncio.wait_for(session.call_tool("read_file", {"path": "x" * 100_000}), 30)
        assert huge.is_error and "bytes" in text(huge)


async def test_expired_and_cancelled_by_the_client(api, tmp_path):
    record = tmp_path / "calls.jsonl"
    async with stdio_client(params(api, record)) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), 30)
        await session.list_tools()
        # Expire: a ticker-less test expires the request itself once it is due.
        task = asyncio.create_task(session.call_tool("write_file", {"path": "/srv/e", "content": "1"}))
        pending = await eventually(lambda: api.service.redis.zrange("ab:pending", 0, 0), 30)
        rid = pending[0].decode()
        from datetime import timedelta

        api.service.clock = lambda: __import__("datetime").datetime.now(__import__("datetime").UTC) + timedelta(days=1)
        await api.service.expire(rid)
        result = await asyncio.wait_for(task, 30)
        assert result.is_error and "expired" in text(result)
        assert calls(record) == []
        api.service.clock = lambda: __import__("datetime").datetime.now(__import__("datetime").UTC)

        task = asyncio.create_task(session.call_tool("write_file", {"path": "/srv/c", "content": "2"}))
        pending = await eventually(lambda: api.service.redis.zrange("ab:pending", 0, 0), 30)
        rid = pending[0].decode()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        async def cancelled():
            return (await api.service.get(rid)).status.value == "cancelled"

        await eventually(cancelled, 30)
        assert calls(record) == []


async def test_approvalbot_unreachable_fails_closed(api, tmp_path):
    record = tmp_path / "calls.jsonl"
    p = params(api, record)
    p.env["APPROVALBOT_URL"] = "http://127.0.0.1:9"
    async with stdio_client(p) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), 30)
        result = await asyncio.wait_for(session.call_tool("read_file", {"path": "/tmp/a"}), 60)
        assert result.is_error and "fail closed" in text(result)
        assert calls(record) == []
