"""The gateway towards the agent: an MCP server over stdio, or Streamable HTTP behind the agent's token."""

from __future__ import annotations

import hmac
import os
import weakref
from typing import Any

import anyio
import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.stdio import stdio_server

from approvalbot.client import AsyncApprovalClient
from approvalbot.gateway.config import UpstreamConfig
from approvalbot.gateway.proxy import Proxy
from approvalbot.gateway.upstream import Upstream

INSTRUCTIONS = (
    "These tools run behind approvalbot: some calls wait for a human's approval, and a call that "
    "is denied returns an error saying who denied it and why. Do not retry a denied call or work around it."
)


class Gateway:
    def __init__(self, configs: list[UpstreamConfig], client: AsyncApprovalClient):
        self.upstreams = [Upstream(c, self._tools_changed) for c in configs]
        self.proxy = Proxy(client, self.upstreams)
        self.client = client
        # The agents' connections, not their sessions: with the SDK 2 a ServerSession lives for one request,
        # while a list change must reach every connected agent on its standalone channel.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.server: Server[Any] = Server(
            "approvalbot-gateway",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    async def _tools_changed(self) -> None:
        await self.proxy.refresh()
        for connection in list(self._connections):
            try:
                await connection.send_tool_list_changed()
            except Exception:  # a client that went away must not stop the others hearing it
                self._connections.discard(connection)

    def _remember(self, ctx: Any) -> None:
        # The SDK (2.3) gives low-level handlers the connection only through the per-request session; the
        # HTTP list_changed test fails if that ever moves.
        connection = getattr(ctx.session, "_connection", None)
        if isinstance(connection, Connection) and connection.has_standalone_channel:
            self._connections.add(connection)

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        self._remember(ctx)
        return types.ListToolsResult(tools=await self.proxy.refresh())

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        self._remember(ctx)
        info = ctx.session.client_params.client_info if ctx.session.client_params else None
        client = {"mcp_client": info.name[:200], "mcp_client_version": (info.version or "")[:100]} if info else {}

        async def progress(elapsed: float, message: str) -> None:
            await ctx.session.report_progress(elapsed, None, message)

        return await self.proxy.call(params.name, params.arguments, client, progress)

    def options(self) -> Any:
        return self.server.create_initialization_options(NotificationOptions(tools_changed=True))

    async def serve_stdio(self) -> None:
        try:
            async with stdio_server() as (read, write):
                await self.server.run(read, write, self.options())
        finally:
            await self.close()

    async def close(self) -> None:
        await self.proxy.drain()
        for upstream in self.upstreams:
            await upstream.close()
        await self.client.aclose()

    def http_app(self, host: str, token: str) -> Any:
        """The Streamable HTTP app; every request must carry the agent's own token as a bearer token."""
        if not token:  # an empty token would make "Bearer " the password
            raise ValueError("the HTTP gateway needs the agent token (APPROVALBOT_TOKEN)")
        app = self.server.streamable_http_app(host=host)
        expected = f"Bearer {token}".encode()

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                sent = dict(scope.get("headers") or []).get(b"authorization", b"")
                if not hmac.compare_digest(sent, expected):
                    body = b'{"error":"send the agent token as Authorization: Bearer <token>"}'
                    headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                    await send({"type": "http.response.start", "status": 401, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
            await app(scope, receive, send)

        return guarded

    async def serve_http(self, host: str, port: int) -> None:
        import uvicorn  # comes with the mcp SDK; only the HTTP mode needs it

        token = os.environ.get("APPROVALBOT_TOKEN", "")
        config = uvicorn.Config(self.http_app(host, token), host=host, port=port, log_level="warning")
        try:
            await uvicorn.Server(config).serve()
        finally:
            await self.close()


def run(configs: list[UpstreamConfig], client: AsyncApprovalClient, http: tuple[str, int] | None = None) -> int:
    gateway = Gateway(configs, client)
    if http is None:
        anyio.run(gateway.serve_stdio)
    else:
        anyio.run(gateway.serve_http, *http)
    return 0
