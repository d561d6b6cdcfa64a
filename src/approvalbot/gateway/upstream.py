"""One upstream MCP server, as an MCP client: connect lazily, reconnect after a crash.

The session lives in its own task, because the SDK's transports are context managers that
must be entered and left in one task. A call that fails at the transport (the process
died, a hang past the timeout, a malformed answer) tears that task down, so the next call
starts a fresh upstream instead of writing into a dead pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from approvalbot.gateway.config import UpstreamConfig

log = logging.getLogger("approvalbot.gateway")
CONNECT_TIMEOUT = 30.0


class UpstreamError(Exception):
    """The upstream did not answer the call properly; the message is safe to show the agent."""


class Upstream:
    def __init__(self, config: UpstreamConfig, on_list_changed: Callable[[], Awaitable[None]] | None = None):
        self.config = config
        self.name = config.name
        self._on_list_changed = on_list_changed
        self._task: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self._relisting: asyncio.Task[None] | None = None
        self._list_changed = False

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        if self.config.url:
            http = create_mcp_http_client(headers=self.config.headers or None)
            return streamable_http_client(self.config.url, http_client=http)
        assert self.config.command is not None
        params = StdioServerParameters(command=self.config.command, args=self.config.args, env=self.config.env or None)
        return stdio_client(params, errlog=sys.stderr)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification) and self._on_list_changed is not None:
            # Re-listing is a request on this same session: awaited here, inside the session's receive path,
            # its answer could never be read. So it runs beside it, and changes arriving meanwhile are coalesced.
            self._list_changed = True
            if self._relisting is None or self._relisting.done():
                self._relisting = asyncio.create_task(self._relist(), name=f"relist-{self.name}")

    async def _relist(self) -> None:
        assert self._on_list_changed is not None
        while self._list_changed:
            self._list_changed = False
            try:
                await self._on_list_changed()
            except Exception:  # the next change or call lists again; serving goes on
                log.warning("upstream %s: passing on its tool list change failed", self.name, exc_info=True)

    async def _serve(self) -> None:
        try:
            async with (
                self._transport() as streams,
                ClientSession(streams[0], streams[1], message_handler=self._on_message) as session,
            ):
                await session.initialize()
                self._session = session
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # recorded for the waiting caller; the task ends either way
            self._failure = exc
        finally:
            self._session = None
            self._ready.set()

    async def session(self) -> ClientSession:
        async with self._lock:
            if self._task is None or self._task.done():
                self._ready, self._stop, self._failure = asyncio.Event(), asyncio.Event(), None
                self._task = asyncio.create_task(self._serve(), name=f"upstream-{self.name}")
            try:
                await asyncio.wait_for(self._ready.wait(), CONNECT_TIMEOUT)
            except TimeoutError:
                await self.reset()
                raise UpstreamError(f"upstream {self.name} did not start within {CONNECT_TIMEOUT:g} s") from None
            if self._session is None:
                detail = type(self._failure).__name__ if self._failure else "closed"
                raise UpstreamError(f"upstream {self.name} is not available ({detail})")
            return self._session

    async def reset(self) -> None:
        """Drop the connection (and the process, for stdio); the next call reconnects."""
        task, self._task = self._task, None
        self._stop.set()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 5)

    async def list_tools(self) -> list[types.Tool]:
        session = await self.session()
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await asyncio.wait_for(session.list_tools(params=params), self.config.timeout)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools
        except Exception as exc:
            await self.reset()
            raise UpstreamError(f"upstream {self.name} could not list its tools ({type(exc).__name__})") from exc

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        session = await self.session()
        try:
            result = await asyncio.wait_for(session.call_tool(tool, arguments), self.config.timeout)
        except TimeoutError:
            await self.reset()
            raise UpstreamError(f"upstream {self.name} did not answer within {self.config.timeout:g} s") from None
        except Exception as exc:
            await self.reset()
            raise UpstreamError(f"upstream {self.name} failed ({type(exc).__name__}: {str(exc)[:200]})") from exc
        if not isinstance(result, types.CallToolResult):
            raise UpstreamError(f"upstream {self.name} answered with something other than a tool result")
        return result

    async def close(self) -> None:
        if self._relisting is not None:
            self._relisting.cancel()
        await self.reset()
