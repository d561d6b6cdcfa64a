"""A fake Microsoft Graph over real HTTP: the client-credentials token endpoint and channel message replies.

Replies are the ones the fake Bot Connector accepted (`FakeConnector` reply calls), shaped as
Graph's chatMessage collection (https://learn.microsoft.com/en-us/graph/api/chatmessage-list-replies,
https://learn.microsoft.com/en-us/graph/api/resources/chatmessage): `id`, `replyToId`, `etag`,
`messageType`, `createdDateTime`, `deletedDateTime`, `from.application` for a bot
(`applicationIdentityType: "bot"`), an html `body` with an `<attachment>` placeholder, and
`attachments` whose adaptive card `content` is a JSON *string*. Pages follow `$top` (at most 50)
and `@odata.nextLink`. The token endpoint is Microsoft Entra's v2.0 one
(https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.teams.conftest import FakeConnector

APP_ID = "00000000-aaaa-bbbb-cccc-000000000001"
APP_SECRET = "graph-client-secret"


@dataclass
class FakeGraph:
    connector: FakeConnector
    team_group_id: str
    tenant: str
    page_size: int = 50
    extra: list[dict[str, Any]] = field(default_factory=list)  # more messages in every thread (e.g. a person's)
    requests: list[str] = field(default_factory=list)
    server: TestServer | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/v1.0/teams/{team}/channels/{channel}/messages/{message}/replies", self._replies)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()

    async def close(self) -> None:
        if self.server:
            await self.server.close()

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        good = (
            request.match_info["tenant"] == self.tenant
            and form.get("client_id") == APP_ID
            and form.get("client_secret") == APP_SECRET
            and form.get("grant_type") == "client_credentials"
            and str(form.get("scope", "")).endswith("/.default")
        )
        if not good:
            return web.json_response({"error": "invalid_client", "error_description": "AADSTS7000215"}, status=401)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": f"t-{self.tenant}"}
        )

    async def _replies(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        if request.headers.get("Authorization") != f"Bearer t-{self.tenant}":
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        team, channel, message = (request.match_info[k] for k in ("team", "channel", "message"))
        if team != self.team_group_id:
            return web.json_response({"error": {"code": "NotFound", "message": "No team found"}}, status=404)
        items = [self._message(c, team, channel, message) for c in self.connector.ok("reply")]
        items = [m for m in items if m is not None] + [{**m, "replyToId": message} for m in self.extra]
        top = min(int(request.query.get("$top", 20)), 50, self.page_size)
        start = int(request.query.get("$skiptoken", 0))
        page: dict[str, Any] = {
            "@odata.context": f"{self.base}/v1.0/$metadata#teams('{team}')/channels('{channel}')/messages('{message}')"
            "/replies",
            "@odata.count": len(items),
            "value": items[start : start + top],
        }
        if start + top < len(items):
            page["@odata.nextLink"] = (
                f"{self.base}/v1.0/teams/{team}/channels/{channel}/messages/{message}/replies"
                f"?$top={top}&$skiptoken={start + top}"
            )
        return web.json_response(page)

    def _message(self, call: Any, team: str, channel: str, message: str) -> dict[str, Any] | None:
        if call.conversation.split(";")[0] != channel or call.activity_id != message:
            return None
        attachments = [
            {
                "id": f"att-{call.result_id}-{i}",
                "contentType": a.get("contentType"),
                "contentUrl": None,
                "content": json.dumps(a.get("content")),
                "name": None,
                "thumbnailUrl": None,
                "teamsAppId": None,
            }
            for i, a in enumerate((call.body or {}).get("attachments") or [])
        ]
        return {
            "id": call.result_id,
            "replyToId": message,
            "etag": call.result_id,
            "messageType": "message",
            "createdDateTime": "2026-11-22T10:00:00.000Z",
            "lastModifiedDateTime": "2026-11-22T10:00:00.000Z",
            "lastEditedDateTime": None,
            "deletedDateTime": None,
            "subject": None,
            "summary": None,
            "chatId": None,
            "importance": "normal",
            "locale": "en-us",
            "webUrl": None,
            "policyViolation": None,
            "eventDetail": None,
            "from": {
                "application": {
                    "@odata.type": "#microsoft.graph.teamworkApplicationIdentity",
                    "id": APP_ID,
                    "displayName": "approvalbot",
                    "applicationIdentityType": "bot",
                },
                "device": None,
                "user": None,
            },
            "body": {
                "contentType": "html",
                "content": "".join(f'<attachment id="{a["id"]}"></attachment>' for a in attachments),
            },
            "channelIdentity": {"teamId": team, "channelId": channel},
            "attachments": attachments,
            "mentions": [],
            "reactions": [],
        }
