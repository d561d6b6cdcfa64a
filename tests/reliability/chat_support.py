"""Shared pieces for the chat reliability tests: watched fakes, drained process logs, identities.

The fakes (Slack Web API, Bot Framework connector) run on the test's event loop; the
service runs as real OS processes (see `spawn` in conftest.py) pointed at them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from approvalbot.store.identities import IdentityStore
from tests.reliability.conftest import Proc
from tests.slack.conftest import CHANNEL, SIGNING_SECRET, SlackHarness
from tests.slack.fake_slack import BOT_TOKEN, Failure, FakeSlack
from tests.teams.conftest import TENANT, FakeConnector, Person, Teams

REQUEST_ID = re.compile(r"req_[a-z2-7]{16}")

USERS = {
    "U0ALICE": "alice@example.com",
    "U0BOB": "bob@example.com",
    "U0OWNER": "owner@example.com",
    "U0MALLORY": "mallory@example.com",
}

POLICY = """
rules:
  - name: everything
    match: {action: "*"}
    effect: require_approval
    approvers: [security]
    min_approvals: 1
"""


class WatchedSlack(FakeSlack):
    """The fake Slack, plus a way to await what our server did: a modal opened, a note sent.

    Keys: ("view", trigger_id) -> the view passed to views.open; ("note", user, request_id)
    -> the text of every ephemeral message telling `user` something about `request_id`.
    """

    def __post_init__(self):
        super().__post_init__()
        self.seen: dict[Hashable, list[Any]] = {}
        self.waiting: dict[Hashable, list[asyncio.Future]] = {}
        self.failed_statuses: list[int] = []

    def _put(self, key: Hashable, value: Any) -> None:
        self.seen.setdefault(key, []).append(value)
        for future in self.waiting.pop(key, []):
            if not future.done():
                future.set_result(None)

    async def first(self, keys: list[Hashable], within: float = 30) -> tuple[Hashable, Any]:
        """The first of `keys` to have been seen (now or in the next `within` seconds), and its first value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for key in keys:
                if self.seen.get(key):
                    return key, self.seen[key][0]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"none of {keys} happened within {within} s")
            futures = [loop.create_future() for _ in keys]
            for key, future in zip(keys, futures, strict=True):
                self.waiting.setdefault(key, []).append(future)
            await asyncio.wait(futures, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    def _failure(self, failure: Failure) -> web.Response:
        self.failed_statuses.append(failure.status)
        return super()._failure(failure)

    def m_views_open(self, args):
        body = super().m_views_open(args)
        if body.get("ok"):
            self._put(("view", args["trigger_id"]), args["view"])
        return body

    def m_chat_postEphemeral(self, args):
        body = super().m_chat_postEphemeral(args)
        if body.get("ok"):
            text = str(args.get("text") or "")
            for rid in set(REQUEST_ID.findall(text)):
                self._put(("note", args.get("user"), rid), text)
        return body

    # --- what was posted, by request ---------------------------------------------------

    def cards_by_request(self, channel: str = CHANNEL) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for message in self.top_level(channel):
            meta = message.get("metadata") or {}
            if meta.get("event_type") == "approvalbot_request":
                out.setdefault(meta["event_payload"]["request_id"], []).append(message)
        return out

    def thread_seqs(self, channel: str, ts: str) -> list[int]:
        return [
            m["metadata"]["event_payload"]["seq"]
            for m in self.replies(channel, ts)
            if (m.get("metadata") or {}).get("event_type") == "approvalbot_audit"
        ]

    def outcome_dms(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for channel, messages in self.messages.items():
            if not channel.startswith("D"):
                continue
            for m in messages:
                meta = m.get("metadata") or {}
                if meta.get("event_type") == "approvalbot_outcome":
                    rid = meta["event_payload"]["request_id"]
                    counts[rid] = counts.get(rid, 0) + 1
        return counts


async def start_connector() -> tuple[FakeConnector, TestServer]:
    fake = FakeConnector()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    fake.url = str(server.make_url("/"))
    return fake, server


def teams_people(fake: FakeConnector) -> dict[str, Person]:
    return {
        "alice": fake.add(Person("29:alice", "aad-alice", "alice@example.com", "Alice")),
        "bob": fake.add(Person("29:bob", "aad-bob", "bob@example.com", "Bob")),
        "owner": fake.add(Person("29:owner", "aad-owner", "owner@example.com", "Olga Owner")),
    }


def request_of(card: dict[str, Any]) -> str | None:
    """The request an Adaptive Card is about (its id is on every request card)."""
    found = set(REQUEST_ID.findall(repr(card)))
    return found.pop() if len(found) == 1 else None


def reply_seq(card: dict[str, Any]) -> int:
    """The sequence number of a mirrored audit record (its fallback text is "#<seq> <type>")."""
    return int(card["fallbackText"].split()[0].lstrip("#"))


class Drained:
    """Reads a process's stderr continuously (a full pipe would block it) and keeps every line."""

    def __init__(self, proc: Proc):
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.popen.stderr.buffer:  # bytes: fuzzed payloads end up in warnings
            self.lines.append(line.decode(errors="replace"))

    def text(self, wait: float = 0) -> str:
        if wait:
            self.thread.join(wait)
        return "".join(self.lines)


@dataclass
class Identities:
    """Bearer tokens: the agent (owned by owner@example.com) and three approvers in `security`."""

    agent: str
    alice: str
    bob: str
    owner: str


async def make_identities(redis_url: str) -> Identities:
    redis = Redis.from_url(redis_url)
    ids = IdentityStore(redis)
    _, agent = await ids.add_agent("etl-bot", "owner@example.com")
    _, alice = await ids.add_approver("alice@example.com", ["security"])
    _, bob = await ids.add_approver("bob@example.com", ["security"])
    _, owner = await ids.add_approver("owner@example.com", ["security"])
    await redis.aclose()
    return Identities(agent=agent, alice=alice, bob=bob, owner=owner)


def chat_env(fake_slack: FakeSlack, policy: Path, **extra: str) -> dict[str, str]:
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": "#approvals",
        "SLACK_API_URL": fake_slack.api_url,
        "APPROVALBOT_TEAMS_DEV": "1",
        "APPROVALBOT_TEAMS_TENANTS": TENANT,  # Teams needs its allowed tenants, dev mode included
        "APPROVALBOT_POLICY": str(policy),
    }
    env.update(extra)
    return env


def slack_client(fake: FakeSlack, base: str, http, triggers: itertools.count) -> SlackHarness:
    """Acts as Slack towards one web process (signed requests); trigger ids unique across all."""
    return SlackHarness(
        api=None, fake=fake, base=base, http=http, queue=None, outbox=None, app=None, _triggers=triggers
    )


def teams_client(fake: FakeConnector, base: str, http) -> Teams:
    """Acts as Teams towards one web process (dev mode: unsigned activities)."""
    return Teams(base=base, http=http, service=None, fake=fake, settings=None, sync=None)


__all__ = [
    "CHANNEL",
    "POLICY",
    "USERS",
    "Drained",
    "WatchedSlack",
    "chat_env",
    "make_identities",
    "reply_seq",
    "request_of",
    "slack_client",
    "start_connector",
    "teams_client",
    "teams_people",
]
