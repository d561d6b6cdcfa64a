"""`approvalbot teams channels` and `approvalbot teams package`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TypeVar

from approvalbot.runtime import Runtime
from approvalbot.teams.package import PackageError, build, default_source
from approvalbot.teams.references import ReferenceStore
from approvalbot.teams.settings import teams_settings

# Any ArgumentParser subclass: the main CLI builds its subcommands with its own.
ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_commands(subparsers: argparse._SubParsersAction[ParserT]) -> ParserT:
    """Register `teams` on the main parser's subparsers; dispatch with `cmd_teams`."""
    teams = subparsers.add_parser("teams", help="Microsoft Teams: conversations and the app package")
    actions = teams.add_subparsers(dest="teams_action", required=True)
    actions.add_parser(
        "channels",
        help="list the Teams conversations the bot was added to (allowed tenants), each active or gone",
    )
    package = actions.add_parser("package", help="build the Teams app package (a zip to upload to Teams)")
    package.add_argument("--app-id", help="the Azure bot's Microsoft App ID (default: MICROSOFT_APP_ID)")
    package.add_argument(
        "--domain",
        default=None,
        help="public host name of this server, for validDomains and the app's links (default: localhost)",
    )
    package.add_argument("--output", default="approvalbot-teams.zip", help="zip to write")
    package.add_argument(
        "--source", default=None, help="folder with manifest.json and the icons (default: manifests/teams)"
    )
    return teams


def cmd_teams(rt: Runtime, args: argparse.Namespace) -> int:
    if args.teams_action == "channels":
        return cmd_channels(rt, args)
    return cmd_package(rt, args)


def cmd_channels(rt: Runtime, args: argparse.Namespace) -> int:
    async def main() -> int:
        redis = rt.async_redis()
        try:
            refs = await ReferenceStore(redis).all()
        finally:
            await redis.aclose()
        ts = teams_settings(rt.settings)
        mine = [r for r in refs if ts.allows(r.tenant_id)]
        if len(mine) < len(refs):
            say(f"{len(refs) - len(mine)} conversation(s) of tenants that are not allowed are not shown")
        if not mine:
            say("no Teams conversations yet: add the bot to a team (or a group chat) in Teams")
            return 0
        for ref in mine:
            print(f"{ref.kind}\t{ref.display}\t{ref.id}\t{ref.added_at}\t{ref.state}")
        return 0

    return asyncio.run(main())


def cmd_package(rt: Runtime, args: argparse.Namespace) -> int:
    app_id = args.app_id or rt.settings.microsoft_app_id
    if not app_id:
        say("error: pass --app-id or set MICROSOFT_APP_ID (the Azure bot's Microsoft App ID)")
        return 2
    domain = args.domain or "localhost"
    if args.domain is None:
        say("note: no --domain given; the package lists localhost as its domain")
    try:
        source = Path(args.source) if args.source else default_source()
        out = build(source, Path(args.output), app_id, domain)
    except PackageError as exc:
        say(f"error: {exc}")
        return 2
    say(f"wrote {out}: upload it in Teams (Apps > Manage your apps > Upload an app)")
    print(out)
    return 0
