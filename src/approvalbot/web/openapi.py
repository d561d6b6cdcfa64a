"""The OpenAPI 3.1 document, generated from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from approvalbot import __version__
from approvalbot.core.models import ApprovalRequest, DecisionIn, RequestCreate
from approvalbot.web.audit_api import OPENAPI_PATHS as AUDIT_PATHS

routes = web.RouteTableDef()

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}
PAGE_SCHEMA = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/ApprovalRequest"}},
        "next_cursor": {"type": ["string", "null"]},
    },
}


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "error", **_json("Error")} for s in statuses}


def _ok(status: int, description: str, ref: str) -> dict[str, Any]:
    return {str(status): {"description": description, **_json(ref)}}


ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]

PATHS: dict[str, Any] = {
    "/v1/requests": {
        "post": {
            "summary": "Ask for approval of one action (agent token)",
            "security": SECURED,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                },
                {
                    "name": "consume_grant",
                    "in": "query",
                    "required": False,
                    "description": "if the policy allows the action at once, use its grant in this call "
                    "(the response then has a Grant-Consumed header); never on an idempotent replay",
                    "schema": {"type": "boolean", "default": False},
                },
            ],
            "requestBody": {"required": True, **_json("RequestCreate")},
            "responses": {
                "201": {
                    "description": "created",
                    "headers": {
                        "Grant-Consumed": {
                            "description": "with consume_grant: the audit seq of the grant.consumed record",
                            "schema": {"type": "integer"},
                        }
                    },
                    **_json("ApprovalRequest"),
                },
                **_ok(200, "idempotent replay of an earlier request", "ApprovalRequest"),
                **_errors(400, 401, 403, 413, 415, 422),
                "429": {
                    "description": "quota_exceeded (too many pending) or rate_limited (too fast); see Retry-After",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    **_json("Error"),
                },
            },
        },
        "get": {
            "summary": "Pending requests the caller may decide, oldest first (approver token)",
            "security": SECURED,
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending"]}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 200}},
            ],
            "responses": {**_ok(200, "a page", "Page"), **_errors(401, 403, 422)},
        },
    },
    "/v1/requests/{id}": {
        "get": {
            "summary": "One request; with wait=S, held open until it is final or S seconds pass",
            "security": SECURED,
            "parameters": [
                ID_PARAM,
                {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 60}},
            ],
            "responses": {**_ok(200, "the request", "ApprovalRequest"), **_errors(401, 404, 422)},
        }
    },
    "/v1/requests/{id}/cancel": {
        "post": {
            "summary": "Cancel a pending request (the requesting agent's token)",
            "security": SECURED,
            "parameters": [ID_PARAM],
            "responses": {**_ok(200, "cancelled", "ApprovalRequest"), **_errors(401, 403, 404, 409)},
        }
    },
    "/v1/requests/{id}/outcome": {
        "post": {
            "summary": "Report whether an approved action ran (the request's agent, or an executor bound to it)",
            "description": "Only for an approved (or policy-allowed) request, and only once: 409 not_approved or "
            "outcome_already_reported otherwise. Appends `executed` or `execution_failed` to the audit; the card "
            "and its thread show it.",
            "security": SECURED,
            "parameters": [ID_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["status"],
                            "additionalProperties": False,
                            "properties": {
                                "status": {"enum": ["executed", "failed"]},
                                "detail": {"type": "string", "maxLength": 500},
                                "result_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            },
                        }
                    }
                },
            },
            "responses": {
                **_ok(200, "the request with its execution", "ApprovalRequest"),
                **_errors(400, 401, 403, 404, 409, 415, 422),
            },
        }
    },
    "/v1/requests/{id}/decisions": {
        "post": {
            "summary": "Approve or deny (approver token); never one's own request",
            "security": SECURED,
            "parameters": [ID_PARAM],
            "requestBody": {"required": True, **_json("DecisionIn")},
            "responses": {
                **_ok(200, "the request after the decision", "ApprovalRequest"),
                **_errors(400, 401, 403, 404, 409, 413, 415, 422),
            },
        }
    },
    "/v1/requests/{id}/reveal": {
        "post": {
            "summary": "The exact values behind masked paths, to one eligible approver (approver token)",
            "description": "Paths are those listed in the request's `masked.items` (`params.db.password`, "
            "`context.key`, `justification`, `resource`); an empty list means every masked path; a text with "
            "detected parts is revealed whole. Each answer writes a `params.revealed` audit record naming who "
            "and which paths, never a value. Refusals: 403 `reveal_forbidden` (the rule says `reveal: false`), "
            "`not_eligible` (a requester), `not_an_approver`, `forbidden` (an agent token); 404 for someone who "
            "may not see the request; 410 `params_deleted` after the retention period; 422 `unknown_path`.",
            "security": SECURED,
            "parameters": [ID_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "paths": {"type": "array", "items": {"type": "string"}, "maxItems": 200},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the exact values by path (Cache-Control: no-store)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["request_id", "values"],
                                "properties": {
                                    "request_id": {"type": "string"},
                                    "values": {"type": "object", "description": "path -> exact value (any JSON)"},
                                },
                            }
                        }
                    },
                },
                **_errors(400, 401, 403, 404, 410, 413, 415, 422),
            },
        }
    },
    "/v1/requests/{id}/deliveries": {
        "get": {
            "summary": "Where the request's chat cards are and which deliveries failed (with any chat channel on)",
            "security": SECURED,
            "parameters": [ID_PARAM],
            "responses": {
                "200": {
                    "description": "delivery state per channel",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(401, 404),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness and Redis reachability",
            "responses": {"200": {"description": "ok"}, "503": {"description": "Redis down"}},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}


@cache
def document() -> dict[str, Any]:
    models = (RequestCreate, ApprovalRequest, DecisionIn)
    _, schemas = models_json_schema(
        [(m, "validation" if m in (RequestCreate, DecisionIn) else "serialization") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    components = dict(schemas.get("$defs", {}))
    components.update(Error=ERROR_SCHEMA, Page=PAGE_SCHEMA)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "approvalbot",
            "version": __version__,
            "description": "Human approval gates for AI agents and pipelines.",
        },
        "paths": {**PATHS, **AUDIT_PATHS},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
