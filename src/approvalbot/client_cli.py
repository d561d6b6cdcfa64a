"""Client commands for shells and CI pipelines: they talk HTTP, never to Redis.

Exit codes of `request --wait` and `status`: 0 approved, 1 denied, 2 expired or
cancelled, 3 error (also for usage errors), 4 still pending. So a CI step is just:

    approvalbot request deploy.production --resource web --wait || exit 1
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeVar

from approvalbot.client import (
    ApiError,
    ApprovalClient,
    ApprovalError,
    Cancelled,
    Denied,
    Expired,
    StillPending,
)
from approvalbot.core.models import ApprovalRequest, Status

# Any ArgumentParser subclass: the main CLI builds its subcommands with its own.
ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)

EXIT = {Status.APPROVED: 0, Status.DENIED: 1, Status.EXPIRED: 2, Status.CANCELLED: 2, Status.PENDING: 4}
EXIT_ERROR = 3
COMMANDS = ("request", "status", "pending", "approve", "deny", "cancel")


def _pairs(values: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApprovalError(f"{what} must look like key=value, got {item!r}")
        if what == "--param":
            try:  # numbers, booleans, lists and objects keep their JSON type
                out[key] = json.loads(value)
                continue
            except ValueError:
                pass
        out[key] = value
    return out


def _show(request: ApprovalRequest, as_json: bool) -> None:
    if as_json:
        print(request.model_dump_json(exclude={"version"}))
        return
    line = f"{request.id} {request.status.value} {request.action}"
    if request.resource:
        line += f" on {request.resource}"
    print(line)
    for d in request.decisions:
        print(f"  {d.decision} by {d.approver} at {d.at:%Y-%m-%d %H:%M:%S}Z" + (f": {d.reason}" if d.reason else ""))
    if request.status.final and request.outcome_reason:
        print(f"  reason: {request.outcome_reason}")
    if request.grant:
        print(f"  grant: {request.grant}")


def add_commands(sub: argparse._SubParsersAction[ParserT]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="approvalbot base URL (default: $APPROVALBOT_URL)")
        p.add_argument("--token", help="agent or approver token (default: $APPROVALBOT_TOKEN)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    r = sub.add_parser("request", help="ask for approval of an action (agent token)")
    r.add_argument("action")
    r.add_argument("--resource")
    r.add_argument("--param", action="append", metavar="K=V", help="JSON values are typed (repeatable)")
    r.add_argument("--context", action="append", metavar="K=V", help="e.g. run_url=... (repeatable)")
    r.add_argument("--justification")
    r.add_argument("--on-behalf-of")
    r.add_argument("--expires-in", type=int)
    r.add_argument("--idempotency-key", help="re-running with the same key returns the same request")
    r.add_argument("--wait", action="store_true", help="wait for the outcome; exit code tells it")
    r.add_argument("--timeout", type=float, default=900, help="seconds to wait (default 900)")
    common(r)

    s = sub.add_parser("status", help="show a request (exit code as for request --wait)")
    s.add_argument("id")
    common(s)
    c = sub.add_parser("cancel", help="cancel your pending request (agent token)")
    c.add_argument("id")
    common(c)
    p = sub.add_parser("pending", help="requests you may decide (approver token)")
    p.add_argument("--limit", type=int, default=50)
    common(p)
    for name in ("approve", "deny"):
        d = sub.add_parser(name, help=f"{name} a request (approver token)")
        d.add_argument("id")
        d.add_argument("--reason", required=name == "deny")
        common(d)


def run(args: argparse.Namespace) -> int:
    try:
        with ApprovalClient(args.url, args.token) as client:
            return _dispatch(client, args)
    except (Denied, Expired, Cancelled, StillPending) as outcome:
        _show(outcome.request, args.json)
        return EXIT[outcome.request.status]
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ApprovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(client: ApprovalClient, args: argparse.Namespace) -> int:
    if args.command == "request":
        request = client.request(
            args.action,
            **{
                k: v
                for k, v in {
                    "resource": args.resource,
                    "params": _pairs(args.param, "--param") or None,
                    "context": _pairs(args.context, "--context") or None,
                    "justification": args.justification,
                    "on_behalf_of": args.on_behalf_of,
                    "expires_in": args.expires_in,
                    "idempotency_key": args.idempotency_key,
                }.items()
                if v is not None
            },
        )
        if args.wait and not request.status.final:
            print(f"waiting for a decision on {request.id} ...", file=sys.stderr)
            request = client.wait(request.id, args.timeout)
        _show(request, args.json)
        return EXIT[request.status] if (args.wait or request.status.final) else 0
    if args.command == "status":
        request = client.get(args.id)
        _show(request, args.json)
        return EXIT[request.status]
    if args.command == "cancel":
        _show(client.cancel(args.id), args.json)
        return 0
    if args.command == "pending":
        page = client.pending(limit=args.limit)
        if args.json:
            print(page.model_dump_json())
        for item in [] if args.json else page.items:
            print(
                f"{item.id}\t{item.created_at:%Y-%m-%d %H:%M}\t{item.agent_name}\t{item.action}\t{item.resource or ''}"
            )
        return 0
    decided = client.decide(args.id, "approve" if args.command == "approve" else "deny", args.reason)
    _show(decided, args.json)
    return 0
