"""The gateway's decision path: one tool call in, one approval request, at most one upstream call out.

    allow            -> one round trip creates the request and uses its grant; forward; the
                        outcome is reported in the background, after the agent has its result
    deny             -> isError naming the rule and reason; the upstream is never called
    require approval -> wait (progress every few seconds), then as allow or deny;
                        expired / cancelled -> isError; the agent cancelling cancels the request

Everything that cannot be decided (approvalbot unreachable, a malformed answer) fails
closed: the call is refused and nothing is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types

from approvalbot.client import ApiError, ApprovalError, AsyncApprovalClient
from approvalbot.core.models import ApprovalRequest, Status
from approvalbot.gateway.upstream import Upstream, UpstreamError

PROGRESS_EVERY = 5.0  # seconds between progress notifications while a human decides (the issue asks <= 10)
MAX_ARGUMENT_BYTES = 48 * 1024  # below the service's 64 KiB body limit, leaving room for the rest of the request
Progress = Callable[[float, str], Awaitable[None]]


def refusal(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def result_digest(result: types.CallToolResult) -> str:
    """SHA-256 of the result as sent to the agent, so the audit can be matched with what it got."""
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def why(request: ApprovalRequest) -> str:
    """Who decided and why, for the agent: the model must understand it and not retry around it."""
    reason = request.outcome_reason or "no reason given"
    if request.status is Status.DENIED:
        people = [d.approver for d in request.decisions if d.decision == "deny"]
        by = people[-1] if people else f"policy rule {request.policy.rule}"
        return f"Denied by {by}: {reason} (approval request {request.id}). Do not retry this call."
    if request.status is Status.EXPIRED:
        return f"Nobody approved this call before the approval request {request.id} expired; it was not run."
    if request.status is Status.CANCELLED:
        return f"The approval request {request.id} was cancelled ({reason}); the call was not run."
    return f"The approval request {request.id} is {request.status.value}; the call was not run."


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    tool: str  # the name the upstream knows


class Proxy:
    def __init__(self, client: AsyncApprovalClient, upstreams: list[Upstream], max_wait: float = 24 * 3600):
        self.client = client
        self.upstreams = upstreams
        self.routes: dict[str, Route] = {}
        self.tools: list[types.Tool] = []
        self.max_wait = max_wait
        self.host = socket.gethostname()
        self._reports: set[asyncio.Task[None]] = set()  # outcome reports still on their way

    def exposed_name(self, upstream: Upstream, tool: str) -> str:
        return tool if len(self.upstreams) == 1 else f"{upstream.name}_{tool}"

    async def refresh(self) -> list[types.Tool]:
        """List every upstream's tools under the names the agent sees; an upstream that is down is left out."""
        routes: dict[str, Route] = {}
        tools: list[types.Tool] = []
        for upstream in self.upstreams:
            try:
                listed = await upstream.list_tools()
            except UpstreamError:
                continue
            for tool in listed:
                name = self.exposed_name(upstream, tool.name)
                routes[name] = Route(upstream, tool.name)
                tools.append(tool.model_copy(update={"name": name}))
        self.routes, self.tools = routes, tools
        return tools

    async def call(
        self, name: str, arguments: dict[str, Any] | None, client_info: dict[str, str], progress: Progress
    ) -> types.CallToolResult:
        arguments = arguments or {}
        route = self.routes.get(name)
        if route is None:
            await self.refresh()
            route = self.routes.get(name)
        if route is None:
            return refusal(f"Unknown tool {name!r}.")
        size = len(json.dumps(arguments, separators=(",", ":")).encode())
        if size > MAX_ARGUMENT_BYTES:
            return refusal(
                f"The arguments are {size} bytes; the gateway accepts at most {MAX_ARGUMENT_BYTES} bytes per call. "
                "Nothing was requested or run."
            )
        upstream = route.upstream
        action = f"mcp.{upstream.name}.{route.tool}"
        resource_arg = upstream.config.resource_args.get(route.tool)
        value = arguments.get(resource_arg) if resource_arg else None
        resource = str(value)[:1000] if value is not None else f"mcp://{upstream.name}/{route.tool}"
        context = {**client_info, "upstream": upstream.name, "gateway_host": self.host}
        try:
            request, consumed = await self.client.request_consuming(
                action, resource=resource, params=arguments, context=context, idempotency_key=f"gw-{uuid.uuid4()}"
            )
        except ApiError as exc:
            return refusal(f"approvalbot refused the approval request ({exc.code}): {exc.message}. Nothing was run.")
        except ApprovalError as exc:
            return refusal(f"approvalbot is unreachable, so the call was not run (fail closed): {exc}")
        try:
            request = await self._settle(request, progress)
        except asyncio.CancelledError:
            # The agent cancelled the call or went away: the request must not stay approvable.
            await asyncio.shield(self._cancel(request.id))
            raise
        except ApprovalError as exc:
            return refusal(f"lost contact with approvalbot while waiting, so the call was not run: {exc}")
        if request.status is not Status.APPROVED:
            return refusal(why(request))
        return await self._forward(request, route, arguments, consumed=consumed is not None)

    async def _settle(self, request: ApprovalRequest, progress: Progress) -> ApprovalRequest:
        started = time.monotonic()
        while not request.status.final:
            remaining = min(
                (request.expires_at.timestamp() - time.time()) + 5, self.max_wait - (time.monotonic() - started)
            )
            if remaining <= 0:
                break
            await progress(time.monotonic() - started, f"waiting for approval of {request.id}")
            request = await self.client.get(request.id, wait=min(PROGRESS_EVERY, remaining))
        return request

    async def _cancel(self, request_id: str) -> None:
        # Already decided or unreachable: the grant is still never used, since nothing is forwarded.
        with contextlib.suppress(ApprovalError):
            await self.client.cancel(request_id)

    async def _forward(
        self, request: ApprovalRequest, route: Route, arguments: dict[str, Any], consumed: bool = False
    ) -> types.CallToolResult:
        """Single use first (unless the creating call already used the grant), then exactly the
        approved arguments, once; the outcome is reported after the agent has its result."""
        if request.params != arguments:  # cannot happen unless the service rewrote them; never run something else
            return refusal(f"The approved arguments differ from the call's (request {request.id}); nothing was run.")
        if request.grant is None:
            return refusal(f"The approval {request.id} carries no grant; nothing was run.")
        if not consumed:
            try:
                await self.client.consume_grant(request.grant, action=request.action, params=request.params)
            except ApprovalError as exc:
                return refusal(f"The grant of {request.id} could not be used ({exc}); nothing was run.")
        try:
            result = await route.upstream.call(route.tool, request.params)
        except UpstreamError as exc:
            self._report(request.id, "failed", str(exc)[:500], None)
            return refusal(f"The call was approved but the upstream failed: {exc}")
        status = "failed" if result.is_error else "executed"
        detail = "the upstream returned an error result" if result.is_error else None
        self._report(request.id, status, detail, result_digest(result))
        return result

    def _report(self, request_id: str, status: str, detail: str | None, digest: str | None) -> None:
        """Report the outcome in the background: the agent's result does not wait for the audit."""
        task = asyncio.get_running_loop().create_task(self._send_report(request_id, status, detail, digest))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _send_report(self, request_id: str, status: str, detail: str | None, digest: str | None) -> None:
        with contextlib.suppress(ApprovalError):  # the tool already ran: a lost report must not break anything
            await self.client.report_outcome(request_id, status, detail, digest)

    async def drain(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 a bound, not a cancellation scope
        """Let outcome reports still on their way finish (at shutdown), for at most `timeout` seconds."""
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=timeout)
