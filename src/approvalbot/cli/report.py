"""`approvalbot audit report` and `approvalbot audit verify-report`.

    approvalbot audit report --since 2025-01-01 --until 2025-12-31 --out evidence.html
    approvalbot audit report --since 2025-01-01 --until 2025-03-31 --format pdf --out q1.pdf
    approvalbot audit verify-report evidence.html --log audit.jsonl --public-key approvalbot.pub.pem

`verify-report` needs no Redis: it runs offline on a copy of the report and the export.
Exit codes as for `audit verify`: 0 verified, 1 not verified, 2 unusable input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from approvalbot.audit.evidence import ReportError, check_period, parse_day_or_time
from approvalbot.audit.pdf import PdfError, html_to_pdf
from approvalbot.audit.report import verify_report
from approvalbot.audit.report_build import build_report
from approvalbot.audit.signing import SigningKeyError, load_public_keys, load_signer
from approvalbot.audit.verify import read_jsonl
from approvalbot.cli.common import say
from approvalbot.config import load_settings
from approvalbot.runtime import Runtime


def add_commands(a: argparse._SubParsersAction[Any]) -> None:
    r = a.add_parser("report", help="write a signed evidence report (HTML or PDF) for a period")
    r.add_argument("--since", required=True, help="start, YYYY-MM-DD or ISO 8601 (included)")
    r.add_argument("--until", required=True, help="end, YYYY-MM-DD (that day included) or ISO 8601 (excluded)")
    r.add_argument("--control", help="only requests whose rule names this control")
    r.add_argument("--action", dest="action_glob", help="only actions matching this glob, e.g. 'db.*'")
    r.add_argument("--out", required=True, help="file to write")
    r.add_argument("--format", choices=("html", "pdf"), default="html")

    v = a.add_parser("verify-report", help="check a report's signature and, given the export, every figure")
    v.add_argument("file")
    v.add_argument("--log", help="a full JSONL export (`audit export --format jsonl`) to recompute the figures from")
    v.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="public key file (PEM, JWK, JWKS); default: this deployment's key (APPROVALBOT_SIGNING_KEY / data dir)",
    )


def cmd_report(rt: Runtime, args: argparse.Namespace) -> int:
    try:
        since = parse_day_or_time(args.since)
        until = parse_day_or_time(args.until, end=True)
        check_period(since, until)
        signer = load_signer(rt.settings)
    except (ReportError, SigningKeyError) as exc:
        say(f"error: {exc}")
        return 2

    async def main() -> str:
        redis = rt.async_redis()
        try:
            return await build_report(
                redis,
                signer,
                since=since,
                until=until,
                deployment=rt.settings.deployment,
                control=args.control,
                action=args.action_glob,
            )
        finally:
            await redis.aclose()

    try:
        page = asyncio.run(main())
        out = Path(args.out)
        if args.format == "pdf":
            html_to_pdf(page, out)
        else:
            out.write_text(page, encoding="utf-8")
    except (ReportError, PdfError, OSError) as exc:
        say(f"error: {exc}")
        return 2
    say(f"wrote {args.out} ({out.stat().st_size} bytes), signed with key {signer.key_id}")
    return 0


def cmd_verify_report(args: argparse.Namespace) -> int:
    """Offline: no Redis. Without --public-key the deployment's own key is used (on the server)."""
    try:
        keyring: dict[str, Any] = {}
        for path in args.public_key:
            keyring.update(load_public_keys(Path(path).read_bytes()))
        if not keyring:
            keyring = dict(load_signer(load_settings()).keyring)
        page = Path(args.file).read_text(encoding="utf-8")
        if args.log:
            with open(args.log, "rb") as handle:
                check = verify_report(page, keyring, read_jsonl(handle))
        else:
            check = verify_report(page, keyring)
    except (SigningKeyError, OSError, ValueError) as exc:
        say(f"error: {exc}")
        return 2
    print(json.dumps(check.as_dict(), indent=2))
    if check.ok:
        say("report verified" + ("" if args.log else "; give --log to recompute its figures from the export"))
        return 0
    say("report NOT verified: " + "; ".join(check.problems[:5]))
    return 1
