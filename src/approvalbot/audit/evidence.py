"""The evidence report's figures, computed from audit records alone.

Everything here is a pure function of the records (dicts as `audit export --format jsonl`
writes them), so anyone holding a full JSONL export can recompute every figure and row
and compare (`approvalbot audit verify-report --log`). The report never reads requests,
people or policy from Redis: what is not in the log is not in the report.

Choices an auditor should know (also stated in docs/evidence.md):

- the period is half-open, `since <= at < until`, on each record's own `at`, the same
  filter as `audit export --since/--until`;
- an outcome is a final record (approved, denied, expired, cancelled) in the period; an
  approval or denial by the `system` actor is the policy's doing ("allowed/denied by policy");
- time to decision runs from the request's `request.created` record (which may lie before
  the period) to a human's final approve or deny; percentiles use the nearest-rank method;
- a person's groups are those of the latest `person.added`/`person.updated` record about
  them at or before the decision (the log is read from seq 1 for that reason);
- controls come from a `controls` list in a request record's `data`, when rules carry them.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from approvalbot.audit.checkpoints import parse_time

OUTCOMES = ("approved", "denied", "expired", "cancelled", "allowed_by_policy", "denied_by_policy")
OUTCOME_LABELS = {
    "approved": "approved",
    "denied": "denied",
    "expired": "expired",
    "cancelled": "cancelled",
    "allowed_by_policy": "allowed by policy",
    "denied_by_policy": "denied by policy",
    "pending": "pending",
}
FINAL_TYPES = {
    "request.approved": "approved",
    "request.denied": "denied",
    "request.expired": "expired",
    "request.cancelled": "cancelled",
}
PERSON_TYPES = ("person.added", "person.updated")
# Rows kept in full in the report; beyond this the rows are summarised (see `Query.row_limit`).
ROW_LIMIT = 2000
LIST_LIMIT = 500  # self-approval attempts, escalations, expired: each list capped, with its total


class ReportError(ValueError):
    """The report cannot be made as asked; the message says why and is safe to show."""


@dataclass(frozen=True)
class Query:
    """What the report covers. `end_seq` pins the snapshot so a later export recomputes the same figures."""

    since: datetime
    until: datetime
    end_seq: int
    control: str | None = None
    action: str | None = None
    row_limit: int = ROW_LIMIT
    list_limit: int = LIST_LIMIT

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "end_seq": self.end_seq,
            "control": self.control,
            "action": self.action,
            "row_limit": self.row_limit,
            "list_limit": self.list_limit,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Query:
        return cls(
            since=parse_time(doc["since"]),
            until=parse_time(doc["until"]),
            end_seq=int(doc["end_seq"]),
            control=doc.get("control"),
            action=doc.get("action"),
            row_limit=int(doc.get("row_limit", ROW_LIMIT)),
            list_limit=int(doc.get("list_limit", LIST_LIMIT)),
        )


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_day_or_time(text: str, *, end: bool = False) -> datetime:
    """`YYYY-MM-DD` (midnight UTC; as an end, the day is included: midnight of the next day) or ISO 8601."""
    text = text.strip()
    try:
        if len(text) == 10 and text[4] == "-" and text[7] == "-":
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return day + _ONE_DAY if end else day
        return parse_time(text)
    except ValueError:
        raise ReportError(f"not a date (YYYY-MM-DD) or ISO 8601 time: {text!r}") from None


def check_period(since: datetime, until: datetime) -> None:
    if since >= until:
        raise ReportError(f"--since ({iso(since)}) must be before --until ({iso(until)})")


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def median(sorted_values: list[float]) -> float | None:
    """The usual median (mean of the middle two for an even count)."""
    n = len(sorted_values)
    if n == 0:
        return None
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2


def outcome_of(record: dict[str, Any]) -> str | None:
    kind = FINAL_TYPES.get(str(record.get("type")))
    if kind is None:
        return None
    if (record.get("actor") or {}).get("kind") == "system" and kind in ("approved", "denied"):
        return "allowed_by_policy" if kind == "approved" else "denied_by_policy"
    return kind


def _who(actor: dict[str, Any]) -> str:
    return str(actor.get("email") or actor.get("id") or "?")


def _controls(record: dict[str, Any]) -> list[str]:
    found = (record.get("data") or {}).get("controls")
    if isinstance(found, list):
        return [str(c) for c in found]
    return []


@dataclass
class _Request:
    """What the log says about one request, gathered as the records stream past."""

    request_id: str
    created_at: str | None = None
    agent: str | None = None
    owner: str | None = None
    action: str | None = None
    resource: str | None = None
    rule: str | None = None
    outcome: str | None = None
    final_at: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    approved_by_humans: bool = False
    in_period: bool = False


def compute(records: Iterable[dict[str, Any]], query: Query) -> dict[str, Any]:
    """All figures and rows of the report, as plain JSON-able data (the part that is signed).

    Reads the records once, in seq order; records after `query.end_seq` are ignored so an
    export taken later gives the same answer.
    """
    requests: dict[str, _Request] = {}
    groups_of: dict[str, list[str]] = {}
    seqs: dict[str, list[int]] = defaultdict(list)
    controls_of: dict[str, set[str]] = defaultdict(set)
    finals: list[tuple[dict[str, Any], str]] = []
    decisions: list[tuple[dict[str, Any], str, list[str]]] = []  # (record, "approved"|"denied", groups)
    blocked: list[dict[str, Any]] = []
    escalations: list[dict[str, Any]] = []
    records_read = 0
    records_in_period = 0

    for record in records:
        seq = int(record.get("seq", 0))
        if seq > query.end_seq:
            break
        records_read += 1
        rtype = str(record.get("type"))
        actor = record.get("actor") or {}
        data = record.get("data") or {}
        if rtype in PERSON_TYPES and isinstance(data.get("groups"), list):
            person = data.get("person_id") or data.get("id")
            if person:
                groups_of[str(person)] = [str(g) for g in data["groups"]]
        rid = record.get("request_id")
        if not rid:
            continue
        rid = str(rid)
        req = requests.get(rid)
        if req is None:
            req = requests[rid] = _Request(rid)
        req.action = req.action or record.get("action")
        req.resource = req.resource or record.get("resource")
        req.rule = req.rule or record.get("policy")
        controls_of[rid].update(_controls(record))
        if rtype == "request.created":
            req.created_at, req.agent, req.owner = record.get("at"), actor.get("id"), actor.get("email")
        try:
            at = parse_time(str(record.get("at", "")))
        except ValueError:
            continue
        if not query.since <= at < query.until:
            continue
        records_in_period += 1
        req.in_period = True
        seqs[rid].append(seq)
        outcome = outcome_of(record)
        if outcome is not None:
            req.outcome, req.final_at = outcome, record.get("at")
            req.decided_by, req.reason = _who(actor), record.get("reason")
            finals.append((record, outcome))
        if rtype == "approval.recorded" or (rtype == "request.denied" and actor.get("kind") == "human"):
            person = str(actor.get("person_id") or "")
            decisions.append(
                (record, "approved" if rtype == "approval.recorded" else "denied", groups_of.get(person, []))
            )
            if rtype == "approval.recorded":
                req.approved_by_humans = True
        elif rtype == "self_approval.blocked":
            blocked.append(record)
        elif rtype == "escalation.due":
            escalations.append(record)

    def selected(rid: str) -> bool:
        req = requests[rid]
        if query.action is not None and not fnmatch.fnmatchcase(req.action or "", query.action):
            return False
        return query.control is None or query.control in controls_of[rid]

    known_controls = sorted({c for rid, cs in controls_of.items() if requests[rid].in_period for c in cs})
    if query.control is not None and query.control not in known_controls:
        listed = ", ".join(known_controls) if known_controls else "none recorded"
        raise ReportError(f"unknown control {query.control!r}: controls recorded in the period: {listed}")

    by_outcome: Counter[str] = Counter({o: 0 for o in OUTCOMES})
    by_action: dict[str, Counter[str]] = defaultdict(Counter)
    by_rule: dict[str, Counter[str]] = defaultdict(Counter)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    waits: list[float] = []
    for record, outcome in finals:
        rid = str(record["request_id"])
        if not selected(rid):
            continue
        by_outcome[outcome] += 1
        by_action[str(record.get("action"))][outcome] += 1
        by_rule[str(record.get("policy"))][outcome] += 1
        per_day[str(record.get("at", ""))[:10]][outcome] += 1
        created = requests[rid].created_at
        if outcome in ("approved", "denied") and created:
            waits.append((parse_time(str(record["at"])) - parse_time(created)).total_seconds())
    waits.sort()

    by_person: dict[str, Counter[str]] = defaultdict(Counter)
    by_group: dict[str, Counter[str]] = defaultdict(Counter)
    for record, decision, groups in decisions:
        if not selected(str(record["request_id"])):
            continue
        by_person[_who(record.get("actor") or {})][decision] += 1
        for group in groups or ["(no group recorded)"]:
            by_group[group][decision] += 1

    def event_row(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "at": record.get("at"),
            "seq": record.get("seq"),
            "request_id": record.get("request_id"),
            "action": record.get("action"),
            "who": _who(record.get("actor") or {}),
            "reason": record.get("reason"),
            **extra,
        }

    blocked_rows = [
        event_row(r, attempted=(r.get("data") or {}).get("attempted"))
        for r in blocked
        if selected(str(r["request_id"]))
    ]
    escalation_rows = [
        event_row(r, escalate_to=(r.get("data") or {}).get("escalate_to"))
        for r in escalations
        if selected(str(r["request_id"]))
    ]
    expired_rows = [
        event_row(r)
        for r, outcome in finals
        if outcome == "expired"
        and selected(str(r["request_id"]))
        and not requests[str(r["request_id"])].approved_by_humans
    ]

    chosen = sorted(
        (req for rid, req in requests.items() if req.in_period and selected(rid)),
        key=lambda req: (min(seqs[req.request_id]), req.request_id),
    )
    rows = [_action_row(req, seqs[req.request_id], sorted(controls_of[req.request_id])) for req in chosen]
    shown = rows[: query.row_limit]
    omitted: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows[query.row_limit :]:
        omitted[str(row["action"])][str(row["outcome"])] += 1

    return {
        "query": query.as_dict(),
        "records": {"read": records_read, "in_period": records_in_period},
        "totals": {
            "requests": len(rows),
            "by_outcome": dict(by_outcome),
            "by_action": _table(by_action),
            "by_rule": _table(by_rule),
        },
        "per_day": _table(per_day),
        "time_to_decision": {
            "count": len(waits),
            "median_s": median(waits),
            "p95_s": percentile(waits, 95),
            "max_s": waits[-1] if waits else None,
            "seconds": _histogram_input(waits),
        },
        "approvals": {"by_person": _table(by_person), "by_group": _table(by_group)},
        "self_approval_blocked": _capped(blocked_rows, query.list_limit),
        "escalations": _capped(escalation_rows, query.list_limit),
        "expired_unanswered": _capped(expired_rows, query.list_limit),
        "controls": {
            "recorded": known_controls,
            "requests": {c: sum(1 for req in chosen if c in controls_of[req.request_id]) for c in known_controls},
        },
        "actions": {
            "total": len(rows),
            "shown": len(shown),
            "rows": shown,
            "omitted_by_action": _table(omitted),
        },
    }


def _action_row(req: _Request, seqs: list[int], controls: list[str]) -> dict[str, Any]:
    return {
        "request_id": req.request_id,
        "created_at": req.created_at,
        "agent": req.agent,
        "owner": req.owner,
        "action": req.action,
        "resource": req.resource,
        "rule": req.rule,
        "outcome": req.outcome or "pending",
        "decided_at": req.final_at,
        "decided_by": req.decided_by,
        "reason": req.reason,
        "controls": controls,
        "seqs": seqs,
    }


def _table(counts: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {key: dict(sorted(counts[key].items())) for key in sorted(counts)}


def _capped(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"total": len(rows), "rows": rows[:limit]}


def _histogram_input(waits: list[float]) -> list[float]:
    """The sorted waits, thinned to at most 2,000 evenly spaced quantiles so a year's data stays small;
    the median and p95 above are computed from all of them."""
    if len(waits) <= 2000:
        return waits
    step = len(waits) / 2000
    return [waits[int(i * step)] for i in range(2000)]


_ONE_DAY = datetime(2000, 1, 2) - datetime(2000, 1, 1)
