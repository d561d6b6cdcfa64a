"""A fake Slack over real HTTP: Web API methods, response URLs and a Socket Mode WebSocket.

It records every call (method, arguments, token) and keeps just enough state to
answer like Slack does: channels with messages and threads, message metadata,
users with emails. `fail()` makes the next calls of a method answer 429 with
Retry-After, 500, or an `ok: false` error, optionally after doing the work
(the "Slack posted it but the answer was lost" case).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
BOT_ID = "B0BOT"
BOT_USER = "U0BOT"
TEAM = "T0FAKE"  # the bot token's own workspace (auth.test)
OTHER_TEAM = "T0OTHER"  # another workspace, e.g. across a Slack Connect channel


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    failed: bool = False


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    after: bool = False  # do the work, then answer with the failure anyway


@dataclass
class FakeSlack:
    users: dict[str, str] = field(default_factory=dict)  # user id -> email
    user_teams: dict[str, str] = field(default_factory=dict)  # user id -> team (default: TEAM)
    strangers: set[str] = field(default_factory=set)  # users.info says is_stranger (Slack Connect)
    deleted: set[str] = field(default_factory=set)
    channels: dict[str, str] = field(default_factory=dict)  # name -> id
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to response_url
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # channel -> messages
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    socket_received: asyncio.Queue = field(default_factory=asyncio.Queue)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)

    def __post_init__(self):
        self._ts = itertools.count(1)
        self._views = itertools.count(1)
        self.server: TestServer | None = None
        self.socket_connected = asyncio.Event()

    # --- control ---------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self.server:
            await self.server.close()

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    def response_url(self, key: str = "r1") -> str:
        return f"{self.base}/response/{key}"

    def fail(self, method: str, times: int = 1, **failure: Any) -> None:
        self.failures.setdefault(method, []).extend(Failure(**failure) for _ in range(times))

    def calls_of(self, method: str, ok_only: bool = True) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.method == method and not (ok_only and c.failed)]

    def top_level(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.get(channel, []) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]

    def replies(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.get(channel, []) if m.get("thread_ts") == ts and m["ts"] != ts]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    # --- HTTP ------------------------------------------------------------------

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        for key in ("blocks", "metadata", "view"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        call = Call(method, args, token)
        self.calls.append(call)
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            call.failed = True
            return web.json_response({"ok": False, "error": "invalid_auth"})
        pending = self.failures.get(method)
        failure = pending.pop(0) if pending else None
        if failure and not failure.after:
            call.failed = True
            return self._failure(failure)
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        body = handler(args) if handler else {"ok": False, "error": "unknown_method"}
        if not body.get("ok"):
            call.failed = True
        if failure:
            call.failed = True
            return self._failure(failure)
        return web.json_response(body)

    def _failure(self, failure: Failure) -> web.Response:
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        if failure.status >= 500 and failure.error is None:
            return web.Response(status=failure.status, text="upstream trouble", headers=headers)
        error = failure.error or ("ratelimited" if failure.status == 429 else "internal_error")
        return web.json_response({"ok": False, "error": error}, status=failure.status, headers=headers)

    async def _response_url(self, request: web.Request) -> web.Response:
        self.responses.append({"key": request.match_info["key"], **(await request.json())})
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP"}, "debug_info": {}}
        )
        self.socket_connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await self.socket_received.put(json.loads(msg.data))
        self.sockets.remove(ws)
        return ws

    async def send_envelope(self, envelope: dict[str, Any]) -> None:
        await self.sockets[-1].send_json(envelope)

    # --- methods ---------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _channel_id(self, channel: str) -> str | None:
        if channel.startswith("#"):
            return self.channels.get(channel[1:])
        if channel in self.channels.values() or channel.startswith("D"):
            return channel
        if channel in self.users:
            return "D" + channel[1:]
        return None

    def m_auth_test(self, args):
        return {
            "ok": True,
            "url": "https://fake.slack.test/",
            "team": "Fake",
            "user": "approvalbot",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
        }

    def m_apps_connections_open(self, args):
        return {"ok": True, "url": self.base.replace("http://", "ws://") + "/socket"}

    def m_chat_postMessage(self, args):
        channel = self._channel_id(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = self._next_ts()
        message = {
            "type": "message",
            "ts": ts,
            "text": args.get("text"),
            "blocks": args.get("blocks"),
            "bot_id": BOT_ID,
            "user": BOT_USER,
            "metadata": args.get("metadata"),
        }
        if args.get("thread_ts"):
            if not self.message(channel, args["thread_ts"]):
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = args["thread_ts"]
        self.messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def m_chat_update(self, args):
        found = self.message(str(args.get("channel")), str(args.get("ts")))
        if found is None:
            return {"ok": False, "error": "message_not_found"}
        found.update(text=args.get("text"), blocks=args.get("blocks"), edited=True)
        return {"ok": True, "channel": args["channel"], "ts": args["ts"]}

    def m_chat_postEphemeral(self, args):
        if self._channel_id(str(args.get("channel", ""))) is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def m_views_open(self, args):
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        return {"ok": True, "view": {"id": f"V{next(self._views):05d}", **args["view"]}}

    def m_views_publish(self, args):
        return {"ok": True, "view": {"id": f"V{next(self._views):05d}", **args["view"]}}

    def m_users_info(self, args):
        uid = args.get("user")
        if uid not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": self.user_object(uid)}

    def user_object(self, uid: str) -> dict[str, Any]:
        """A user as users.info (and a user_change event) carries it: the fields identity reads."""
        return {
            "id": uid,
            "team_id": self.user_teams.get(uid, TEAM),
            "name": uid.lower(),
            "deleted": uid in self.deleted,
            "is_bot": False,
            "is_stranger": uid in self.strangers,
            "profile": {"email": self.users[uid], "team": self.user_teams.get(uid, TEAM)},
        }

    def m_users_lookupByEmail(self, args):
        for uid, email in self.users.items():
            if email == args.get("email"):
                return {"ok": True, "user": {"id": uid, "deleted": False, "profile": {"email": email}}}
        return {"ok": False, "error": "users_not_found"}

    def _page(self, items, args, key="messages"):
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 100)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "ok": True,
            key: page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _shown(self, messages, args):
        with_meta = str(args.get("include_all_metadata")) in ("1", "true", "True")
        return [{k: v for k, v in m.items() if with_meta or k != "metadata"} for m in messages]

    def m_conversations_history(self, args):
        channel = self._channel_id(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(args.get("oldest") or 0)
        found = [m for m in self.top_level(channel) if float(m["ts"]) >= oldest]
        return self._page(self._shown(list(reversed(found)), args), args)

    def m_conversations_replies(self, args):
        channel = str(args.get("channel"))
        parent = self.message(channel, str(args.get("ts")))
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        return self._page(self._shown([parent, *self.replies(channel, parent["ts"])], args), args)

    def m_conversations_open(self, args):
        user = str(args.get("users", "")).split(",")[0]
        if user not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + user[1:]}}

    def m_conversations_list(self, args):
        return self._page([{"id": cid, "name": name} for name, cid in self.channels.items()], args, "channels")
