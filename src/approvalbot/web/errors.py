"""One JSON error shape for every failure, so clients can branch on `code`.

Messages never echo request bodies or headers: they may hold tokens or secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.exceptions
from aiohttp import web
from pydantic import BaseModel, ValidationError

from approvalbot.core.addresses import InvalidAddress
from approvalbot.core.errors import (
    IdempotencyMismatch,
    NotFound,
    ParamsDeleted,
    QuotaExceeded,
    Refusal,
    Refused,
    UnknownPath,
)
from approvalbot.core.models import CALLBACK_URL_FORBIDDEN, NON_FINITE
from approvalbot.store.identities import IdentityError
from approvalbot.store.replication import LostInFailover, NotReplicated
from approvalbot.web.credentials import AuthUnavailable

log = logging.getLogger("approvalbot.web")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The core owns the codes and their wording; the API only picks the HTTP status.
REFUSAL_STATUS = {
    Refusal.NOT_HUMAN: 403,
    Refusal.UNKNOWN_APPROVER: 403,
    Refusal.SELF_APPROVAL: 403,
    Refusal.NOT_ELIGIBLE: 403,
    Refusal.ALREADY_DECIDED: 409,
    Refusal.NOT_PENDING: 409,
    Refusal.REASON_REQUIRED: 422,
    Refusal.IDENTITY_UNKNOWN: 403,
    Refusal.FOREIGN_WORKSPACE: 403,
    Refusal.NOT_APPROVED: 409,
    Refusal.OUTCOME_REPORTED: 409,
    Refusal.REVEAL_FORBIDDEN: 403,
}


# Overload and Redis outages: the client should come back shortly; the process is fine.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a write reached a node demoted by a failover
    AuthUnavailable,
)
# Server answers that mean "not now" during a failover or a restart, not a bug of ours.
TRANSIENT_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN")
RETRY_AFTER_UNAVAILABLE = 1


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: object = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def error_response(
    status: int, code: str, message: str, details: object = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response({"error": body}, status=status, headers=headers)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Where and what, without the offending input (it may be a secret)."""
    return [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def where(request: web.Request) -> str:
    """Method and path for a log line: the path still percent-encoded (a %0A cannot forge a log line), and short."""
    return f"{request.method} {request.rel_url.raw_path[:200]}"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except QuotaExceeded as exc:
        return error_response(429, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)})
    except UNAVAILABLE as exc:
        # Expected under overload or while Redis is away: one line, no traceback (RepeatFilter limits repeats).
        log.warning("answering 503 to %s: %s", where(request), exc.__class__.__name__)
        return error_response(
            503,
            "unavailable",
            "the service is busy or cannot reach its database; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    except ValidationError as exc:
        details = validation_details(exc)
        addresses = [d for d in details if d["type"] == InvalidAddress.code]
        if addresses:  # name the rule: "bob\u200b@…" is refused, not silently "invalid"
            return error_response(422, InvalidAddress.code, addresses[0]["msg"], details)
        non_finite = [d for d in details if d["type"] == NON_FINITE]
        if non_finite:  # NaN/Infinity: say so, JSON parsers here would otherwise have accepted them
            return error_response(422, NON_FINITE, non_finite[0]["msg"], details)
        forbidden = [d for d in details if d["type"] == CALLBACK_URL_FORBIDDEN]
        if forbidden:  # an SSRF attempt (or plain http) gets its own code, so agents can tell
            return error_response(422, CALLBACK_URL_FORBIDDEN, forbidden[0]["msg"], details)
        return error_response(422, "invalid_request", "the request body is not valid", details)
    except InvalidAddress as exc:
        return error_response(422, exc.code, exc.message)
    except Refused as exc:
        return error_response(REFUSAL_STATUS[exc.refusal], exc.code, exc.message)
    except NotFound as exc:
        return error_response(404, exc.code, "no such request")
    except IdempotencyMismatch as exc:
        return error_response(422, exc.code, exc.message)
    except UnknownPath as exc:
        return error_response(422, exc.code, exc.message)
    except ParamsDeleted as exc:
        return error_response(410, exc.code, exc.message)
    except IdentityError as exc:
        return error_response(422, "invalid_identity", str(exc))
    except NotReplicated as exc:  # the client retries with its idempotency key (docs/redis.md)
        code = "lost_in_failover" if isinstance(exc, LostInFailover) else "not_replicated"
        log.warning("answering 503 to %s: %s", where(request), code)
        response = error_response(503, code, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except redis.exceptions.ResponseError as exc:
        if not str(exc).startswith(TRANSIENT_REPLIES):
            log.exception("unhandled error on %s", where(request))
            return error_response(500, "internal", "internal error")
        # A failover outlasted the client's retries: say so, do not 500.
        log.warning("answering 503 to %s: Redis said %s", where(request), str(exc).split(" ", 1)[0])
        return error_response(
            503,
            "redis_unavailable",
            "storage is changing over; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "payload_too_large", "the request body is too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error on %s", where(request))
        return error_response(500, "internal", "internal error")


async def read_body(request: web.Request, model: type[M], context: dict[str, Any] | None = None) -> M:
    """Parse and validate a JSON body in one pass (pydantic's own parser), telling
    malformed JSON (400) apart from well-formed JSON that is not a valid body (422)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    try:
        return model.model_validate_json(raw, context=context)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        raise
