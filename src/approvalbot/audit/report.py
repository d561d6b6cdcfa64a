"""The evidence report: one self-contained, signed HTML file, and its verification.

The report is a rendering of one JSON document (`doc`): the query, the deployment, the
chain verification result and the figures of audit/evidence.py. The document's canonical
JSON is signed with the deployment's Ed25519 key and embedded (base64, in a hidden
element's attributes: no script runs, nothing is fetched). Rendering is deterministic, so
`verify_report` can re-render the signed document and compare it with the file byte for
byte: a figure edited in the visible HTML is found as surely as one edited in the data.

Every value from the log is escaped (`html.escape`, quotes included): records carry
agent-supplied text (resources, reasons, justifications).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from approvalbot.audit import report_charts
from approvalbot.audit.evidence import OUTCOME_LABELS, OUTCOMES, Query, compute
from approvalbot.audit.signing import Keyring, Signer, raw_public, verify_signature
from approvalbot.core.chain import canonical

VERSION = 1
PAGE_ROWS = 100  # rows per printed table of privileged actions
_DATA = re.compile(
    r'<div hidden id="approvalbot-evidence" data-key-id="([0-9a-f]{16})" data-sig="([A-Za-z0-9+/=]+)" '
    r'data-doc="([A-Za-z0-9+/=]+)"></div>'
)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 over the raw 32-byte public key, in colon-separated hex (its first 16 digits are the key id)."""
    digest = hashlib.sha256(raw_public(key)).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 64, 4))


def make_doc(
    records: Iterable[dict[str, Any]],
    query: Query,
    *,
    deployment: str,
    generated_at: str,
    chain: dict[str, Any],
    signer: Signer,
) -> dict[str, Any]:
    return {
        "version": VERSION,
        "deployment": deployment,
        "generated_at": generated_at,
        "key_id": signer.key_id,
        "key_fingerprint": fingerprint(signer.public_key),
        "chain": chain,
        "figures": compute(records, query),
    }


def sign_and_render(doc: dict[str, Any], signer: Signer) -> str:
    body = canonical(doc)
    return render(doc, signer.key_id, base64.b64encode(signer.sign(body)).decode())


# ---------------------------------------------------------------------------
# Verification


@dataclass
class ReportCheck:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    doc: dict[str, Any] | None = None

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "notes": self.notes}


def read_embedded(page: str) -> tuple[str, str, bytes]:
    """(key id, base64 signature, canonical document bytes) from a report; ValueError if there are none."""
    found = _DATA.findall(page)
    if len(found) != 1:
        raise ValueError("this file holds no approvalbot evidence data (or more than one)")
    key_id, sig, doc = found[0]
    return key_id, sig, base64.b64decode(doc, validate=True)


def verify_report(
    page: str, keyring: Keyring, records: Iterable[dict[str, Any]] | None = None, *, rerender: bool = True
) -> ReportCheck:
    """Signature, then the visible page against the signed data, then (given the log) every figure and row."""
    check = ReportCheck()
    try:
        key_id, sig, body = read_embedded(page)
        doc = json.loads(body)
    except ValueError as exc:
        check.fail(str(exc))
        return check
    check.doc = doc
    key = keyring.get(key_id)
    if key is None:
        check.fail(f"the report is signed by key {key_id}, which is not among the trusted keys")
    elif not verify_signature(key, base64.b64decode(sig), body):
        check.fail("the signature does not match the report's data: the data was changed")
    if canonical(doc) != body:
        check.fail("the embedded data is not in canonical form")
    if rerender and render(doc, key_id, sig) != page:
        check.fail("the visible report differs from its signed data: a figure, row or text was edited")
    if records is not None:
        figures = doc.get("figures") or {}
        recomputed = compute(records, Query.from_dict(figures.get("query") or {}))
        for path in _differences(figures, recomputed):
            check.fail(f"does not follow from the log: {path}")
        if check.ok:
            check.notes.append("every figure and row was recomputed from the log and matches")
    return check


def _differences(a: Any, b: Any, path: str = "figures") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _differences(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [path]


# ---------------------------------------------------------------------------
# Rendering (deterministic: the same document always gives the same bytes)


def e(value: Any) -> str:
    """Escaped text for HTML; None shows as an en dash."""
    return "\u2013" if value is None else html.escape(str(value), quote=True)


CSS = """
@page { size: A4 landscape; margin: 12mm; }
* { box-sizing: border-box; }
body { font: 10pt/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111; margin: 0 auto;
       max-width: 1100px; padding: 16px; }
h1 { font-size: 18pt; margin: 0 0 4px; } h2 { font-size: 13pt; margin: 18px 0 6px; border-bottom: 1px solid #999; }
h3 { font-size: 11pt; margin: 12px 0 4px; }
table { table-layout: fixed; width: 100%; border-collapse: collapse; margin: 4px 0 10px; }
th, td { border: 1px solid #bbb; padding: 2px 4px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; word-break: break-word; }
th { background: #eee; } td.n, th.n { text-align: right; }
thead { display: table-header-group; } tr { break-inside: avoid; }
.kv th { width: 28%; } .muted { color: #555; } .warn { color: #a00; font-weight: bold; }
.ok { color: #1b5e20; font-weight: bold; } code, pre { font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 8.5pt; overflow-wrap: anywhere; white-space: pre-wrap; }
.chart svg { width: 100%; height: auto; max-width: 100%; }
.page { break-before: auto; } section { break-inside: auto; }
@media print { body { max-width: none; padding: 0; } h2 { break-after: avoid; } .chart { break-inside: avoid; } }
"""


def _kv(rows: list[tuple[str, Any]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def _counts(title: str, table: dict[str, dict[str, int]], columns: Iterable[str], key_label: str) -> str:
    cols = list(columns)
    if not table:
        return f"<h3>{e(title)}</h3><p class='muted'>none in the period</p>"
    head = f"<tr><th>{e(key_label)}</th>" + "".join(f'<th class="n">{e(OUTCOME_LABELS.get(c, c))}</th>' for c in cols)
    body = "".join(
        f"<tr><td>{e(k)}</td>"
        + "".join(f'<td class="n">{counts.get(c, 0)}</td>' for c in cols)
        + f'<td class="n">{sum(counts.values())}</td></tr>'
        for k, counts in table.items()
    )
    return f"<h3>{e(title)}</h3><table><thead>{head}<th class='n'>total</th></tr></thead><tbody>{body}</tbody></table>"


def _rows(title: str, capped: dict[str, Any], columns: list[tuple[str, str]]) -> str:
    rows = capped["rows"]
    out = f"<h3>{e(title)} ({capped['total']})</h3>"
    if not capped["total"]:
        return out + "<p class='muted'>none in the period</p>"
    head = "".join(f"<th>{e(label)}</th>" for _, label in columns)
    body = "".join("<tr>" + "".join(f"<td>{e(r.get(k))}</td>" for k, _ in columns) + "</tr>" for r in rows)
    out += f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if capped["total"] > len(rows):
        out += f"<p class='warn'>Showing the first {len(rows)} of {capped['total']}; the export holds them all.</p>"
    return out


ACTION_COLUMNS = [
    ("created_at", "requested"),
    ("agent", "agent"),
    ("owner", "owner"),
    ("action", "action"),
    ("resource", "resource"),
    ("outcome", "outcome"),
    ("decided_at", "decided"),
    ("decided_by", "decided by"),
    ("reason", "reason"),
    ("seqs", "audit seq"),
]


def _action_tables(actions: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = actions["rows"]
    total, shown = actions["total"], actions["shown"]
    out = f"<p>{total} request(s) in the period."
    if shown < total:
        out += (
            f" <span class='warn'>Rows are summarised: the first {shown} are listed in full, the other "
            f"{total - shown} are counted by action and outcome below.</span> "
            "<code>approvalbot audit export --since … --until …</code> holds every row."
        )
    out += "</p>"
    colgroup = (
        "<colgroup>"
        + "".join(f'<col style="width:{w}%">' for w in (10, 10, 11, 10, 13, 7, 10, 11, 12, 6))
        + "</colgroup>"
    )
    head = "<thead><tr>" + "".join(f"<th>{e(label)}</th>" for _, label in ACTION_COLUMNS) + "</tr></thead>"
    for start in range(0, len(rows), PAGE_ROWS):
        page = rows[start : start + PAGE_ROWS]
        body = ""
        for r in page:
            cells = []
            for key, _ in ACTION_COLUMNS:
                value = r.get(key)
                if key == "seqs":
                    value = ", ".join(str(s) for s in value or [])
                elif key == "outcome":
                    value = OUTCOME_LABELS.get(str(value), value)
                cells.append(f"<td>{e(value)}</td>")
            body += "<tr>" + "".join(cells) + "</tr>"
        caption = f"<caption>rows {start + 1}\u2013{start + len(page)} of {total}</caption>"
        out += f'<table class="page">{caption}{colgroup}{head}<tbody>{body}</tbody></table>'
    if actions["omitted_by_action"]:
        out += _counts("Summarised rows by action", actions["omitted_by_action"], [*OUTCOMES, "pending"], "action")
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def render(doc: dict[str, Any], key_id: str, sig: str) -> str:
    f = doc["figures"]
    q = f["query"]
    chain = doc["chain"]
    totals = f["totals"]
    head = chain.get("head") or {}
    verdict = "<span class='ok'>verified</span>" if chain.get("ok") else "<span class='warn'>DID NOT VERIFY</span>"
    problem = chain.get("problem")
    ttd = f["time_to_decision"]
    filters = ", ".join(
        x for x in (q.get("action") and f"action {q['action']}", q.get("control") and f"control {q['control']}") if x
    )
    controls = f["controls"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>Approval evidence: {e(doc['deployment'])} {e(q['since'])} to {e(q['until'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Evidence of human oversight: {e(doc['deployment'])}</h1>",
        _kv(
            [
                ("period (since ≤ at < until, UTC)", f"{q['since']} to {q['until']}"),
                ("filters", filters or "none"),
                ("deployment", doc["deployment"]),
                ("generated at", doc["generated_at"]),
                ("audit records up to seq", q["end_seq"]),
                ("records in the period", f["records"]["in_period"]),
            ]
        ),
        "<h2>Chain verification</h2>",
        f"<p>The audit log's hash chain and signed checkpoints: {verdict}</p>",
        _kv(
            [
                ("records checked", chain.get("count")),
                ("head seq", head.get("seq")),
                ("head hash", head.get("hash")),
                ("checkpoints verified", f"{chain.get('checkpoints_verified')} of {chain.get('checkpoints')}"),
                ("last seq covered by a signed checkpoint", chain.get("attested_seq")),
                ("signing key id", doc["key_id"]),
                ("signing key fingerprint (SHA-256)", doc["key_fingerprint"]),
                ("problem", problem and f"seq {problem.get('seq')}: {problem.get('kind')}: {problem.get('detail')}"),
            ]
        ),
        "<h2>Totals</h2>",
        f"<p>{totals['requests']} request(s) had a record in the period.</p>",
        '<table><thead><tr><th>outcome</th><th class="n">requests</th></tr></thead><tbody>'
        + "".join(
            f'<tr><td>{e(OUTCOME_LABELS[o])}</td><td class="n">{totals["by_outcome"].get(o, 0)}</td></tr>'
            for o in OUTCOMES
        )
        + "</tbody></table>",
        _counts("By action", totals["by_action"], OUTCOMES, "action"),
        _counts("By rule", totals["by_rule"], OUTCOMES, "rule"),
        "<h2>Charts</h2>",
        f'<div class="chart">{report_charts.decisions_per_day(f["per_day"])}</div>',
        f'<div class="chart">{report_charts.time_to_decision(ttd["seconds"], ttd["median_s"], ttd["p95_s"])}</div>',
        _kv(
            [
                ("human decisions timed", ttd["count"]),
                ("median time to decision", _duration(ttd["median_s"])),
                ("95th percentile (nearest rank)", _duration(ttd["p95_s"])),
                ("longest", _duration(ttd["max_s"])),
            ]
        ),
        "<h2>Who decided</h2>",
        _counts("Decisions by person", f["approvals"]["by_person"], ["approved", "denied"], "person"),
        _counts("Decisions by group", f["approvals"]["by_group"], ["approved", "denied"], "group"),
        _rows(
            "Blocked self-approval attempts",
            f["self_approval_blocked"],
            [
                ("at", "at"),
                ("who", "who"),
                ("attempted", "attempted"),
                ("action", "action"),
                ("request_id", "request"),
                ("reason", "reason"),
                ("seq", "seq"),
            ],
        ),
        _rows(
            "Escalations",
            f["escalations"],
            [
                ("at", "at"),
                ("action", "action"),
                ("request_id", "request"),
                ("escalate_to", "escalated to"),
                ("seq", "seq"),
            ],
        ),
        _rows(
            "Expired unanswered",
            f["expired_unanswered"],
            [("at", "expired at"), ("action", "action"), ("request_id", "request"), ("seq", "seq")],
        ),
        "<h2>Controls covered</h2>",
        (
            '<table><thead><tr><th>control</th><th class="n">requests</th></tr></thead><tbody>'
            + "".join(f'<tr><td>{e(c)}</td><td class="n">{n}</td></tr>' for c, n in controls["requests"].items())
            + "</tbody></table>"
            if controls["recorded"]
            else "<p class='muted'>none recorded: no request record in the period names a control</p>"
        ),
        "<h2>Privileged actions</h2>",
        _action_tables(f["actions"]),
        "<h2>How to verify this report offline</h2>",
        "<p>On a machine with approvalbot installed (no server or Redis needed):</p><pre>"
        + e(
            "approvalbot audit export --format jsonl --output audit.jsonl --checkpoints checkpoints.jsonl\n"
            "approvalbot keys show > approvalbot.pub.pem\n"
            "approvalbot audit verify --file audit.jsonl --checkpoints checkpoints.jsonl "
            "--public-key approvalbot.pub.pem\n"
            "approvalbot audit verify-report report.html --log audit.jsonl --public-key approvalbot.pub.pem"
        )
        + "</pre>",
        f"<p>Check that the public key's fingerprint is <code>{e(doc['key_fingerprint'])}</code> "
        f"(key id <code>{e(doc['key_id'])}</code>) before trusting it. The report's data is signed with "
        "Ed25519; its figures follow from the audit records with seq ≤ "
        f"{e(q['end_seq'])} and can be recomputed from the export.</p>",
        f'<div hidden id="approvalbot-evidence" data-key-id="{e(key_id)}" data-sig="{e(sig)}" '
        f'data-doc="{base64.b64encode(canonical(doc)).decode()}"></div>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
