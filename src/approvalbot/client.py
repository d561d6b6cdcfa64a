"""Python client for agents and pipelines: ask for approval, wait, act only when approved.

    from approvalbot.client import ApprovalClient
    client = ApprovalClient()                     # APPROVALBOT_URL, APPROVALBOT_TOKEN
    approved = client.request_and_wait("dataset.export", resource="s3://bucket/customers")
    export(grant=approved.grant)                  # Denied / Expired / Cancelled raise

Each operation is written once, as a generator that yields HTTP requests and
receives responses (or transport errors); a tiny driver runs it with httpx's sync
or async client. Retries and error mapping are therefore shared by both clients,
and a retried `request()` reuses its Idempotency-Key, so it can never create a
second approval request.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, cast

import httpx
from typing_extensions import Unpack

from approvalbot.core.models import ApprovalRequest, Page, Status

T = TypeVar("T")
MAX_WAIT_SLICE = 60  # the server holds a long-poll at most this long


class RequestFields(TypedDict, total=False):
    """What an agent may say about the action, besides its name (see the API's POST /v1/requests)."""

    resource: str
    params: dict[str, Any]
    justification: str
    context: dict[str, str]
    on_behalf_of: str
    callback_url: str
    expires_in: int
    idempotency_key: str


class ApprovalError(Exception):
    """The approval could not be obtained: transport failure or an unexpected answer."""


class ApiError(ApprovalError):
    """The server refused the call; `code` is the API's error code (e.g. `self_approval`)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Outcome(ApprovalError):
    """The request reached a final state other than approved."""

    def __init__(self, request: ApprovalRequest, message: str):
        super().__init__(message)
        self.request = request


class Denied(Outcome):
    @property
    def reason(self) -> str | None:
        return self.request.outcome_reason

    @property
    def approver(self) -> str | None:
        """Who denied; None when a policy rule denied it."""
        denials = [d.approver for d in self.request.decisions if d.decision == "deny"]
        return denials[-1] if denials else None


class Expired(Outcome):
    pass


class Cancelled(Outcome):
    pass


class StillPending(ApprovalError):
    """wait() ran out of time while humans had not decided yet."""

    def __init__(self, request: ApprovalRequest):
        super().__init__(f"request {request.id} is still pending")
        self.request = request


@dataclass(frozen=True)
class _Sleep:
    seconds: float


Operation = Generator["httpx.Request | _Sleep", "httpx.Response", T]


def raise_for_outcome(request: ApprovalRequest) -> ApprovalRequest:
    """Return an approved request; raise the matching exception for any other final state."""
    if request.status is Status.APPROVED:
        return request
    if request.status is Status.DENIED:
        raise Denied(request, f"request {request.id} was denied: {request.outcome_reason or 'no reason given'}")
    if request.status is Status.EXPIRED:
        raise Expired(request, f"request {request.id} expired before anyone decided")
    if request.status is Status.CANCELLED:
        raise Cancelled(request, f"request {request.id} was cancelled")
    raise StillPending(request)


class _Protocol:
    """The operations, independent of sync or async I/O."""

    def __init__(self, base_url: str | None, token: str | None, retries: int, backoff: float):
        base_url = base_url or os.environ.get("APPROVALBOT_URL") or "http://127.0.0.1:3000"
        token = token or os.environ.get("APPROVALBOT_TOKEN")
        if not token:
            raise ApprovalError("no token: pass token= or set APPROVALBOT_TOKEN")
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self.retries = retries
        self.backoff = backoff

    def _call(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Operation[httpx.Response]:
        headers = {**self._auth, **kwargs.pop("headers", {})}
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = yield httpx.Request(method, self.base_url + path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ApprovalError(f"cannot reach approvalbot at {self.base_url}: {exc!r}") from exc
                yield _Sleep(self.backoff * 2**attempt)
                continue
            if response.status_code >= 500 and not last:
                yield _Sleep(self.backoff * 2**attempt)
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response
        raise AssertionError("unreachable")

    def request(self, action: str, idempotency_key: str | None = None, **fields: Any) -> Operation[ApprovalRequest]:
        request, _ = yield from self.create(action, idempotency_key, False, **fields)
        return request

    def create(
        self, action: str, idempotency_key: str | None, consume_grant: bool, **fields: Any
    ) -> Operation[tuple[ApprovalRequest, int | None]]:
        """The request, and with `consume_grant` the audit seq of its grant's use when the policy
        allowed it at once and this very call used the grant (None otherwise)."""
        body = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key or f"client-{uuid.uuid4()}"}
        params = {"consume_grant": "true"} if consume_grant else None
        response = yield from self._call("POST", "/v1/requests", json=body, headers=headers, params=params)
        consumed = response.headers.get("Grant-Consumed")
        seq = int(consumed) if consume_grant and consumed and consumed.isdigit() else None
        return ApprovalRequest.model_validate_json(response.content), seq

    def get(self, request_id: str, wait: float = 0) -> Operation[ApprovalRequest]:
        params = {"wait": f"{min(wait, MAX_WAIT_SLICE):g}"} if wait > 0 else None
        response = yield from self._call("GET", f"/v1/requests/{request_id}", params=params)
        return ApprovalRequest.model_validate_json(response.content)

    def wait(self, request_id: str, timeout: float) -> Operation[ApprovalRequest]:
        """Long-poll in slices until final or `timeout`; returns only an approved request."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            request = yield from self.get(request_id, wait=max(0, min(MAX_WAIT_SLICE, remaining)))
            if request.status.final or remaining <= 0:
                return raise_for_outcome(request)

    def cancel(self, request_id: str) -> Operation[ApprovalRequest]:
        try:
            response = yield from self._call("POST", f"/v1/requests/{request_id}/cancel")
        except ApiError as exc:
            if exc.code != "not_pending":
                raise
            # A retried cancel whose first attempt went through lands here.
            return (yield from self.get(request_id))
        return ApprovalRequest.model_validate_json(response.content)

    def report_outcome(
        self, request_id: str, status: str, detail: str | None, result_sha256: str | None
    ) -> Operation[ApprovalRequest]:
        body: dict[str, Any] = {"status": status}
        if detail is not None:
            body["detail"] = detail[:500]
        if result_sha256 is not None:
            body["result_sha256"] = result_sha256
        try:
            response = yield from self._call("POST", f"/v1/requests/{request_id}/outcome", json=body)
        except ApiError as exc:
            if exc.code != "outcome_already_reported":
                raise
            # A retry whose first attempt landed: the same outcome is already there, which is success.
            found = yield from self.get(request_id)
            if found.execution is None or found.execution.status != status:
                raise
            return found
        return ApprovalRequest.model_validate_json(response.content)

    def consume_grant(self, grant: str, **binding: Any) -> Operation[dict[str, Any]]:
        # Not retried: a consume that timed out may have used the grant, and a retry would say grant_used.
        body = {"grant": grant, **{k: v for k, v in binding.items() if v is not None}}
        response = yield from self._call("POST", "/v1/grants/consume", json=body, retry=False)
        return cast(dict[str, Any], response.json())

    def pending(self, limit: int = 50, cursor: str | None = None) -> Operation[Page]:
        params = {"status": "pending", "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        response = yield from self._call("GET", "/v1/requests", params=params)
        return Page.model_validate_json(response.content)

    def decide(self, request_id: str, decision: str, reason: str | None) -> Operation[ApprovalRequest]:
        body = {"decision": decision, **({"reason": reason} if reason else {})}
        # Not retried: a decision that timed out may have landed, and a blind retry
        # would turn that into a confusing "already decided".
        response = yield from self._call("POST", f"/v1/requests/{request_id}/decisions", json=body, retry=False)
        return ApprovalRequest.model_validate_json(response.content)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        err = response.json()["error"]
        return ApiError(response.status_code, err["code"], err["message"])
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.reason_phrase)


TIMEOUT = httpx.Timeout(10.0, read=MAX_WAIT_SLICE + 15)

# What a driver hands back to an operation: nothing (start, or after a sleep), the
# response to the request it yielded, or the transport error that request raised.
_Reply = httpx.Response | httpx.TransportError | None


def _advance(op: Operation[T], reply: _Reply) -> httpx.Request | _Sleep:
    if reply is None:
        return next(op)
    if isinstance(reply, httpx.TransportError):
        return op.throw(reply)
    return op.send(reply)


class ApprovalClient:
    """Blocking client. Methods mirror the API; `request_and_wait` is the one-liner."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        self._ops = _Protocol(base_url, token, retries, backoff)
        self._http = httpx.Client(timeout=TIMEOUT, transport=transport)

    def _run(self, op: Operation[T]) -> T:
        reply: _Reply = None
        while True:
            try:
                item = _advance(op, reply)
            except StopIteration as done:
                return cast(T, done.value)  # the operation's result; StopIteration holds it untyped
            reply = None
            if isinstance(item, _Sleep):
                time.sleep(item.seconds)
                continue
            try:
                reply = self._http.send(item)
            except httpx.TransportError as exc:
                reply = exc

    def request(self, action: str, **fields: Unpack[RequestFields]) -> ApprovalRequest:
        return self._run(self._ops.request(action, **fields))

    def get(self, request_id: str, wait: float = 0) -> ApprovalRequest:
        """The request as it is now, or, with `wait` (≤ 60 s), once it is final."""
        return self._run(self._ops.get(request_id, wait))

    def wait(self, request_id: str, timeout: float = 900) -> ApprovalRequest:
        return self._run(self._ops.wait(request_id, timeout))

    def cancel(self, request_id: str) -> ApprovalRequest:
        return self._run(self._ops.cancel(request_id))

    def report_outcome(
        self, request_id: str, status: str, detail: str | None = None, result_sha256: str | None = None
    ) -> ApprovalRequest:
        """Say whether the approved action ran (`executed`) or not (`failed`); once per request."""
        return self._run(self._ops.report_outcome(request_id, status, detail, result_sha256))

    def consume_grant(self, grant: str, **binding: Any) -> dict[str, Any]:
        """Use a grant once (POST /v1/grants/consume); `binding` may name action, resource and params."""
        return self._run(self._ops.consume_grant(grant, **binding))

    def pending(self, limit: int = 50, cursor: str | None = None) -> Page:
        return self._run(self._ops.pending(limit, cursor))

    def decide(self, request_id: str, decision: str, reason: str | None = None) -> ApprovalRequest:
        return self._run(self._ops.decide(request_id, decision, reason))

    def request_and_wait(self, action: str, *, timeout: float = 900, **fields: Any) -> ApprovalRequest:
        return self.wait(self.request(action, **fields).id, timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApprovalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncApprovalClient:
    """The same API for asyncio code."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._ops = _Protocol(base_url, token, retries, backoff)
        self._http = httpx.AsyncClient(timeout=TIMEOUT, transport=transport)

    async def _run(self, op: Operation[T]) -> T:
        reply: _Reply = None
        while True:
            try:
                item = _advance(op, reply)
            except StopIteration as done:
                return cast(T, done.value)  # the operation's result; StopIteration holds it untyped
            reply = None
            if isinstance(item, _Sleep):
                await asyncio.sleep(item.seconds)
                continue
            try:
                reply = await self._http.send(item)
            except httpx.TransportError as exc:
                reply = exc

    async def request(self, action: str, **fields: Unpack[RequestFields]) -> ApprovalRequest:
        return await self._run(self._ops.request(action, **fields))

    async def request_consuming(
        self, action: str, idempotency_key: str | None = None, **fields: Any
    ) -> tuple[ApprovalRequest, int | None]:
        """Ask, and if the policy allows the action at once, use its grant in the same round trip
        (`POST /v1/requests?consume_grant=true`): returns the request and the audit seq of the
        grant's use, or None when the grant was not used by this call (pending, denied, or a replayed
        retry: use `consume_grant`, which answers `grant_used` if an earlier attempt used it)."""
        return await self._run(self._ops.create(action, idempotency_key, True, **fields))

    async def get(self, request_id: str, wait: float = 0) -> ApprovalRequest:
        """The request as it is now, or, with `wait` (≤ 60 s), once it is final."""
        return await self._run(self._ops.get(request_id, wait))

    async def wait(self, request_id: str, timeout: float = 900) -> ApprovalRequest:  # noqa: ASYNC109 public SDK name
        return await self._run(self._ops.wait(request_id, timeout))

    async def cancel(self, request_id: str) -> ApprovalRequest:
        return await self._run(self._ops.cancel(request_id))

    async def report_outcome(
        self, request_id: str, status: str, detail: str | None = None, result_sha256: str | None = None
    ) -> ApprovalRequest:
        """Say whether the approved action ran (`executed`) or not (`failed`); once per request."""
        return await self._run(self._ops.report_outcome(request_id, status, detail, result_sha256))

    async def consume_grant(self, grant: str, **binding: Any) -> dict[str, Any]:
        """Use a grant once (POST /v1/grants/consume); `binding` may name action, resource and params."""
        return await self._run(self._ops.consume_grant(grant, **binding))

    async def pending(self, limit: int = 50, cursor: str | None = None) -> Page:
        return await self._run(self._ops.pending(limit, cursor))

    async def decide(self, request_id: str, decision: str, reason: str | None = None) -> ApprovalRequest:
        return await self._run(self._ops.decide(request_id, decision, reason))

    async def request_and_wait(
        self,
        action: str,
        *,
        timeout: float = 900,  # noqa: ASYNC109 public SDK name, same as the sync client's
        **fields: Any,
    ) -> ApprovalRequest:
        return await self.wait((await self.request(action, **fields)).id, timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncApprovalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
