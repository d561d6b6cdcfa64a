"""`approvalbot gateway ...`: parse the command line into upstream configurations and run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeVar

from approvalbot.client import ApprovalError, AsyncApprovalClient
from approvalbot.gateway import server
from approvalbot.gateway.config import ConfigError, UpstreamConfig, from_yaml, quick

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)
USAGE = "approvalbot gateway --name NAME [--resource-arg TOOL=ARG ...] -- COMMAND [ARGS...]  |  --config FILE"


def add_command(sub: argparse._SubParsersAction[ParserT]) -> None:
    p = sub.add_parser(
        "gateway",
        help="MCP gateway: every tool call of the agent to upstream MCP servers becomes an approval request",
        usage=USAGE,
    )
    p.add_argument("--name", help="the upstream's name (quick form): actions are mcp.NAME.TOOL")
    p.add_argument(
        "--resource-arg", action="append", default=[], metavar="TOOL=ARG", help="argument naming the resource"
    )
    p.add_argument("--config", type=Path, help="YAML file naming several upstreams (stdio or Streamable HTTP)")
    p.add_argument("--http", metavar="HOST:PORT", help="serve Streamable HTTP (agent token as bearer) instead of stdio")
    p.add_argument("upstream_command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] (quick form)")


def configs(args: argparse.Namespace) -> list[UpstreamConfig]:
    command = list(args.upstream_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if args.config is not None:
        if command or args.name:
            raise ConfigError("use either --config or --name with a command, not both")
        return from_yaml(args.config)
    if not args.name:
        raise ConfigError(f"usage: {USAGE}")
    return quick(args.name, command, args.resource_arg)


def http_address(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--http wants HOST:PORT with a port from 1 to 65535, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> int:
    try:
        found, http = configs(args), http_address(args.http)
        client = AsyncApprovalClient()  # refuses to start without APPROVALBOT_TOKEN: the HTTP guard compares to it
    except (ConfigError, ApprovalError) as exc:
        print(f"approvalbot gateway: {exc}", file=sys.stderr)
        return 2
    return server.run(found, client, http)
