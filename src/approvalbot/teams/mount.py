"""`POST /api/messages` on approvalbot's own aiohttp server, when Teams is configured."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from aiohttp import web
from azure.core.exceptions import DeserializationError  # defined here; msrest re-exports it
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity

from approvalbot.teams.bot import ApprovalBot
from approvalbot.teams.sdk import build_adapter
from approvalbot.teams.settings import DEV_WARNING, TeamsSettings, teams_settings
from approvalbot.teams.tenants import TenantGate
from approvalbot.web.context import SERVICES
from approvalbot.web.errors import error_response

log = logging.getLogger("approvalbot.teams")

ROUTE = "/api/messages"
URL_RE = re.compile(r"^https?://[^\s/]+")


@dataclass
class TeamsApp:
    settings: TeamsSettings
    adapter: CloudAdapter
    bot: ApprovalBot


def mount(app: web.Application, ts: TeamsSettings | None = None) -> bool:
    """Add the Bot Framework endpoint; returns whether Teams is on.

    The shared services (settings, redis, service) come from the app (`web.context`).
    Raises `TeamsConfigError` when the registration is incomplete, before any traffic.
    """
    if ts is None:
        ts = teams_settings(app[SERVICES].settings)
    if not ts.enabled:
        return False
    ts.validate()
    ctx = app[SERVICES]
    if ts.mode == "dev":
        log.warning(DEV_WARNING)
    teams = TeamsApp(ts, build_adapter(ts), ApprovalBot(ctx.service, ctx.redis, ts.max_bytes))
    ctx.extras["teams"] = teams

    async def messages(request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return error_response(415, "unsupported_media_type", "send the activity as application/json")
        raw = await request.read()  # aiohttp keeps the body, so the adapter can read it again
        try:
            body = json.loads(raw)
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("type"), str)
                or not (activity := Activity().deserialize(body)).type
            ):
                raise ValueError("no activity type")
            # Every activity Teams sends says where to answer; without that any reply would fail.
            if not (activity.conversation and activity.conversation.id and URL_RE.match(activity.service_url or "")):
                raise ValueError("no conversation or service URL")
        except (ValueError, TypeError, AttributeError, DeserializationError):
            return error_response(400, "invalid_activity", "the body is not a Bot Framework activity")
        gate = TenantGate(teams.bot, ts, ctx.service, ctx.redis)  # after the token check, before the bot
        response = await teams.adapter.process(request, gate)
        if gate.refused:
            return error_response(403, "foreign_workspace", "this bot does not serve your organisation's tenant")
        return response or web.Response(status=201)

    app.router.add_post(ROUTE, messages)
    return True
