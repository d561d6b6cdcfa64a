"""The gateway in front of a real, published MCP server: aiomcp-server-filesystem from PyPI.

It has the reference filesystem server's tools (read_text_file, list_directory, write_file,
edit_file, move_file, ...), none for deleting; move_file is the one that takes a file away from
where it was. The policy lets reads and listings through and puts every change before a person.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from approvalbot.core.policy import Policy
from tests.gateway.test_gateway import outcome_recorded, text
from tests.helpers import approve_when_asked

pytest.importorskip("aiomcp_server_filesystem")

POLICY = """
rules:
  - name: reads
    match: {action: "mcp.fs.read_*"}
    effect: allow
  - name: listings
    match: {action: "mcp.fs.list_*"}
    effect: allow
  - name: changes
    match: {action: "mcp.fs.*"}
    effect: require_approval
    approvers: ["*"]
"""


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


async def test_reads_pass_writes_and_moves_wait_for_a_person(api, tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.txt").write_text("hello")
    env = {**os.environ, "APPROVALBOT_URL": api.base, "APPROVALBOT_TOKEN": api.agent_token}
    gateway = ["-m", "approvalbot", "gateway", "--name", "fs"]
    for tool, arg in (
        ("write_file", "path"),
        ("edit_file", "path"),
        ("move_file", "source"),
        ("read_text_file", "path"),
    ):
        gateway += ["--resource-arg", f"{tool}={arg}"]
    upstream = [sys.executable, "-m", "aiomcp_server_filesystem", str(root)]
    params = StdioServerParameters(command=sys.executable, args=[*gateway, "--", *upstream], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), 30)
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"read_text_file", "list_directory", "write_file", "edit_file", "move_file"} <= names

        read = await asyncio.wait_for(session.call_tool("read_text_file", {"path": str(root / "a.txt")}), 60)
        assert not read.is_error and "hello" in text(read)
        listed = await asyncio.wait_for(session.call_tool("list_directory", {"path": str(root)}), 60)
        assert not listed.is_error and "a.txt" in text(listed)
        assert not await api.service.redis.zrange("ab:pending", 0, -1)  # nobody was asked

        target = root / "b.txt"
        decider = asyncio.create_task(approve_when_asked(api, within=60))
        call = asyncio.create_task(session.call_tool("write_file", {"path": str(target), "content": "approved"}))
        decided = await decider
        written = await asyncio.wait_for(call, 60)
        assert not written.is_error, text(written)
        assert target.read_text() == "approved"
        assert decided["action"] == "mcp.fs.write_file" and decided["resource"] == str(target)
        await outcome_recorded(api, decided["id"], "executed")

        decider = asyncio.create_task(approve_when_asked(api, "deny", "keep it where it is", within=60))
        moved = await asyncio.wait_for(
            session.call_tool("move_file", {"source": str(root / "a.txt"), "destination": str(root / "c.txt")}), 90
        )
        denied = await decider
        assert moved.is_error and "keep it where it is" in text(moved)
        assert denied["resource"] == str(root / "a.txt")
        assert (root / "a.txt").read_text() == "hello" and not (root / "c.txt").exists()
