"""`approvalbot people …` and `approvalbot executors …`: persons, their linked identities, and executors.

Every change is recorded in the audit log with the admin as actor. Commands that
print a token print only the token on stdout (messages go to stderr).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable
from typing import Any

from approvalbot.cli.common import say, with_service
from approvalbot.core.models import ChatIdentity, Person
from approvalbot.runtime import Runtime
from approvalbot.service import ApprovalService
from approvalbot.store.tokens import IdentityError

__all__ = ["COMMANDS", "add_commands", "cmd_executors", "cmd_people", "parse_identity"]

_ID_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def parse_identity(channel: str, value: str) -> ChatIdentity:
    """`TEAM/USER` (Slack) or `TENANT/AADID` (Teams) as a ChatIdentity; both parts are required."""
    workspace, sep, user = value.partition("/")
    if not sep or not _ID_PART.fullmatch(workspace) or not _ID_PART.fullmatch(user):
        shape = "TEAM/USER (e.g. T0123/U0456)" if channel == "slack" else "TENANT/AADID (two GUIDs)"
        raise IdentityError(f"--{channel} takes {shape}")
    return ChatIdentity(channel="slack" if channel == "slack" else "teams", workspace=workspace, user_id=user)


def _identity_of(args: argparse.Namespace) -> ChatIdentity:
    if args.slack:
        return parse_identity("slack", args.slack)
    return parse_identity("teams", args.teams)


def _describe(person: Person) -> str:
    status = "revoked" if person.revoked else ("approver" if person.may_approve else "not an approver")
    lines = [
        f"{person.email}  ({person.id}, {status})",
        f"  name:       {person.name or '-'}",
        f"  aliases:    {', '.join(person.aliases) or '-'}",
        f"  groups:     {', '.join(person.groups) or '-'}",
        "  identities: " + (", ".join(i.key for i in person.identities) or "-"),
        f"  created:    {person.created_at:%Y-%m-%d %H:%M:%S}Z",
    ]
    return "\n".join(lines)


async def people(service: ApprovalService, args: argparse.Namespace) -> int:
    store = service.people
    if args.action == "add":
        person = await store.add(
            args.email, args.name, args.alias or [], args.group or [], approver=not args.no_approve
        )
        say(f"person {person.email} ({person.id}) saved")
        print(_describe(person))
    elif args.action == "list":
        for p in await store.list():
            state = "revoked" if p.revoked else ("approver" if p.may_approve else "person")
            print(
                "\t".join(
                    [
                        p.email,
                        p.id,
                        p.name or "",
                        ",".join(p.aliases),
                        ",".join(p.groups),
                        ",".join(i.key for i in p.identities),
                        state,
                    ]
                )
            )
    elif args.action == "show":
        found = await store.by_email(args.email)
        if found is None:
            raise IdentityError(f"no person with the address {args.email!r}")
        print(_describe(found))
    elif args.action == "link":
        person = await store.link(args.email, _identity_of(args))
        say(f"{_identity_of(args).key} linked to {person.email}")
    elif args.action == "unlink":
        person = await store.unlink(args.email, _identity_of(args))
        say(f"{_identity_of(args).key} unlinked from {person.email}")
    else:
        person = await store.remove(args.email)
        say(f"person {person.email} removed; their tokens no longer work")
    return 0


async def executors(service: ApprovalService, args: argparse.Namespace) -> int:
    ids = service.identities
    if args.action == "add":
        executor, token = await ids.add_executor(args.name, args.agent)
        say(
            f"executor {executor.name} ({executor.id}) may consume grants of agent {executor.agent_name}; "
            "the token below is shown once"
        )
        print(token)
    elif args.action == "revoke":
        executor = await ids.revoke_executor(args.name)
        say(f"executor {executor.name} revoked")
    else:
        for e in await ids.list_executors():
            print(f"{e.name}\t{e.id}\t{e.agent_name}\t{'revoked' if e.revoked else 'active'}")
    return 0


def _run(
    fn: Callable[[ApprovalService, argparse.Namespace], Awaitable[int]],
) -> Callable[[Runtime, argparse.Namespace], int]:
    """Run against the store; an address or identity that cannot be used is one line on stderr, exit 2."""

    command = with_service(fn)

    def run(rt: Runtime, args: argparse.Namespace) -> int:
        try:
            return command(rt, args)
        except ValueError as exc:  # IdentityError and InvalidAddress are ValueErrors with safe messages
            say(f"error: {exc}")
            return 2

    return run


cmd_people = _run(people)
cmd_executors = _run(executors)
COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
    "people": cmd_people,
    "executors": cmd_executors,
}


def _identity_args(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--slack", metavar="TEAM/USER", help="a Slack user in a workspace (team id / user id)")
    which.add_argument("--teams", metavar="TENANT/AADID", help="a Teams user (tenant id / AAD object id)")


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("people", help="manage persons: addresses, groups and linked chat identities")
    a = p.add_subparsers(dest="action", required=True)
    add = a.add_parser("add", help="create a person, or add aliases and groups to one")
    add.add_argument("email")
    add.add_argument("--name")
    add.add_argument("--alias", action="append", metavar="EMAIL", help="another address of the same person")
    add.add_argument("--group", action="append", help="approver group (repeatable)")
    add.add_argument("--no-approve", action="store_true", help="a person who is not an approver (an agent owner)")
    a.add_parser("list")
    show = a.add_parser("show")
    show.add_argument("email")
    link = a.add_parser("link", help="bind a chat identity to a person (it never moves by itself)")
    link.add_argument("email")
    _identity_args(link)
    unlink = a.add_parser("unlink", help="release a chat identity from a person")
    unlink.add_argument("email")
    _identity_args(unlink)
    rm = a.add_parser("remove", help="forget a person; their tokens and links go too")
    rm.add_argument("email")

    e = sub.add_parser("executors", help="machines that may consume one agent's grants")
    ea = e.add_subparsers(dest="action", required=True)
    eadd = ea.add_parser("add", help="create an executor for an agent; prints its token")
    eadd.add_argument("name")
    eadd.add_argument("--agent", required=True, help="the agent whose grants it may consume")
    ea.add_parser("list")
    erev = ea.add_parser("revoke")
    erev.add_argument("name")
