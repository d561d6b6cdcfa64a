"""Builds the aiohttp application and its shared services."""

from __future__ import annotations

import logging

from aiohttp import web

from approvalbot.audit.signing import signer_for
from approvalbot.config import Settings
from approvalbot.service import ApprovalService
from approvalbot.slack import mount as mount_slack
from approvalbot.teams import mount as mount_teams
from approvalbot.web import audit_api, openapi, ops, requests_api
from approvalbot.web.context import SERVICES, Services
from approvalbot.web.errors import error_response, json_errors
from approvalbot.web.waiters import Waiters

log = logging.getLogger("approvalbot.web")


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def build_app(settings: Settings, service: ApprovalService) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[security_headers, json_errors],
    )
    redis = service.redis
    ctx = Services(settings=settings, redis=redis, service=service, waiters=Waiters(redis))
    app[SERVICES] = ctx
    ctx.extras["signer"] = signer_for(settings)
    for table in (requests_api.routes, ops.routes, openapi.routes, audit_api.routes):
        app.add_routes(table)
    mount_slack(app, ctx)  # /slack/events and Socket Mode; nothing without SLACK_BOT_TOKEN
    mount_teams(app, ctx)  # /api/messages; nothing without MICROSOFT_APP_ID or APPROVALBOT_TEAMS_DEV=1

    async def lifecycle(app: web.Application):
        await ctx.waiters.start()
        yield
        await ctx.waiters.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


__all__ = ["build_app", "error_response"]
