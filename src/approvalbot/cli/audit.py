"""`approvalbot audit ...` and `approvalbot keys ...`: verify, export, checkpoint, show the public key.

Like the main CLI, data goes to stdout and messages to stderr. `audit verify`
exits 1 when the log does not verify. `audit verify --file` and `keys show`
need no Redis, so an auditor can run them on a copy of the export anywhere.

    approvalbot audit export --format jsonl --output audit.jsonl --checkpoints checkpoints.jsonl
    approvalbot keys show > approvalbot.pub.pem
    approvalbot audit verify --file audit.jsonl --checkpoints checkpoints.jsonl --public-key approvalbot.pub.pem
    approvalbot audit verify --witness slack     # the chat threads, compared with the log

`--witness` asks the channel (through the composition root; the CLI never names a
channel package) to read back what it mirrored into its threads: a record the log
lost or changed since is a finding, even after the last signed checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from redis.asyncio import Redis

from approvalbot import app as composition
from approvalbot.audit.checkpoints import (
    checkpoint,
    latest_checkpoint,
    parse_time,
    read_checkpoints,
)
from approvalbot.audit.export import FORMATS, export_records, render, snapshot_end
from approvalbot.audit.signing import Signer, SigningKeyError, load_public_keys, load_signer
from approvalbot.audit.verify import Report, load_checkpoints, verify_file, verify_redis
from approvalbot.audit.witness import WitnessReport
from approvalbot.audit.witness import check as witness_check
from approvalbot.channels import WitnessUnavailable
from approvalbot.cli import report as report_cli
from approvalbot.cli.common import say
from approvalbot.config import load_settings
from approvalbot.runtime import ConfigError, Runtime, runtime
from approvalbot.store.audit import AuditLog
from approvalbot.store.deliveries import posted

# Any ArgumentParser subclass: the main CLI builds its subcommands with its own.
ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)


def _when(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def add_commands(subparsers: argparse._SubParsersAction[ParserT]) -> None:
    audit = subparsers.add_parser("audit", help="verify, export and checkpoint the audit log")
    a = audit.add_subparsers(dest="action", required=True)

    v = a.add_parser("verify", help="verify the log: in the store, or offline from an export (--file)")
    v.add_argument("--file", help="a JSONL export to verify offline (no Redis needed)")
    v.add_argument(
        "--checkpoints",
        help="checkpoints file (JSONL, or the JSON of GET /v1/audit/checkpoints); without --file, saved "
        "copies checked alongside those in the store",
    )
    v.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="public key file: PEM, JWK or JWKS (repeatable, for rotated keys)",
    )
    v.add_argument(
        "--witness",
        choices=composition.witness_names(),
        help="also compare the log with the audit records mirrored into this channel's threads",
    )

    e = a.add_parser("export", help="write the log as JSON lines (verifiable) or CSV")
    e.add_argument("--format", choices=FORMATS, default="jsonl")
    e.add_argument("--since", type=_when, help="only records at or after this ISO time")
    e.add_argument("--until", type=_when, help="only records before this ISO time")
    e.add_argument("--request", help="only this request's records")
    e.add_argument("--output", help="file to write (default: stdout)")
    e.add_argument("--checkpoints", help="also write the signed checkpoints (JSONL) to this file")

    a.add_parser("checkpoint", help="seal and sign the chain's head now")
    report_cli.add_commands(a)

    keys = subparsers.add_parser("keys", help="the signing key's public half")
    k = keys.add_subparsers(dest="action", required=True)
    show = k.add_parser("show", help="print the public key (never the private key)")
    show.add_argument("--format", choices=("pem", "jwk", "jwks"), default="pem")


def runs_offline(args: argparse.Namespace) -> bool:
    """Commands that must not start or reach Redis."""
    if args.command == "audit" and args.action == "verify-report":
        return True
    return args.command == "keys" or (args.command == "audit" and args.action == "verify" and bool(args.file))


def _public_keys(paths: list[str]) -> dict[str, Ed25519PublicKey]:
    keyring: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        keyring.update(load_public_keys(Path(path).read_bytes()))
    return keyring


def _report(report: Report, witness: WitnessReport | None = None) -> int:
    doc = report.as_dict()
    verdict = report.summary()
    ok = report.ok
    if witness is not None:
        # The chain's own problem comes first; else the first record the threads show the log lost or changed.
        problem = report.problem or witness.problem()
        ok = report.ok and witness.ok
        doc.update(ok=ok, problem=problem.as_dict() if problem else None, witness=witness.as_dict())
        if problem is not None and report.problem is None:
            verdict = f"FAILED at seq {problem.seq}: {problem.kind}: {problem.detail}"
        verdict += f"; {witness.summary()}"
    print(json.dumps(doc, indent=2))
    say(verdict)
    if witness is not None and not witness.complete:
        say("warning: some threads could not be read; they witness nothing (see witness.unread)")
    if report.ok and report.checkpoints_verified == 0:
        say(
            "warning: no signed checkpoint was verified; the chain is consistent, but nothing "
            "proves it is the one the service wrote"
        )
    return 0 if ok else 1


def run_offline(args: argparse.Namespace) -> int:
    try:
        if args.command == "keys":
            return _show_key(load_signer(load_settings()), args.format)
        if getattr(args, "witness", None):
            say("error: --witness reads the log in Redis; it cannot be combined with --file")
            return 2
        if args.action == "verify-report":
            return report_cli.cmd_verify_report(args)
        if args.checkpoints and not args.public_key:
            say("error: --checkpoints needs --public-key to check their signatures")
            return 2
        report = verify_file(args.file, args.checkpoints, _public_keys(args.public_key))
        return _report(report)
    except SigningKeyError as exc:
        say(f"error: {exc}")
        return 2
    except (OSError, ValueError) as exc:
        say(f"error: {exc}")
        return 2


def _show_key(signer: Signer, fmt: str) -> int:
    if fmt == "pem":
        sys.stdout.write(signer.public_pem())
    elif fmt == "jwk":
        print(json.dumps(signer.jwk()))
    else:
        print(json.dumps(signer.jwks()))
    say(f"key id {signer.key_id}")
    return 0


# A command body, given the CLI's own Redis connection and the audit log over it.
AuditCommand = Callable[[Redis, AuditLog], Awaitable[int]]


def _run(rt: Runtime, fn: AuditCommand) -> int:
    async def main() -> int:
        redis = rt.async_redis()
        try:
            return await fn(redis, AuditLog(redis))
        finally:
            await redis.aclose()

    return asyncio.run(main())


def cmd_keys(rt: Runtime, args: argparse.Namespace) -> int:
    try:
        return _show_key(load_signer(rt.settings), args.format)
    except SigningKeyError as exc:
        say(f"error: {exc}")
        return 2


def cmd_audit(rt: Runtime, args: argparse.Namespace) -> int:
    if (args.action == "verify" and args.file) or args.action == "verify-report":
        return run_offline(args)
    if args.action == "report":
        return report_cli.cmd_report(rt, args)
    try:
        signer = load_signer(rt.settings)
        extra = _public_keys(args.public_key) if args.action == "verify" else {}
    except (SigningKeyError, OSError) as exc:
        say(f"error: {exc}")
        return 2

    try:
        saved = load_checkpoints(args.checkpoints) if args.action == "verify" and args.checkpoints else []
    except (OSError, ValueError) as exc:
        say(f"error: {exc}")
        return 2

    witness = None
    if args.action == "verify" and args.witness:
        try:
            witness = composition.witness(rt.settings, args.witness)
        except WitnessUnavailable as exc:
            say(f"error: --witness {args.witness}: {exc}")
            return 2

    async def verify(redis: Redis, audit: AuditLog) -> int:
        # Saved copies of checkpoints (--checkpoints) reveal a checkpoint deleted from Redis with its records.
        report = await verify_redis(redis, {**extra, **signer.keyring}, saved_checkpoints=saved)
        if witness is None:
            return _report(report)
        try:
            # The threads are read before the log: the log only grows, so all they show must be in it.
            threads = [t async for t in posted(redis, args.witness)]
            found = await witness_check(audit, args.witness, len(threads), witness.witnessed(redis, threads))
        except WitnessUnavailable as exc:
            say(f"error: --witness {args.witness}: {exc}")
            return 2
        finally:
            await witness.close()
        return _report(report, found)

    async def make_checkpoint(redis: Redis, audit: AuditLog) -> int:
        made = await checkpoint(audit, signer)
        if made is None:
            made = await latest_checkpoint(redis)
            say(
                "nothing new to sign: the head is already checkpointed" if made else "nothing to sign: the log is empty"
            )
        if made is not None:
            print(made.to_json().decode())
        return 0

    async def export(redis: Redis, audit: AuditLog) -> int:
        # Checkpoints first: every one of them then lies within the records exported after.
        cps = await read_checkpoints(redis) if args.checkpoints else []
        end = await snapshot_end(audit)
        records = export_records(audit, args.since, args.until, args.request, end)
        # A CLI with nothing else on its loop: plain blocking writes are fine here.
        target = open(args.output, "wb") if args.output else contextlib.nullcontext(sys.stdout.buffer)  # noqa: ASYNC230, SIM115
        with target as out:
            async for chunk in render(records, args.format):
                out.write(chunk)
            out.flush()
        if args.checkpoints:
            with open(args.checkpoints, "wb") as handle:  # noqa: ASYNC230
                handle.writelines(cp.to_json() + b"\n" for cp in cps)
        filtered = args.since or args.until or args.request
        say(f"exported the log up to seq {end}" + (f" with {len(cps)} checkpoint(s)" if args.checkpoints else ""))
        if filtered:
            say("note: a filtered export is for reading; verify a full jsonl export")
        return 0

    return _run(rt, {"verify": verify, "checkpoint": make_checkpoint, "export": export}[args.action])


COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {"audit": cmd_audit, "keys": cmd_keys}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="approvalbot", description="approvalbot audit tools")
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (python -m approvalbot.cli.audit ...), same behaviour as the main CLI."""
    args = parser().parse_args(argv)
    if runs_offline(args):
        return run_offline(args)

    try:
        with runtime(load_settings(), need_policy=False) as rt:
            return COMMANDS[args.command](rt, args)
    except ConfigError as exc:
        say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
