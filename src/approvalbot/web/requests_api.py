"""/v1/requests: agents ask, wait and cancel; approvers list and decide."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from approvalbot.audit import grants
from approvalbot.core import ids
from approvalbot.core.errors import NotFound, Refusal, Refused
from approvalbot.core.models import CALLBACK_ALLOW, Actor, Agent, ApprovalRequest, DecisionIn, RequestCreate, Status
from approvalbot.core.rules import check_reason, may_view
from approvalbot.service import human_actor
from approvalbot.web.auth import principal, require_agent, require_approver
from approvalbot.web.context import services
from approvalbot.web.errors import ApiError, read_body, validation_details

MAX_WAIT = 60
GRANT_CONSUMED = "Grant-Consumed"  # response header of ?consume_grant=true: the audit seq of grant.consumed
Q = TypeVar("Q", bound=BaseModel)
routes = web.RouteTableDef()


def as_json(request: ApprovalRequest, status: int = 200, *, exact: bool = False) -> web.Response:
    """A request as JSON: as people are shown it (masked), unless `exact` (the agent's own reads)."""
    shown = request if exact else request.shown()
    return web.Response(
        body=shown.model_dump_json(exclude={"version"}),
        status=status,
        content_type="application/json",
    )


class RevealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(default_factory=list, max_length=200)


class CreateQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    consume_grant: bool = False


class WaitQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    wait: float = Field(default=0, ge=0, le=MAX_WAIT)


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status = Status.PENDING
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["executed", "failed"]
    detail: str | None = Field(default=None, max_length=500)
    result_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")


def decode_cursor(raw: str | None) -> ids.Cursor | None:
    if not raw:
        return None
    cursor = ids.decode_cursor(raw)
    if cursor is None:
        raise ApiError(422, "invalid_cursor", "the cursor is not one this API returned")
    return cursor


def query(model: type[Q], request: web.Request) -> Q:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ApiError(422, "invalid_query", "the query string is not valid", validation_details(exc)) from None


@routes.post("/v1/requests")
async def create_request(request: web.Request) -> web.Response:
    agent = await require_agent(request)
    allow = services(request).settings.callback_allow_list
    body = await read_body(request, RequestCreate, {CALLBACK_ALLOW: allow})
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 255):
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
    consume = query(CreateQuery, request).consume_grant
    created, fresh = await services(request).service.create(agent, body, key)
    response = as_json(created, 201 if fresh else 200, exact=True)
    if not fresh:
        response.headers["Idempotent-Replayed"] = "true"
    elif consume and created.status is Status.APPROVED and created.grant:
        seq = await _consume_now(request, agent, created)
        if seq is not None:
            response.headers[GRANT_CONSUMED] = str(seq)
    return response


async def _consume_now(request: web.Request, agent: Agent, created: ApprovalRequest) -> int | None:
    """`?consume_grant=true`: a request the policy allowed at once has its grant used by the agent in
    the same call (what a gateway forwarding the call next would do with a second round trip). The
    audit has the same `grant.consumed` record as with POST /v1/grants/consume. None, and no header,
    when it could not be used (revoked meanwhile): the caller then must not act, as ever without a grant.
    A replayed creation (Idempotent-Replayed) never consumes: only the call that created it did."""
    assert created.grant is not None
    ctx = services(request)
    actor = Actor(kind="agent", id=agent.id, email=agent.owner, person_id=agent.owner_id)
    try:
        _, seq = await grants.consume_issued(ctx.service, created, actor, consumer_name=agent.name)
    except grants.GrantError:
        return None
    return seq


async def readable(request: web.Request) -> ApprovalRequest:
    """Least visibility: agents see their own requests; persons those they stand behind, decided, or may
    decide. To anyone else a request does not exist (404, the same answer as for a missing id)."""
    return (await _readable(request))[0]


async def _readable(request: web.Request) -> tuple[ApprovalRequest, bool]:
    """The request if the caller may see it, and whether the caller is its agent (exact values)."""
    who = await principal(request)
    found = await services(request).service.get(request.match_info["id"])
    if who.agent is not None:
        visible = may_view(found, agent_id=who.agent.id)
    else:
        visible = may_view(found, approver=who.approver)
    if not visible:
        raise NotFound(found.id)
    return found, who.agent is not None


@routes.get("/v1/requests/{id}")
async def get_request(request: web.Request) -> web.Response:
    found, exact = await _readable(request)  # the agent reads its own values; people the masks
    wait = query(WaitQuery, request).wait
    if wait <= 0 or found.status.final:
        return as_json(found, exact=exact)
    ctx = services(request)
    deadline = time.monotonic() + wait
    while True:
        with ctx.waiters.watch(found.id) as changed:
            found = await ctx.service.get(found.id)
            remaining = deadline - time.monotonic()
            if found.status.final or remaining <= 0:
                return as_json(found, exact=exact)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=remaining)


@routes.post("/v1/requests/{id}/cancel")
async def cancel_request(request: web.Request) -> web.Response:
    agent = await require_agent(request)
    found = await readable(request)
    return as_json(await services(request).service.cancel(found.id, agent), exact=True)


@routes.get("/v1/requests")
async def list_requests(request: web.Request) -> web.Response:
    approver = await require_approver(request)
    q = query(ListQuery, request)
    if q.status is not Status.PENDING:
        raise ApiError(422, "invalid_query", "only status=pending can be listed")
    items, cursor = await services(request).service.pending_for(approver, decode_cursor(q.cursor), q.limit)
    # Built by hand: each item is already JSON from pydantic, so it is not parsed and dumped again.
    listed = ",".join(i.shown().model_dump_json(exclude={"version"}) for i in items)
    after = f'"{ids.encode_cursor(cursor)}"' if cursor else "null"
    body = f'{{"items":[{listed}],"next_cursor":{after}}}'
    return web.Response(body=body, content_type="application/json")


@routes.post("/v1/requests/{id}/decisions")
async def decide_request(request: web.Request) -> web.Response:
    who = await principal(request)
    if who.approver is None:
        raise Refused(Refusal.NOT_HUMAN, "only a human approver can decide; agent tokens never can")
    body = await read_body(request, DecisionIn)
    check_reason(body.decision, body.reason)  # before any lookup, as the API always has
    ctx = services(request)
    decided = await ctx.service.decide(
        request.match_info["id"],
        human_actor(who.approver, channel_user=who.token_id),
        who.approver,
        body.decision,
        body.reason,
    )
    return as_json(decided)


@routes.post("/v1/requests/{id}/outcome")
async def report_outcome(request: web.Request) -> web.Response:
    """The machine that acted says whether it worked: the request's agent, or an executor
    bound to that agent (as for consuming the grant). People never report outcomes."""
    who = await principal(request)
    if who.agent is not None:
        actor = Actor(
            kind="agent",
            id=who.agent.id,
            email=who.agent.owner,
            channel_user=who.token_id,
            person_id=who.agent.owner_id,
        )
        agent_id = who.agent.id
    elif who.executor is not None:
        actor = Actor(kind="executor", id=who.executor.id, channel_user=who.token_id)
        agent_id = who.executor.agent_id
    else:
        raise ApiError(403, "forbidden", "only the request's agent or an executor bound to it can report an outcome")
    body = await read_body(request, OutcomeIn)
    reported = await services(request).service.report_outcome(
        request.match_info["id"], actor, agent_id, body.status, body.detail, body.result_sha256
    )
    return as_json(reported)


@routes.post("/v1/requests/{id}/reveal")
async def reveal_values(request: web.Request) -> web.Response:
    """The exact values behind masks, to one eligible approver; audited as `params.revealed`."""
    who = await principal(request)
    if who.approver is None:
        raise Refused(Refusal.NOT_HUMAN, "only an approver can reveal masked values; agent tokens read their own")
    body = await read_body(request, RevealIn)
    found = await readable(request)
    values = await services(request).service.reveal(
        found.id, human_actor(who.approver, channel_user=who.token_id), who.approver, body.paths
    )
    return web.json_response(
        {"request_id": found.id, "values": values},
        headers={"Cache-Control": "no-store"},
        dumps=lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")),
    )
