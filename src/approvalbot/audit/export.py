"""Exporting audit records: JSON lines (the evidence, verifiable offline) or CSV (for reading).

A JSONL line is the record's canonical JSON: the event's fields plus `seq`,
`hash` and `prev_hash`. Dropping those three keys and re-serialising canonically
gives back exactly the bytes that were hashed, which is what makes an export
verifiable with nothing but the public key (see audit/verify.py).

Exports are a snapshot: the log is sealed first and records up to the sealed
length at that moment are written, so every exported record has its hash.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from approvalbot.audit.checkpoints import parse_time
from approvalbot.core.chain import canonical
from approvalbot.core.quoting import is_multiline, quoted
from approvalbot.store import keys
from approvalbot.store.audit import AuditLog, StoredRecord

CSV_COLUMNS = [
    "seq",
    "at",
    "type",
    "request_id",
    "action",
    "resource",
    "actor_kind",
    "actor_id",
    "actor_email",
    "actor_channel",
    "reason",
    "policy",
    "hash",
]
FORMATS = ("jsonl", "csv")
CHUNK = 64 * 1024


async def snapshot_end(audit_log: AuditLog) -> int:
    """Seal, and return the sealed length: the last seq an export started now may include."""
    return await audit_log.seal()


async def export_records(
    audit_log: AuditLog,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: str | None = None,
    end: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Records in seq order, optionally only one request's and only those with since <= at < until.

    The time filter reads every record (`at` is the event's clock, which need not
    be monotonic across processes), so it bounds the output, not the scan.
    """
    if end is None:
        end = await snapshot_end(audit_log)
    if request_id is not None:
        seqs = [int(s) for s in await audit_log.redis.lrange(keys.request_audit(request_id), 0, -1)]
        stream = _some(audit_log, [s for s in seqs if s <= end])
    else:
        stream = audit_log.records(1, end)
    async for stored in stream:
        record = stored.as_dict()
        if since is not None or until is not None:
            try:
                at = parse_time(record.get("at", ""))
            except (TypeError, ValueError):
                continue
            if (since is not None and at < since) or (until is not None and at >= until):
                continue
        yield record


async def _some(audit_log: AuditLog, seqs: list[int]) -> AsyncIterator[StoredRecord]:
    for seq in seqs:
        async for stored in audit_log.records(seq, seq):
            yield stored


def jsonl_line(record: dict[str, Any]) -> bytes:
    return canonical(record) + b"\n"


def _cell(value: Any) -> str:
    """Text for one CSV cell; a leading = + - @ is neutralised so spreadsheets don't run it."""
    if value is None:
        return ""
    text = str(value)
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def _reason(value: Any) -> Any:
    """A multi-line reason keeps its line breaks only as a quoted block ("> " on every line), so a
    line of it can never read like a record line to someone who views the CSV as text."""
    return quoted(value) if isinstance(value, str) and is_multiline(value) else value


def csv_row(record: dict[str, Any]) -> list[str]:
    actor = record.get("actor") or {}
    values = {
        "seq": record.get("seq"),
        "at": record.get("at"),
        "type": record.get("type"),
        "request_id": record.get("request_id"),
        "action": record.get("action"),
        "resource": record.get("resource"),
        "actor_kind": actor.get("kind"),
        "actor_id": actor.get("id"),
        "actor_email": actor.get("email"),
        "actor_channel": actor.get("channel"),
        "reason": _reason(record.get("reason")),
        "policy": record.get("policy"),
        "hash": record.get("hash"),
    }
    return [_cell(values[c]) for c in CSV_COLUMNS]


async def render(records: AsyncIterator[dict[str, Any]], fmt: str) -> AsyncIterator[bytes]:
    """The export as byte chunks of about 64 KiB, for a file or a streamed HTTP response."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    buffer = io.StringIO()  # used by CSV only
    writer = csv.writer(buffer, lineterminator="\r\n") if fmt == "csv" else None
    parts: list[bytes] = []
    size = 0
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    async for record in records:
        if writer is not None:
            writer.writerow(csv_row(record))
            if buffer.tell() >= CHUNK:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        else:
            line = jsonl_line(record)
            parts.append(line)
            size += len(line)
            if size >= CHUNK:
                yield b"".join(parts)
                parts, size = [], 0
    if writer is not None:
        if buffer.tell():
            yield buffer.getvalue().encode()
    elif parts:
        yield b"".join(parts)
