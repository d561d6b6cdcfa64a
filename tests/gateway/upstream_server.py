"""A tiny upstream MCP server for the gateway tests: records every call it gets to a file."""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import MCPServer

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


if __name__ == "__main__":
    server.run("stdio")
