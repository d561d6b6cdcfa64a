"""Audit and grant endpoints: public keys, export, checkpoints, verification, single-use grants.

    GET  /v1/keys                 public: the Ed25519 public key(s) as JWK + PEM
    GET  /v1/audit                approver or auditor token: the log as JSON lines or CSV (streamed)
    GET  /v1/audit/checkpoints    approver or auditor token: the signed checkpoints
    GET  /v1/audit/verify         approver or auditor token: server-side verification report
    GET  /v1/audit/report         auditor token: the signed evidence report (HTML) for ?since=&until=
    POST /v1/grants/consume       the grant's agent, or an executor bound to it: use a grant once
    GET  /v1/grants/revoked       any valid token: revoked, unexpired grant ids (jti) with their expiry

The signer is read from `Services.extras["signer"]`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from approvalbot.audit import grants
from approvalbot.audit.checkpoints import read_checkpoints
from approvalbot.audit.evidence import ReportError, parse_day_or_time
from approvalbot.audit.export import export_records, render, snapshot_end
from approvalbot.audit.report_build import build_report
from approvalbot.audit.signing import Signer
from approvalbot.audit.verify import verify_redis
from approvalbot.core.models import Actor, FiniteParams
from approvalbot.web.auth import principal, require_audit_reader, require_auditor
from approvalbot.web.context import services
from approvalbot.web.errors import ApiError, read_body, validation_details

routes = web.RouteTableDef()

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def signer_of(request: web.Request) -> Signer:
    signer = services(request).extras.get("signer")
    if not isinstance(signer, Signer):
        raise ApiError(503, "signing_unavailable", "this server has no signing key configured")
    return signer


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["jsonl", "csv"] = "jsonl"
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = Field(default=None, min_length=1, max_length=100)


class ConsumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grant: str = Field(min_length=1, max_length=16_384)
    action: str | None = Field(default=None, max_length=200)
    resource: str | None = Field(default=None, max_length=1000)
    params: FiniteParams | None = None


def _query(model: type[BaseModel], request: web.Request) -> Any:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ApiError(422, "invalid_query", "the query string is not valid", validation_details(exc)) from None


@routes.get("/v1/keys")
async def public_keys(request: web.Request) -> web.Response:
    return web.json_response(signer_of(request).jwks())


@routes.get("/v1/audit")
async def export_audit(request: web.Request) -> web.StreamResponse:
    await require_audit_reader(request)
    q = _query(ExportQuery, request)
    audit = services(request).service.audit
    end = await snapshot_end(audit)
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPES[q.format]}; charset=utf-8",
            "X-Audit-Seq": str(end),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    records = export_records(audit, _utc(q.since), _utc(q.until), q.request_id, end)
    async for chunk in render(records, q.format):
        await response.write(chunk)
    await response.write_eof()
    return response


@routes.get("/v1/audit/checkpoints")
async def list_checkpoints(request: web.Request) -> web.Response:
    await require_audit_reader(request)  # approvers and auditors: what an offline verification needs
    found = await read_checkpoints(services(request).redis)
    return web.json_response({"checkpoints": [c.as_dict() for c in found]})


@routes.get("/v1/audit/verify")
async def verify_audit(request: web.Request) -> web.Response:
    """Always 200 when the check ran: the verdict is the body's `ok`, not the status."""
    await require_audit_reader(request)
    ctx = services(request)
    report = await verify_redis(ctx.redis, signer_of(request).keyring)
    return web.json_response(report.as_dict())


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: str = Field(min_length=1, max_length=40)
    until: str = Field(min_length=1, max_length=40)
    control: str | None = Field(default=None, min_length=1, max_length=100)
    action: str | None = Field(default=None, min_length=1, max_length=200)


@routes.get("/v1/audit/report")
async def evidence_report(request: web.Request) -> web.Response:
    """The evidence report as one self-contained HTML file (docs/evidence.md); auditors only."""
    await require_auditor(request)
    q = _query(ReportQuery, request)
    ctx = services(request)
    try:
        since, until = parse_day_or_time(q.since), parse_day_or_time(q.until, end=True)
        page = await build_report(
            ctx.redis,
            signer_of(request),
            since=since,
            until=until,
            deployment=ctx.settings.deployment,
            control=q.control,
            action=q.action,
        )
    except ReportError as exc:
        raise ApiError(422, "invalid_report", str(exc)) from None
    return web.Response(
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            # The report needs nothing from anywhere: no scripts, no fetches, inline styles only.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            "Content-Disposition": 'inline; filename="approvalbot-evidence.html"',
        },
    )


GRANT_ERROR_STATUS = {"grant_used": 409, "grant_revoked": 409, "grant_not_yours": 403}


@routes.get("/v1/grants/revoked")
async def list_revoked_grants(request: web.Request) -> web.Response:
    """Revoked grants that have not expired yet, for executors that check grants offline.

    Any valid token may read it (agent, executor or approver): the ids are request
    ids, which least visibility keeps from the anonymous public. An executor fetches
    it as often as it fetches `/v1/keys` and refuses a grant whose `jti` is listed.
    """
    await principal(request)
    listed = await grants.revoked_grants(services(request).redis)
    return web.json_response(
        {"revoked": listed, "as_of": int(datetime.now(UTC).timestamp())}, headers={"Cache-Control": "no-store"}
    )


@routes.post("/v1/grants/consume")
async def consume_grant(request: web.Request) -> web.Response:
    """Only the machine that does the action may use its grant: the agent itself, or an executor
    token bound to that agent. People never consume grants (an approver could otherwise burn one)."""
    who = await principal(request)
    if who.agent is not None:
        actor = Actor(
            kind="agent",
            id=who.agent.id,
            email=who.agent.owner,
            channel_user=who.token_id,
            person_id=who.agent.owner_id,
        )
        agent_id, name = who.agent.id, who.agent.name
    elif who.executor is not None:
        actor = Actor(kind="executor", id=who.executor.id, channel_user=who.token_id)
        agent_id, name = who.executor.agent_id, who.executor.name
    else:
        raise ApiError(403, "forbidden", "only the grant's agent or an executor bound to it can consume a grant")
    body = await read_body(request, ConsumeIn)
    ctx = services(request)
    try:
        claims, seq = await grants.consume(
            ctx.service,
            signer_of(request).keyring,
            body.grant,
            actor,
            agent_id=agent_id,
            action=body.action,
            resource=body.resource,
            params=body.params,
            consumer_name=name,
        )
    except grants.GrantUsed as exc:
        raise ApiError(409, "grant_used", exc.message, {"used_at": exc.used.get("at")} if exc.used else None) from None
    except grants.GrantError as exc:
        raise ApiError(GRANT_ERROR_STATUS.get(exc.code, 422), exc.code, exc.message) from None
    return web.json_response({"claims": claims, "audit_seq": seq})


# ---------------------------------------------------------------------------
# OpenAPI 3.1 path items, merged into the service's document by web/openapi.py

_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "error", **_ERR} for s in statuses}


_JWK = {
    "type": "object",
    "required": ["kid", "kty", "crv", "x", "pem"],
    "properties": {
        "kid": {"type": "string", "description": "first 16 hex digits of SHA-256 of the raw public key"},
        "kty": {"const": "OKP"},
        "crv": {"const": "Ed25519"},
        "x": {"type": "string", "description": "raw public key, base64url"},
        "pem": {"type": "string", "description": "the same key as SubjectPublicKeyInfo PEM"},
    },
}
_CHECKPOINT = {
    "type": "object",
    "required": ["seq", "hash", "at", "key_id", "sig"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1},
        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "at": {"type": "string", "format": "date-time"},
        "key_id": {"type": "string"},
        "prev": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "SHA-256 of the previous checkpoint's canonical JSON (64 zeros for the first); "
            "absent in checkpoints made before links existed",
        },
        "sig": {
            "type": "string",
            "description": "Ed25519 over canonical JSON of {at, hash, key_id, prev, seq} (prev only when present), "
            "base64url",
        },
    },
}
_PROBLEM = {
    "type": ["object", "null"],
    "required": ["seq", "kind", "detail"],
    "properties": {
        "seq": {"type": "integer"},
        "kind": {
            "enum": [
                "changed",
                "missing",
                "inserted",
                "reordered",
                "truncated",
                "checkpoint_missing",
                "signature",
                "malformed",
            ]
        },
        "detail": {"type": "string"},
    },
}
_REPORT = {
    "type": "object",
    "required": ["ok", "count", "head", "checkpoints", "checkpoints_verified", "attested_seq", "unsealed", "problem"],
    "properties": {
        "ok": {"type": "boolean"},
        "count": {"type": "integer"},
        "head": {"type": "object", "properties": {"seq": {"type": "integer"}, "hash": {"type": "string"}}},
        "checkpoints": {"type": "integer"},
        "checkpoints_verified": {"type": "integer"},
        "attested_seq": {"type": "integer", "description": "last seq covered by a verified signed checkpoint"},
        "unsealed": {"type": "integer"},
        "problem": _PROBLEM,
    },
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/keys": {
        "get": {
            "summary": "The public key(s) that sign checkpoints, grants and receipts (no auth)",
            "responses": {
                "200": {
                    "description": "a JSON Web Key Set, each key also as PEM",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["keys"],
                                "properties": {"keys": {"type": "array", "items": _JWK}},
                            }
                        }
                    },
                },
                **_errors(503),
            },
        }
    },
    "/v1/audit": {
        "get": {
            "summary": "Export the audit log, streamed (approver or auditor token)",
            "description": "JSON lines (canonical JSON of each record with seq, hash, prev_hash: verifiable "
            "offline) or CSV. The X-Audit-Seq header gives the last seq of the snapshot. "
            "Fetch /v1/audit/checkpoints first, then this, for an offline-verifiable bundle.",
            "security": _SECURED,
            "parameters": [
                {"name": "format", "in": "query", "schema": {"enum": ["jsonl", "csv"], "default": "jsonl"}},
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                    "description": "only records with at >= since",
                },
                {
                    "name": "until",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                    "description": "only records with at < until",
                },
                {"name": "request_id", "in": "query", "schema": {"type": "string", "maxLength": 100}},
            ],
            "responses": {
                "200": {
                    "description": "the records",
                    "headers": {"X-Audit-Seq": {"schema": {"type": "integer"}}},
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_errors(401, 403, 422),
            },
        }
    },
    "/v1/audit/checkpoints": {
        "get": {
            "summary": "Signed checkpoints of the chain head, oldest first (approver or auditor token)",
            "security": _SECURED,
            "responses": {
                "200": {
                    "description": "the checkpoints",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["checkpoints"],
                                "properties": {"checkpoints": {"type": "array", "items": _CHECKPOINT}},
                            }
                        }
                    },
                },
                **_errors(401, 403),
            },
        }
    },
    "/v1/audit/verify": {
        "get": {
            "summary": "Verify the log, chain and checkpoints in the store (approver or auditor token)",
            "description": "200 whenever the check ran; the verdict is `ok`, and `problem` names the "
            "first seq where the log differs from what was written.",
            "security": _SECURED,
            "responses": {
                "200": {"description": "the report", "content": {"application/json": {"schema": _REPORT}}},
                **_errors(401, 403, 503),
            },
        }
    },
    "/v1/audit/report": {
        "get": {
            "summary": "The signed evidence report for a period, as one self-contained HTML file (auditor token)",
            "description": "See docs/evidence.md. Dates are YYYY-MM-DD (UTC; `until` includes that day) or ISO "
            "8601 (`until` excluded). Approver and agent tokens get 403. 422 `invalid_report` for `since` not "
            "before `until`, a period with no records, or a control no request record in the period names.",
            "security": _SECURED,
            "parameters": [
                {"name": "since", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 40}},
                {"name": "until", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 40}},
                {"name": "control", "in": "query", "schema": {"type": "string", "maxLength": 100}},
                {
                    "name": "action",
                    "in": "query",
                    "schema": {"type": "string", "maxLength": 200},
                    "description": "a glob over action names",
                },
            ],
            "responses": {
                "200": {
                    "description": "the report (inline CSS and SVG, no scripts; verify with "
                    "`approvalbot audit verify-report`)",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **_errors(401, 403, 422, 503),
            },
        }
    },
    "/v1/grants/revoked": {
        "get": {
            "summary": "Revoked grants that have not expired yet (any valid token)",
            "description": "Revoking an agent revokes its unexpired grants. An executor that verifies grants "
            "offline refuses a grant whose jti is listed here; the list keeps an entry until its exp.",
            "security": _SECURED,
            "responses": {
                "200": {
                    "description": "the revoked grants",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["revoked", "as_of"],
                                "properties": {
                                    "revoked": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["jti", "exp"],
                                            "properties": {
                                                "jti": {"type": "string"},
                                                "exp": {"type": "integer", "description": "the grant's expiry"},
                                            },
                                        },
                                    },
                                    "as_of": {"type": "integer", "description": "server time, epoch seconds"},
                                },
                            }
                        }
                    },
                },
                **_errors(401),
            },
        }
    },
    "/v1/grants/consume": {
        "post": {
            "summary": "Use a grant exactly once (the grant's agent token, or an executor token bound to it)",
            "description": "Verifies signature, expiry and (if given) action/resource/params, then marks "
            "the grant used and records grant.consumed, naming the consumer (kind agent or executor, id, "
            "name). An agent token may only consume grants issued to that agent, an executor token only "
            "grants of the agent it is bound to; approver tokens get 403 forbidden. A grant of a revoked "
            "agent gets 409 grant_revoked.",
            "security": _SECURED,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["grant"],
                            "additionalProperties": False,
                            "properties": {
                                "grant": {"type": "string"},
                                "action": {"type": "string"},
                                "resource": {"type": "string"},
                                "params": {"type": "object"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the grant was unused and now is used",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["claims", "audit_seq"],
                                "properties": {"claims": {"type": "object"}, "audit_seq": {"type": "integer"}},
                            }
                        }
                    },
                },
                **_errors(400, 401, 403, 409, 415, 422, 503),
            },
        }
    },
}
