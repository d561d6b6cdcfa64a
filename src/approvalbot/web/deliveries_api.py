"""GET /v1/requests/{id}/deliveries: where each channel's card is, and which deliveries failed.

Read from the generic per-target delivery state (`store.deliveries`) and the request's
`delivery.failed` records; each channel shapes its own part of the answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from approvalbot.core.events import EventType
from approvalbot.store.deliveries import DeliveryStore, TargetState
from approvalbot.web.context import services
from approvalbot.web.requests_api import readable


async def delivery_status(request: web.Request) -> web.Response:
    found = await readable(request)  # the same visibility rules as GET /v1/requests/{id}
    ctx = services(request)
    states = await DeliveryStore(ctx.redis).all(found.id)
    records = [r.as_dict() for r in await ctx.service.audit.for_request(found.id)]
    body: dict[str, Any] = {"request_id": found.id}
    for channel in ctx.channels:
        mine: dict[str, TargetState] = {t: s for (c, t), s in states.items() if c == channel.name}
        failures = [
            {
                "seq": r["seq"],
                "at": r.get("at"),
                "target": r["data"].get("target"),
                "stage": r["data"].get("stage"),
                "error": r["data"].get("error"),
            }
            for r in records
            if r.get("type") == EventType.DELIVERY_FAILED and (r.get("data") or {}).get("channel") == channel.name
        ]
        body[channel.name] = channel.delivery_status(mine, failures)
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/requests/{id}/deliveries", delivery_status)
