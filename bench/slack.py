"""Slack figures: ack time of a signed button click under 200 req/s of intake, and click-to-agent latency.

    .venv/bin/python bench/slack.py [--seconds 10] [--rate 200]

The service runs as web + worker processes with Slack pointed at the fake Slack
of the test suite (real HTTP on loopback). Clicks are signed as Slack signs them.
Baselines in the same run: the ack with no intake load, and GET /healthz.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
from urllib.parse import urlencode

import aiohttp
from common import ROOT, Result, cli, free_port, machine, open_loop, process, redis_server, service_env

sys.path.insert(0, str(ROOT))
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack

SECRET = "bench-signing-secret"
REVIEWER = "U0REVIEW"
CHANNEL = "C0APPROVALS"


def signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={mac}",
    }


def interaction(payload: dict) -> str:
    return urlencode({"payload": json.dumps(payload)})


def click(request_id: str, n: int) -> str:
    return interaction(
        {
            "type": "block_actions",
            "team": {"id": "T0FAKE"},
            "api_app_id": "A0APP",
            "user": {"id": REVIEWER, "team_id": "T0FAKE"},
            "trigger_id": f"trig-{n}",
            "actions": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "block_id": "decide",
                    "value": request_id,
                    "action_ts": str(time.time()),
                }
            ],
            "container": {"type": "message", "message_ts": "1.0", "channel_id": CHANNEL},
            "channel": {"id": CHANNEL},
            "message": {"ts": "1.0", "text": "card", "blocks": []},
        }
    )


def submission(view: dict, n: int) -> str:
    state = {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "bench"}}}}
    return interaction(
        {
            "type": "view_submission",
            "team": {"id": "T0FAKE"},
            "api_app_id": "A0APP",
            "user": {"id": REVIEWER, "team_id": "T0FAKE"},
            "trigger_id": f"sub-{n}",
            "view": {**view, "id": f"V{n}", "state": state, "hash": "h"},
        }
    )


async def run(base: str, agent: str, fake: FakeSlack, args) -> list[Result]:
    auth = {"Authorization": f"Bearer {agent}"}
    counter = iter(range(10**9))

    async def ask(http) -> str:
        async with http.post(f"{base}/v1/requests", json={"action": "infra.scale"}, headers=auth) as r:
            return (await r.json())["id"]

    async def intake(http, _n) -> bool:
        async with http.post(f"{base}/v1/requests", json={"action": "infra.scale"}, headers=auth) as r:
            await r.read()
            return r.status == 201

    async def clicks(label: str, seconds: float) -> Result:
        latencies = []
        async with aiohttp.ClientSession() as http:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                request_id = await ask(http)
                body = click(request_id, next(counter))
                started = time.perf_counter()
                async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
        return Result(label, len(latencies), 0, seconds, latencies)

    idle = await clicks("Slack ack, no intake load", args.seconds)
    load = asyncio.create_task(open_loop("intake", intake, args.rate, args.seconds))
    loaded = await clicks(f"Slack ack, intake {args.rate:g}/s", args.seconds)
    intake_result = await load

    # Click -> modal -> submission decides -> the agent's long-poll returns.
    wake = []
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            request_id = await ask(http)
            opened = len(fake.calls_of("views.open"))
            body = click(request_id, next(counter))
            async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                await r.read()
            for _ in range(500):
                if len(fake.calls_of("views.open")) > opened:
                    break
                await asyncio.sleep(0.005)
            view = fake.calls_of("views.open")[-1]["view"]
            view = json.loads(view) if isinstance(view, str) else view
            waiter = asyncio.create_task(http.get(f"{base}/v1/requests/{request_id}?wait=30", headers=auth))
            await asyncio.sleep(0.01)
            body = submission(view, next(counter))
            started = time.perf_counter()
            async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                await r.read()
            response = await waiter
            assert (await response.json())["status"] == "approved"
            wake.append(time.perf_counter() - started)
    return [idle, loaded, intake_result, Result("Slack submit -> agent wakes", len(wake), 0, sum(wake), wake)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rate", type=float, default=200)
    args = p.parse_args()

    async def with_fake():
        fake = FakeSlack(users={REVIEWER: "reviewer@example.com"}, channels={"approvals": CHANNEL})
        await fake.start()
        try:
            with redis_server() as redis_url:
                env = service_env(
                    redis_url,
                    SLACK_BOT_TOKEN=BOT_TOKEN,
                    SLACK_SIGNING_SECRET=SECRET,
                    SLACK_CHANNEL="#approvals",
                    SLACK_API_URL=fake.api_url,
                    # One agent files 200 requests a second: its quotas stay on the path, never reached.
                    APPROVALBOT_AGENT_RATE="1000000/1000000",
                    APPROVALBOT_MAX_PENDING_PER_AGENT="100000000",
                )
                agent = cli(env, "agents", "add", "bench-bot", "--owner", "owner@example.com")
                cli(env, "approvers", "add", "reviewer@example.com")
                port = free_port()
                py = sys.executable
                with (
                    process([py, "-m", "approvalbot", "web", "--port", str(port)], env, port),
                    process([py, "-m", "approvalbot", "worker"], env),
                ):
                    # The fake runs on this event loop, so keep the loop free while processes start.
                    return await run(f"http://127.0.0.1:{port}", agent, fake, args)
        finally:
            await fake.close()

    results = asyncio.run(with_fake())
    print(f"machine: {machine()}")
    for r in results:
        print(f"{r.name:<32} p50 {r.pct(50):7.2f} ms  p99 {r.pct(99):7.2f} ms  ({r.count})")


if __name__ == "__main__":
    main()
