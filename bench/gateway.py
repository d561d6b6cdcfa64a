"""What the MCP gateway adds to a tool call, and how soon an approved call reaches the agent.

    .venv/bin/python bench/gateway.py [--rounds 300] [--gated 50]

Web and worker run as separate processes with a policy that allows `read_file` and puts
`write_file` before a person. Two SDK clients over stdio are open side by side, one straight to
the upstream and one through `approvalbot gateway` in front of the same upstream program (the
agent rate limit is off: the bench creates requests faster than an agent should), and
allowed calls alternate between them, so both see the same machine at the same moment. The
added latency is gateway minus direct, per percentile. For a gated call the clock starts when
the approver's decision is sent and stops when the agent's `call_tool` returns (the gateway
waits with a long-poll, then uses the grant and forwards the call; the outcome is reported
after the agent has its result). An allowed call costs one call to approvalbot (the request that
also uses its grant, `?consume_grant=true`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from common import Result, cli, free_port, machine, process, redis_server, service_env
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from approvalbot.client import AsyncApprovalClient

UPSTREAM = str(Path(__file__).with_name("mcp_echo_server.py"))
POLICY = """
rules:
  - name: reads
    match: {action: "mcp.files.read_*"}
    effect: allow
  - name: writes
    match: {action: "mcp.files.*"}
    effect: require_approval
    approvers: ["reviewer@example.com"]
"""


@asynccontextmanager
async def mcp_session(command: list[str], env: dict[str, str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), 60)
        await session.list_tools()
        yield session


async def timed_call(session: ClientSession, tool: str, arguments: dict[str, str]) -> float:
    started = time.perf_counter()
    result = await session.call_tool(tool, arguments)
    elapsed = time.perf_counter() - started
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return elapsed


async def service_calls(client: AsyncApprovalClient, i: int) -> list[float]:
    """The calls to approvalbot the gateway makes for an allowed call, timed one by one: the request
    that also uses its grant (on the agent's path) and the outcome report (sent after the agent has
    its result, so off its path)."""
    marks = [time.perf_counter()]
    params = {"path": f"/s/{i}"}
    req, consumed = await client.request_consuming(
        "mcp.files.read_file", resource=params["path"], params=params, idempotency_key=f"s-{i}"
    )
    marks.append(time.perf_counter())
    assert req.grant is not None and consumed is not None
    await client.report_outcome(req.id, "executed")
    marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


async def next_pending(approver: AsyncApprovalClient) -> str:
    while True:
        page = await approver.pending(limit=1)
        if page.items:
            return page.items[0].id
        await asyncio.sleep(0.005)


async def run(base: str, agent: str, approver_token: str, rounds: int, gated: int) -> list[Result]:
    py = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPROVALBOT_")}
    gateway_env = {**env, "APPROVALBOT_URL": base, "APPROVALBOT_TOKEN": agent}
    gateway = [py, "-m", "approvalbot", "gateway", "--name", "files", "--", py, UPSTREAM]
    direct_times, gateway_times, gated_times = [], [], []
    stages: list[list[float]] = [[], []]
    async with (
        mcp_session([py, UPSTREAM], env) as direct,
        mcp_session(gateway, gateway_env) as through,
        AsyncApprovalClient(base, approver_token) as approver,
        AsyncApprovalClient(base, agent) as as_agent,
    ):
        for i in range(20):  # warm-up: connections, imports, caches
            await timed_call(direct, "read_file", {"path": f"/w/{i}"})
            await timed_call(through, "read_file", {"path": f"/w/{i}"})
        for i in range(rounds):
            first, second = (direct, through) if i % 2 else (through, direct)
            a = await timed_call(first, "read_file", {"path": f"/r/{i}"})
            b = await timed_call(second, "read_file", {"path": f"/r/{i}"})
            direct_times.append(a if first is direct else b)
            gateway_times.append(b if first is direct else a)
            for stage, seconds in zip(stages, await service_calls(as_agent, i), strict=True):
                stage.append(seconds)
        for i in range(gated):
            call = asyncio.create_task(through.call_tool("write_file", {"path": f"/g/{i}", "content": "x"}))
            request_id = await next_pending(approver)
            await asyncio.sleep(0.05)  # let the gateway's long-poll reach the server
            started = time.perf_counter()
            await approver.decide(request_id, "approve")
            result = await call
            gated_times.append(time.perf_counter() - started)
            if result.is_error:
                raise RuntimeError(f"gated call failed: {result.content}")
    return [
        Result("direct to the upstream", rounds, 0, sum(direct_times), direct_times),
        Result("through the gateway", rounds, 0, sum(gateway_times), gateway_times),
        Result("approve -> tool result", gated, 0, sum(gated_times), gated_times),
        *(
            Result(name, rounds, 0, sum(times), times)
            for name, times in zip(
                ("  request + grant use (one call)", "  outcome report (background)"), stages, strict=True
            )
        ),
    ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--gated", type=int, default=50)
    args = p.parse_args()
    policy = Path(tempfile.mkdtemp(prefix="ab-bench-policy-")) / "policy.yaml"
    policy.write_text(POLICY)
    with redis_server() as redis_url:
        env = service_env(redis_url, APPROVALBOT_POLICY=str(policy), APPROVALBOT_AGENT_RATE="off")
        agent = cli(env, "agents", "add", "bench-bot", "--owner", "owner@example.com")
        approver = cli(env, "approvers", "add", "reviewer@example.com")
        port = free_port()
        py = sys.executable
        with (
            process([py, "-m", "approvalbot", "web", "--port", str(port)], env, port),
            process([py, "-m", "approvalbot", "worker"], env),
        ):
            direct, through, gated, *parts = asyncio.run(
                run(f"http://127.0.0.1:{port}", agent, approver, args.rounds, args.gated)
            )
    print(f"machine: {machine()}")
    for r in (direct, through, gated):
        print(f"{r.name:<26} p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):6.2f} ms  ({r.count} calls)")
    print(
        f"{'added by the gateway':<26} p50 {through.pct(50) - direct.pct(50):6.2f} ms  "
        f"p99 {through.pct(99) - direct.pct(99):6.2f} ms  (target: p50 < 2 ms)"
    )
    print(f"{'approve -> tool result':<26} p50 {gated.pct(50):6.2f} ms  (target: p50 < 30 ms)")
    print("where an allowed call's time goes: the gateway's calls to approvalbot, made straight:")
    for r in parts:
        print(f"{r.name:<26} p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):6.2f} ms")


if __name__ == "__main__":
    main()
