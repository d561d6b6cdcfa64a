"""Slack fixtures: the fake Slack, our real server with Slack mounted, signed requests, jobs.

Requests to our server are signed exactly as Slack signs them and travel over
real HTTP; delivery jobs run in a real RQ worker (burst mode, in a thread) after
the outbox has turned audit records into jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from rq import Queue
from rq.scheduler import RQScheduler

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.jobs.outbox import Outbox
from approvalbot.slack import subscribers
from approvalbot.web.context import SERVICES
from tests.helpers import Api, drain, eventually, job_queues, queued, scheduled_registries
from tests.slack.fake_slack import APP_TOKEN, BOT_TOKEN, OTHER_TEAM, TEAM, FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0APPROVALS"
USERS = {
    "U0ALICE": "alice@example.com",
    "U0BOB": "bob@example.com",
    "U0OWNER": "owner@example.com",
    "U0CAROL": "carol@example.com",
    "U0MALLORY": "mallory@example.com",
    "U0DANA": "dana@example.com",
    "U0OSCAR": "oscar@example.com",
}
POLICY = """
rules:
  - name: iam-two-person
    match: {action: "iam.*"}
    effect: require_approval
    approvers: [security]
    min_approvals: 2
    remind_after: 20m
    escalate_after: 30m
    escalate_to: oncall
  - name: reads
    match: {action: "*.read"}
    effect: allow
  - name: billing
    match: {action: "billing.*"}
    effect: require_approval
    approvers: [security]
    channel: "#elsewhere"
  - name: lost
    match: {action: "lost.*"}
    effect: require_approval
    approvers: [security]
    channel: "#nowhere"
  - name: everything-else
    match: {action: "*"}
    effect: require_approval
    approvers: [security, dana@example.com]
"""


@pytest.fixture
async def fake_slack():
    fake = FakeSlack(users=dict(USERS), channels={"approvals": CHANNEL, "elsewhere": "C0ELSEWHERE"})
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def slack_env(monkeypatch, fake_slack) -> dict[str, str]:
    """Jobs read settings from the environment (like the worker process), so set it there."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": "#approvals",
        "SLACK_API_URL": fake_slack.api_url,
    }
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(redis_url, data_dir, slack_env) -> Settings:
    return Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, APPROVALBOT_TICK_SECONDS=0.2)


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class SlackHarness:
    """Our server with Slack mounted, the fake Slack, and helpers to act as Slack and as the worker."""

    api: Api
    fake: FakeSlack
    base: str
    http: aiohttp.ClientSession
    queue: Queue
    outbox: Outbox
    app: Any
    _triggers: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def service(self):
        return self.api.service

    # --- acting as Slack ---------------------------------------------------------

    async def post(
        self,
        body: str,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature or sign(body, ts),
        }
        async with self.http.post(self.base + "/slack/events", data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text()

    async def interact(self, payload: dict[str, Any], **kwargs) -> tuple[int, str]:
        return await self.post(urlencode({"payload": json.dumps(payload)}), **kwargs)

    def click_payload(
        self,
        user: str,
        request_id: str,
        action: str = "approve",
        channel: str | None = CHANNEL,
        ts: str = "1.000001",
        home: bool = False,
        team: str = TEAM,
    ) -> dict:
        payload: dict[str, Any] = {
            "type": "block_actions",
            "team": {"id": team, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": team},
            "api_app_id": "A0APP",
            "token": "legacy-verification-token",
            "trigger_id": f"trigger-{next(self._triggers)}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action,
                    "block_id": "decide",
                    "value": request_id,
                    "action_ts": str(time.time()),
                    "text": {"type": "plain_text", "text": action},
                }
            ],
        }
        if home:
            payload["container"] = {"type": "view", "view_id": "V0HOME"}
            payload["view"] = {"id": "V0HOME", "type": "home", "blocks": []}
        else:
            payload["container"] = {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False}
            payload["channel"] = {"id": channel, "name": "approvals"}
            payload["message"] = {"type": "message", "ts": ts, "text": "card", "blocks": []}
            payload["response_url"] = self.fake.response_url("click")
        return payload

    async def click(self, user: str, request_id: str, action: str = "approve", **kwargs) -> tuple[int, str]:
        return await self.interact(self.click_payload(user, request_id, action, **kwargs))

    def submission(self, user: str, view: dict[str, Any], reason: str | None, team: str = TEAM) -> dict[str, Any]:
        state = {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}
        return {
            "type": "view_submission",
            "team": {"id": team, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": team},
            "api_app_id": "A0APP",
            "token": "legacy-verification-token",
            "trigger_id": f"trigger-{next(self._triggers)}",
            "view": {**view, "id": view.get("id", "V00001"), "state": state, "hash": "h1"},
        }

    async def submit(
        self, user: str, view: dict[str, Any], reason: str | None = None, team: str = TEAM
    ) -> tuple[int, str]:
        return await self.interact(self.submission(user, view, reason, team))

    async def command(
        self, command: str, text: str, user: str, channel: str = CHANNEL, team: str = TEAM, **extra: str
    ) -> tuple[int, str]:
        form = {
            "token": "legacy-verification-token",
            "team_id": team,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "approvals",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "response_url": self.fake.response_url(command.strip("/")),
            "trigger_id": f"trigger-{next(self._triggers)}",
            **extra,
        }
        return await self.post(urlencode(form))

    async def event(self, event: dict[str, Any], team: str = TEAM) -> tuple[int, str]:
        body = {
            "token": "legacy-verification-token",
            "team_id": team,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{next(self._triggers)}",
            "event_time": int(time.time()),
        }
        return await self.post(json.dumps(body), content_type="application/json")

    # --- waiting on the fake -----------------------------------------------------

    async def opened_view(self, count: int = 1) -> dict[str, Any]:
        """The modal views.open showed (the count-th one), once it arrives."""

        async def check():
            views = self.fake.calls_of("views.open")
            return views[count - 1] if len(views) >= count else None

        return (await eventually(check))["view"]

    async def ephemerals_to(self, user: str, count: int = 1) -> list[dict[str, Any]]:
        async def check():
            found = [c for c in self.fake.calls_of("chat.postEphemeral") if c.get("user") == user]
            return found if len(found) >= count else None

        return await eventually(check)

    # --- acting as the worker ----------------------------------------------------

    async def run_jobs(self, rounds: int = 10) -> None:
        """Dispatch the outbox and run jobs until nothing new is queued (jobs may add records)."""
        for _ in range(rounds):
            while await self.outbox.dispatch():
                pass
            if queued(self.queue) == 0:
                return
            await drain(self.queue)
        raise AssertionError("jobs kept producing work")

    def scheduled(self) -> list[tuple[str, float]]:
        """Jobs waiting for a retry, with the seconds until they are due."""
        now = time.time()
        return [
            (jid, registry.get_scheduled_time(jid).timestamp() - now)
            for registry in scheduled_registries(self.queue)
            for jid in registry.get_job_ids()
        ]

    async def promote(self) -> int:
        """Let retry time pass: make scheduled jobs due and enqueue them, as the ticker's scheduler does."""
        count = 0
        for registry in scheduled_registries(self.queue):
            ids = registry.get_job_ids()
            if ids:
                self.queue.connection.zadd(registry.key, {jid: 0 for jid in ids})
                count += len(ids)
        if count:
            scheduler = RQScheduler(job_queues(self.queue), connection=self.queue.connection)
            assert scheduler.acquire_locks()
            scheduler.enqueue_scheduled_jobs()
            scheduler.release_locks()
        return count

    async def run_until_settled(self, rounds: int = 12) -> None:
        """Run jobs, then keep letting retries fall due and running them, until nothing waits."""
        for _ in range(rounds):
            await self.run_jobs()
            if not await self.promote():
                return
        raise AssertionError("retries never settled")

    # --- reading what was posted -------------------------------------------------

    def cards(self, channel: str = CHANNEL) -> list[dict[str, Any]]:
        return [
            m
            for m in self.fake.top_level(channel)
            if (m.get("metadata") or {}).get("event_type") == "approvalbot_request"
        ]

    def card_for(self, request_id: str, channel: str = CHANNEL) -> dict[str, Any]:
        found = [m for m in self.cards(channel) if m["metadata"]["event_payload"]["request_id"] == request_id]
        assert len(found) == 1, f"expected one card for {request_id}, found {len(found)}"
        return found[0]


@pytest.fixture
async def slack(rt, redis, fake_slack):
    service = rt.service(redis)
    app = build_app(rt.settings, service)
    assert "slack" in app[SERVICES].extras  # build_app mounted Slack
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    queue = Queue(rt.settings.queue_name, connection=rt.sync_redis())
    outbox = Outbox(redis, queue, subscribers(rt.settings))
    async with aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        api = Api(base=base, http=http, service=service)
        ids = service.identities
        _, api.agent_token = await ids.add_agent("etl-bot", "owner@example.com")
        _, api.approver_token = await ids.add_approver("alice@example.com", ["security"])
        await ids.add_approver("bob@example.com", ["security"])
        await ids.add_approver("owner@example.com", ["security"])  # may approve others' requests, not its agent's
        await ids.add_approver("carol@example.com", ["finance"])
        await ids.add_approver("oscar@example.com", ["oncall"])
        yield SlackHarness(api=api, fake=fake_slack, base=base, http=http, queue=queue, outbox=outbox, app=app)
    await server.close()
    queue.connection.close()


__all__ = ["APP_TOKEN", "CHANNEL", "OTHER_TEAM", "SIGNING_SECRET", "TEAM", "SlackHarness", "sign"]
