"""A tiny upstream MCP server for the gateway tests: records every call it gets to a file.

`python upstream_server.py` serves stdio; `python upstream_server.py --http PORT` serves Streamable
HTTP on loopback at /mcp and answers 401 unless `Authorization: Bearer $UPSTREAM_TOKEN` is sent,
so a test proves the gateway expanded `${VAR}` in its configured headers.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("recorder")
LOG = os.environ["RECORD_FILE"]


def record(tool: str, arguments: dict) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    record("read_file", {"path": path})
    return f"contents of {path}"


@server.tool()
def write_file(path: str, content: str) -> str:
    """Write a file."""
    record("write_file", {"path": path, "content": content})
    return f"wrote {len(content)} bytes to {path}"


@server.tool()
def crash(path: str) -> str:
    """Die mid-call, like a buggy server."""
    record("crash", {"path": path})
    sys.stdout.flush()
    os._exit(3)


def read_extra(path: str) -> str:
    """A tool that appears only after `grow`."""
    record("read_extra", {"path": path})
    return f"extra {path}"


@server.tool()
async def read_grow(ctx: Context) -> str:
    """Add a tool and tell the client its tool list changed (named read_* so the test policy allows it)."""
    record("read_grow", {})
    server.add_tool(read_extra)
    await ctx.session.send_tool_list_changed()
    return "grown"


def guarded(app: Any, token: str) -> Any:
    expected = f"Bearer {token}".encode()

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            sent = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(sent, expected):
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"upstream wants its token"})
                return
        await app(scope, receive, send)

    return asgi


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        import uvicorn

        app = guarded(server.streamable_http_app(), os.environ["UPSTREAM_TOKEN"])
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        server.run("stdio")
