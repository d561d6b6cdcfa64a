"""The outcome, end to end: the gateway forwards an approved tool call, reports `executed`, and Slack shows it.

The thread gets the `executed` audit line after the decision, and the card, already final, is
edited once more to say when it ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.helpers import approve_when_asked
from tests.slack.conftest import CHANNEL

UPSTREAM = Path(__file__).parent.parent / "gateway" / "upstream_server.py"


async def test_an_executed_call_shows_in_the_thread_and_on_the_card(slack, tmp_path):
    api = slack.api
    record = tmp_path / "calls.jsonl"
    env = {**os.environ, "APPROVALBOT_URL": api.base, "APPROVALBOT_TOKEN": api.agent_token, "RECORD_FILE": str(record)}
    gateway = ["-m", "approvalbot", "gateway", "--name", "files", "--resource-arg", "write_file=path"]
    params = StdioServerParameters(
        command=sys.executable, args=[*gateway, "--", sys.executable, str(UPSTREAM)], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), 30)
        decider = asyncio.create_task(approve_when_asked(api, within=60))
        result = await asyncio.wait_for(session.call_tool("write_file", {"path": "/srv/out", "content": "x"}), 90)
        decided = await decider
    assert not result.is_error
    request = await slack.service.get(decided["id"])
    assert request.execution is not None and request.execution.status == "executed"

    await slack.run_jobs()
    card = slack.card_for(request.id)
    assert f"Executed {request.execution.at:%H:%M} UTC" in json.dumps(card["blocks"])
    replies = slack.fake.replies(CHANNEL, card["ts"])
    records = await slack.service.audit.for_request(request.id)
    assert records[-1].as_dict()["type"] == "executed"
    assert [r["metadata"]["event_payload"]["seq"] for r in replies] == [r.seq for r in records]  # each once, in order
    executed = [r for r in replies if "Executed (reported by" in r["text"]]
    assert len(executed) == 1 and "agent" in executed[0]["text"]
    assert replies[-1] is executed[0]  # mirrored last, after the decision and the grant's use
