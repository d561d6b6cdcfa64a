"""The MCP server, driven by the MCP SDK's own client over stdio."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.helpers import approve_when_asked


def server_params(api) -> StdioServerParameters:
    env = {**os.environ, "APPROVALBOT_URL": api.base, "APPROVALBOT_TOKEN": api.agent_token}
    return StdioServerParameters(command=sys.executable, args=["-m", "approvalbot", "mcp"], env=env)


def structured(result) -> dict:
    assert not result.is_error, result
    return result.structured_content.get("result", result.structured_content)


async def test_mcp_tools_gate_an_action_through_a_human(api):
    async with stdio_client(server_params(api)) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), timeout=30)
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"request_approval", "approval_status"} <= tools

        decider = asyncio.create_task(approve_when_asked(api, within=30))
        result = await asyncio.wait_for(
            session.call_tool(
                "request_approval",
                {
                    "action": "repo.force_push",
                    "resource": "main",
                    "justification": "rewrite leaked secret out of history",
                    "wait_seconds": 30,
                },
            ),
            timeout=40,
        )
        await decider
        outcome = structured(result)
        assert outcome["approved"] is True and outcome["status"] == "approved"
        assert outcome["decided_by"] == ["alice@example.com"]

        decider = asyncio.create_task(approve_when_asked(api, "deny", "use a revert", within=30))
        denied = structured(
            await session.call_tool("request_approval", {"action": "repo.force_push", "wait_seconds": 30})
        )
        await decider
        assert denied["approved"] is False and denied["reason"] == "use a revert"

        pending = structured(await session.call_tool("request_approval", {"action": "db.migrate", "wait_seconds": 0}))
        assert pending["status"] == "pending"
        status = structured(await session.call_tool("approval_status", {"request_id": pending["request_id"]}))
        assert status["status"] == "pending" and status["approvals_needed"] == 1
