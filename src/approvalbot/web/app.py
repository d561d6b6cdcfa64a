"""Builds the aiohttp application and its shared services.

The channels are handed in (by the composition root, `approvalbot.app`): the web layer
knows the channel interface, never a channel.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

from approvalbot.audit.signing import Signer, signer_for
from approvalbot.channels import Channel
from approvalbot.config import Settings
from approvalbot.service import ApprovalService
from approvalbot.web import audit_api, deliveries_api, openapi, ops, requests_api
from approvalbot.web.context import SERVICES, Services
from approvalbot.web.errors import error_response, json_errors
from approvalbot.web.logs import limit_repeats
from approvalbot.web.waiters import Waiters

log = logging.getLogger("approvalbot.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def build_app(
    settings: Settings,
    service: ApprovalService,
    signer: Signer | None = None,
    channels: Sequence[Channel] = (),
) -> web.Application:
    """The web app; `signer` is the process's one signer (the runtime's), loaded here only if not given."""
    limit_repeats()  # expected failures under a flood log a few lines, not thousands
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[security_headers, json_errors],
    )
    redis = service.redis
    ctx = Services(settings=settings, redis=redis, service=service, waiters=Waiters(redis))
    app[SERVICES] = ctx
    ctx.extras["signer"] = signer if signer is not None else signer_for(settings)
    for table in (requests_api.routes, ops.routes, openapi.routes, audit_api.routes):
        app.add_routes(table)
    for channel in channels:
        if channel.mount(app):  # e.g. /slack/events, /api/messages; nothing when the channel is off
            ctx.channels.append(channel)
    if ctx.channels:
        deliveries_api.add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ctx.waiters.start()
        yield
        await ctx.waiters.stop()
        await ctx.health.close()

    app.cleanup_ctx.append(lifecycle)
    return app


__all__ = ["build_app", "error_response"]
