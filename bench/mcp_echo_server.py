"""The upstream for bench/gateway.py: two MCP tools over stdio that answer at once, so what is timed is transport."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("echo")


@server.tool()
def read_file(path: str) -> str:
    """Pretend to read a file."""
    return f"contents of {path}"


@server.tool()
def write_file(path: str, content: str) -> str:
    """Pretend to write a file."""
    return f"wrote {len(content)} bytes to {path}"


if __name__ == "__main__":
    server.run("stdio")
