"""The `approvalbot` command: run the service, and manage identities on the same data.

Commands that print a token print only the token on stdout (messages go to
stderr), so `TOKEN=$(approvalbot agents add ...)` just works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from pydantic import ValidationError

from approvalbot import app as composition
from approvalbot import client_cli
from approvalbot.cli import audit as audit_cli
from approvalbot.cli import people as people_cli
from approvalbot.cli.common import say, with_service
from approvalbot.config import Settings, load_settings
from approvalbot.gateway import cli as gateway_cli
from approvalbot.jobs.queues import parse_kinds
from approvalbot.jobs.worker import run_worker, start_worker_threads
from approvalbot.runtime import ConfigError, Runtime, runtime
from approvalbot.service import ApprovalService
from approvalbot.store.identities import IdentityError
from approvalbot.web.server import serve

log = logging.getLogger("approvalbot")


async def serve_http(rt: Runtime, host: str, port: int) -> None:
    """Run the web server until SIGINT/SIGTERM."""
    redis = rt.async_redis()
    app = composition.build_app(rt.settings, rt.service(redis), signer=rt.signer())
    settings = rt.settings
    listening = await serve(
        app, host, port, read_timeout=settings.http_read_timeout, max_connections=settings.max_connections
    )
    say(
        f"approvalbot listening on http://{host}:{port} (state: {rt.mode}; "
        f"policy: {rt.settings.policy_file or 'default, one approval for everything'})"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        say("approvalbot shutting down")
        await listening.close()
        await redis.aclose()


def announce_channels(rt: Runtime) -> None:
    """Validate chat settings in the main thread, before any thread starts, and say what is on."""
    for line in composition.status_lines(rt.settings):
        say(line)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """The web server's event loop: uvloop where installed (much faster sockets), else asyncio's."""
    try:
        import uvloop  # optional: not installed on Windows
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def cmd_serve(rt: Runtime, args: argparse.Namespace) -> int:
    announce_channels(rt)

    workers = start_worker_threads(rt, composition.subscribers(rt.settings))  # one thread per queue kind
    try:
        run_loop(serve_http(rt, args.host, args.port))
    finally:
        workers.stop(timeout=30)
    return 0


def cmd_web(rt: Runtime, args: argparse.Namespace) -> int:
    announce_channels(rt)
    run_loop(serve_http(rt, args.host, args.port))
    return 0


def cmd_worker(rt: Runtime, args: argparse.Namespace) -> int:
    try:
        kinds = parse_kinds(args.queues)
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    announce_channels(rt)
    say(f"approvalbot worker started on {', '.join(kinds)} (state: {rt.mode})")
    run_worker(rt, composition.subscribers(rt.settings), burst=args.burst, kinds=kinds)
    return 0


@with_service
async def cmd_agents(service: ApprovalService, args: argparse.Namespace) -> int:
    ids = service.identities
    if args.action == "add":
        agent, token = await ids.add_agent(args.name, args.owner)
        secret = await ids.callback_secret(agent.id)
        say(f"agent {agent.name} ({agent.id}) created, owned by {agent.owner}; the token below is shown once")
        # stderr, so `TOKEN=$(approvalbot agents add …)` still captures only the token
        say(f"callback signing secret (shown once; give it to the agent's callback receiver): {secret}")
        print(token)
    elif args.action == "rotate-secret":
        agent, secret = await ids.rotate_callback_secret(args.name)
        say(f"agent {agent.name}: new callback signing secret below; callbacks are signed with it from now on")
        print(secret)
    elif args.action == "revoke":
        done = await service.revoke_agent(args.name)
        say(
            f"agent {done.agent.name} revoked: {len(done.cancelled)} pending request(s) cancelled, "
            f"{len(done.grants)} unexpired grant(s) revoked"
        )
    else:
        for agent in await ids.list_agents():
            print(f"{agent.name}\t{agent.id}\t{agent.owner}\t{'revoked' if agent.revoked else 'active'}")
    return 0


@with_service
async def cmd_auditors(service: ApprovalService, args: argparse.Namespace) -> int:
    ids = service.identities
    if args.action == "add":
        auditor, token = await ids.add_auditor(args.email)
        say(
            f"auditor {auditor.email}: may read GET /v1/audit, /v1/audit/checkpoints, /v1/audit/verify and "
            "/v1/audit/report, nothing else; the token below is shown once"
        )
        print(token)
    elif args.action == "revoke":
        say(f"auditor {args.email}: {await ids.revoke_auditor(args.email)} token(s) revoked")
    else:
        listed = await ids.list_auditors()
        for t in listed:  # one line per live token: address, token id (as in audit records), issued at
            print(f"{t.email}\t{t.token_id}\t{t.auditor_id}\t{t.created_at or '-'}")
        say(f"{len(listed)} auditor token(s) of {len({t.email for t in listed})} address(es)")
    return 0


@with_service
async def cmd_approvers(service: ApprovalService, args: argparse.Namespace) -> int:
    ids = service.identities
    if args.action == "add":
        approver, token = await ids.add_approver(args.email, args.group or [])
        say(
            f"approver {approver.email} (groups: {', '.join(approver.groups) or 'none'}); the token below is shown once"
        )
        print(token)
    elif args.action == "revoke":
        approver = await ids.revoke_approver(args.email)
        say(f"approver {approver.email} revoked")
    else:
        for a in await ids.list_approvers():
            print(f"{a.email}\t{','.join(a.groups)}\t{'revoked' if a.revoked else 'active'}")
    return 0


class Parser(argparse.ArgumentParser):
    """Usage errors of client commands exit 3, as their other errors do (2 means expired)."""

    def error(self, message: str) -> NoReturn:
        words = self.prog.split()
        self.print_usage(sys.stderr)
        code = 3 if len(words) > 1 and words[1] in client_cli.COMMANDS else 2
        self.exit(code, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="approvalbot", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    for name, helptext in (
        ("serve", "web server, worker and (without REDIS_URL) embedded Valkey in one process"),
        ("web", "the web server only"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=3000)
    w = sub.add_parser("worker", help="RQ workers (delivery, callbacks) with the ticker (expiry, reminders, outbox)")
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    w.add_argument(
        "--queues",
        metavar="KINDS",
        help="comma list of queue kinds: delivery, callbacks (default: both; a process per kind isolates them)",
    )

    agents = sub.add_parser("agents", help="manage agents and their tokens")
    a = agents.add_subparsers(dest="action", required=True)
    add = a.add_parser("add", help="create an agent; prints its token")
    add.add_argument("name")
    add.add_argument("--owner", required=True, help="email of the accountable human")
    a.add_parser("list")
    rev = a.add_parser("revoke")
    rev.add_argument("name")
    rot = a.add_parser("rotate-secret", help="a new callback signing secret for the agent; prints it")
    rot.add_argument("name")

    approvers = sub.add_parser("approvers", help="manage human approvers")
    ap = approvers.add_subparsers(dest="action", required=True)
    add = ap.add_parser("add", help="register an approver; prints an approver token")
    add.add_argument("email")
    add.add_argument("--group", action="append", help="approver group (repeatable)")
    ap.add_parser("list")
    rev = ap.add_parser("revoke")
    rev.add_argument("email")
    auditors = sub.add_parser("auditors", help="read-only auditor tokens (audit log, verification, reports)")
    au = auditors.add_subparsers(dest="action", required=True)
    add = au.add_parser("add", help="issue an auditor token; prints it (shown once)")
    add.add_argument("email")
    rev = au.add_parser("revoke", help="end every auditor token of this address")
    rev.add_argument("email")
    au.add_parser("list", help="live auditor tokens: address, token id, auditor id, issued at (never the token)")
    people_cli.add_commands(sub)
    CHANNEL_COMMANDS.update(composition.add_commands(sub))
    client_cli.add_commands(sub)
    audit_cli.add_commands(sub)
    sub.add_parser("mcp", help="MCP server on stdio: request_approval and approval_status tools")
    gateway_cli.add_command(sub)
    return p


COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "web": cmd_web,
    "worker": cmd_worker,
    "agents": cmd_agents,
    "approvers": cmd_approvers,
    "auditors": cmd_auditors,
    **audit_cli.COMMANDS,
    **people_cli.COMMANDS,
}
# Filled by parser() from each channel's commands (e.g. `approvalbot teams ...`).
CHANNEL_COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {}
NEEDS_POLICY = {"serve", "web", "worker"}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in client_cli.COMMANDS:
        return client_cli.run(args)
    if audit_cli.runs_offline(args):
        return audit_cli.run_offline(args)
    if args.command == "gateway":
        return gateway_cli.run(args)
    if args.command == "mcp":
        from approvalbot.mcp_server import run as run_mcp  # optional: needs the `mcp` extra

        return run_mcp()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings: Settings = load_settings()
        with runtime(settings, need_policy=args.command in NEEDS_POLICY) as rt:
            return {**COMMANDS, **CHANNEL_COMMANDS}[args.command](rt, args)
    except (ConfigError, IdentityError) as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:  # settings validation and the like: one line, no traceback
        say(f"error: invalid settings: {exc.errors(include_input=False, include_url=False)}")
        return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
