"""Chat threads as witnesses of the audit log: what the channels mirrored, compared with what the log says now.

Every sealed audit record of a request is mirrored into its card's thread with its
sequence number and the first 12 hex digits of its hash. Those threads live outside
Redis, so someone who cuts the log's tail *and* the newest checkpoint *and* the
per-request indexes (which plain `audit verify` cannot see, see docs/audit.md) still
cannot take back what the threads show. The comparison here is pure; reading the
threads is a channel capability (`approvalbot.channels.Witness`), and `read_log`
recomputes the hashes the log implies now (never trusting the stored chain).

A witnessed record is

  lost     when its seq is beyond the log's end (the tail was cut), and
  changed  when the log's record at that seq belongs to another request, or its
           recomputed hash does not start with the witnessed prefix.

Order matters: threads are read first and the log second. The log only grows, so
every record a thread showed is in the log by the time it is read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from approvalbot.audit.verify import Problem
from approvalbot.core.chain import GENESIS, link
from approvalbot.store.audit import AuditLog

HASH_PREFIX = 12
MAX_FINDINGS = 100  # listed in the report; the total is always counted


@dataclass(frozen=True)
class Witnessed:
    """One audit record as a channel showed it: `hash_prefix` is lower-case hex ('' when none was shown)."""

    request_id: str
    seq: int
    hash_prefix: str
    where: str  # where the witness is, as the channel names it (e.g. "C0APPROVALS/1700000000.000002")


@dataclass(frozen=True)
class Unread:
    """A thread the channel could not read (gone, no permission, ...): no evidence either way."""

    request_id: str
    where: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"request_id": self.request_id, "where": self.where, "code": self.code}


@dataclass(frozen=True)
class Logged:
    """The log's record at one seq, as the log implies it now: its request and recomputed hash."""

    request_id: str | None
    hash: str


@dataclass(frozen=True)
class LogView:
    """The part of the log a comparison needs: its length, and the records at the witnessed seqs."""

    end: int
    records: Mapping[int, Logged]

    def at(self, seq: int) -> Logged | None:
        return self.records.get(seq) if 1 <= seq <= self.end else None


@dataclass(frozen=True)
class Finding:
    seq: int
    kind: str  # "lost" or "changed"
    request_id: str
    detail: str
    where: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "request_id": self.request_id,
            "detail": self.detail,
            "where": self.where,
        }

    def problem(self) -> Problem:
        """The finding as a verify report's problem: a lost tail is `truncated`."""
        return Problem(self.seq, "truncated" if self.kind == "lost" else "changed", self.detail)


def compare(witnessed: Iterable[Witnessed], log: LogView) -> list[Finding]:
    """Every witnessed record the log lost or changed, by seq (one finding per seq and request)."""
    findings: dict[tuple[int, str], Finding] = {}
    for w in witnessed:
        key = (w.seq, w.request_id)
        if key in findings:
            continue
        shown = f"#{w.seq}" + (f" (hash {w.hash_prefix}…)" if w.hash_prefix else "")
        record = log.at(w.seq)
        if record is None:
            findings[key] = Finding(
                w.seq,
                "lost",
                w.request_id,
                f"the thread of {w.request_id} shows record {shown}, but the log ends at seq {log.end}: "
                "records were removed from the end",
                w.where,
            )
        elif record.request_id != w.request_id:
            findings[key] = Finding(
                w.seq,
                "changed",
                w.request_id,
                f"the thread of {w.request_id} shows record {shown}, but the log's record at seq {w.seq} "
                f"belongs to {record.request_id or 'no request'}",
                w.where,
            )
        elif w.hash_prefix and not record.hash.startswith(w.hash_prefix):
            findings[key] = Finding(
                w.seq,
                "changed",
                w.request_id,
                f"the thread of {w.request_id} shows record {shown}, but the log's record at seq {w.seq} "
                f"hashes to {record.hash[:HASH_PREFIX]}…",
                w.where,
            )
    return sorted(findings.values(), key=lambda f: (f.seq, f.request_id))


async def read_log(audit: AuditLog, seqs: Collection[int]) -> LogView:
    """The log's length and, for the wanted seqs, each record's request and *recomputed* hash.

    Streams the whole log once (bounded memory, like `verify_redis`): the hash at a seq
    is what the bodies before it imply, so a rewritten record shows even if someone kept,
    or recomputed, the stored chain.
    """
    end = await audit.length()
    wanted = {s for s in seqs if 1 <= s <= end}
    found: dict[int, Logged] = {}
    prev = GENESIS
    last = max(wanted, default=0)
    if last:
        async for record in audit.records(1, last):
            prev = link(prev, record.seq, record.body)
            if record.seq in wanted:
                found[record.seq] = Logged(_request_of(record.body), prev)
    return LogView(end, found)


def _request_of(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    value = doc.get("request_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


@dataclass
class WitnessReport:
    """What the threads of one channel say about the log."""

    channel: str
    threads: int  # threads the delivery state says were posted
    unread: list[Unread] = field(default_factory=list)
    witnessed: int = 0  # distinct (request, seq) records the threads showed
    log_end: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def complete(self) -> bool:
        return not self.unread

    def problem(self) -> Problem | None:
        return self.findings[0].problem() if self.findings else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ok": self.ok,
            "threads": self.threads,
            "threads_read": self.threads - len({(u.request_id, u.where) for u in self.unread}),
            "unread": [u.as_dict() for u in self.unread[:MAX_FINDINGS]],
            "witnessed": self.witnessed,
            "log_end": self.log_end,
            "findings_total": len(self.findings),
            "findings": [f.as_dict() for f in self.findings[:MAX_FINDINGS]],
        }

    def summary(self) -> str:
        read = self.as_dict()["threads_read"]
        text = f"{self.channel} witness: {self.witnessed} mirrored record(s) in {read} of {self.threads} thread(s)"
        if self.findings:
            lost = sum(1 for f in self.findings if f.kind == "lost")
            text += f"; {lost} lost and {len(self.findings) - lost} changed in the log"
        else:
            text += " agree with the log"
        if self.unread:
            codes = sorted({u.code for u in self.unread})
            text += f"; {len(self.unread)} thread(s) could not be read ({', '.join(codes[:3])})"
        return text


async def check(
    audit: AuditLog, channel: str, threads: int, source: AsyncIterable[Witnessed | Unread]
) -> WitnessReport:
    """Read every witness from `source` (the threads), then the log, and compare."""
    report = WitnessReport(channel, threads)
    seen: dict[tuple[str, int, str], Witnessed] = {}
    async for item in source:
        if isinstance(item, Unread):
            report.unread.append(item)
        else:
            seen.setdefault((item.request_id, item.seq, item.hash_prefix), item)
    report.witnessed = len({(w.request_id, w.seq) for w in seen.values()})
    view = await read_log(audit, {w.seq for w in seen.values()})
    report.log_end = view.end
    report.findings = compare(seen.values(), view)
    return report
