"""GET /v1/requests/{id}/deliveries: where each channel's card is, and which deliveries failed.

Read from the generic per-target delivery state (`store.deliveries`) and the request's
`delivery.failed` records. Every enabled channel has a part, and every part has the same
`deliveries` list (one entry per place the card goes: `state`, `message_id`, `last_error`, ...);
each channel adds its own fields beside it (Slack: `channel`, `ts`; Teams: `conversations`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from approvalbot.core.events import EventType
from approvalbot.store.deliveries import GONE, REQUEST_TARGET, DeliveryStore, TargetState
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
        body[channel.name] = {**channel.delivery_status(mine, failures), "deliveries": targets_of(mine, failures)}
    return web.json_response(body)


def target_state(state: TargetState) -> str:
    """One word for where a target stands: posted, posting, retrying, failed, gone or waiting."""
    if state.failed:
        # Gone: the channel said so, or the platform refused the bot (403) or the place (404 for a new post).
        refused = state.failed == "http_403" or (state.failed == "http_404" and "post" in state.errors)
        return "gone" if state.failed == GONE or refused else "failed"
    if state.message_id:
        return "retrying" if state.failures else "posted"
    if state.posting_since:
        return "posting"
    return "retrying" if state.failures else "waiting"


def targets_of(states: dict[str, TargetState], failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The channel-generic view of every target with delivery state (not the per-request `_request`)."""
    out = []
    for target, s in sorted(states.items()):
        if target == REQUEST_TARGET:
            continue
        out.append(
            {
                "target": target,
                "where": s.where or None,
                "state": target_state(s),
                "message_id": s.message_id or None,
                "last_error": s.failed or s.last_error or None,
                "mirrored_seq": s.mirrored_seq,
                "reposts": s.reposts,
                "errors": dict(s.errors),
            }
        )
    if not out and failures:
        # Nothing was ever attempted (e.g. no conversation matched the rule): the failure says why.
        last = failures[-1]
        out.append(
            {
                "target": last.get("target"),
                "where": None,
                "state": "failed",
                "message_id": None,
                "last_error": last.get("error"),
                "mirrored_seq": 0,
                "reposts": 0,
                "errors": {str(last.get("stage")): str(last.get("error"))},
            }
        )
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/requests/{id}/deliveries", delivery_status)
