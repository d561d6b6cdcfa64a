"""The evidence report: figures against an independent count over the export, signing, tampering,
escaping, paging, bad input and auditor tokens."""

from __future__ import annotations

import base64
import json
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from approvalbot.audit.evidence import Query, ReportError, compute, parse_day_or_time
from approvalbot.audit.export import export_records, jsonl_line
from approvalbot.audit.report import make_doc, read_embedded, render, sign_and_render, verify_report
from approvalbot.audit.report_build import build_report
from approvalbot.audit.signing import Signer, signer_for
from approvalbot.core.chain import canonical
from approvalbot.core.errors import Refused
from approvalbot.core.events import EventType
from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.service import human_actor
from approvalbot.store.audit import AuditLog

SINCE = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = datetime(2025, 3, 8, tzinfo=UTC)
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
POLICY = {
    "rules": [
        {"name": "reads", "match": {"action": "db.read"}, "effect": "allow"},
        {"name": "drops", "match": {"action": "db.drop"}, "effect": "deny"},
        {"name": "changes", "match": {"action": "*"}, "effect": "require_approval", "approvers": ["*"]},
    ]
}


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(yaml.safe_dump(POLICY))


@pytest.fixture
def signer(settings) -> Signer:
    return signer_for(settings)


class Clock:
    def __init__(self) -> None:
        self.now = SINCE + timedelta(hours=9)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def logged(rt, redis, tmp_path: Path) -> Path:
    """A week of decisions (and one record before and after it); returns a full JSONL export."""
    service = rt.service(redis)
    clock = service.clock = Clock()
    ids = service.identities
    agent, _ = await ids.add_agent("etl-bot", "carol@example.com")
    alice, _ = await ids.add_approver("alice@example.com", ["dba"])
    bob, _ = await ids.add_approver("bob@example.com", ["security", "dba"])
    carol, _ = await ids.add_approver("carol@example.com", ["ops"])

    async def ask(action: str, resource: str = "db://main", **extra: Any):
        request, _ = await service.create(agent, RequestCreate(action=action, resource=resource, **extra))
        return request

    clock.now = SINCE - timedelta(hours=2)  # before the period: not counted
    await ask("db.read")
    clock.now = SINCE + timedelta(hours=9)
    for day in range(5):
        clock.now = SINCE + timedelta(days=day, hours=9)
        await ask("db.read")
        r = await ask("db.migrate", resource=EVIL if day == 0 else "db://main")
        clock.now += timedelta(minutes=3 + 4 * day)
        who = alice if day % 2 else bob
        await service.decide(r.id, human_actor(who), who, "approve", f"looks fine {day}")
    clock.now = SINCE + timedelta(days=5, hours=10)
    await ask("db.drop")
    r = await ask("iam.grant", justification=EVIL)
    with pytest.raises(Refused):  # carol owns the agent: blocked, and recorded
        await service.decide(r.id, human_actor(carol), carol, "approve", "it's mine")
    clock.now += timedelta(minutes=30)
    await service.decide(r.id, human_actor(alice), alice, "deny", f"no: {EVIL}")
    r = await ask("iam.grant")
    await service.timer_fired(r.id, EventType.ESCALATION_DUE)
    clock.now += timedelta(hours=2)
    await service.expire(r.id)
    r = await ask("db.migrate")
    await service.cancel(r.id, agent)
    clock.now = UNTIL + timedelta(hours=1)  # after the period
    await ask("db.read")

    out = tmp_path / "audit.jsonl"
    with out.open("wb") as handle:
        async for record in export_records(AuditLog(redis)):
            handle.write(jsonl_line(record))
    return out


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def independent(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures recomputed here with plain code over the filtered export (not the module's)."""
    created = {r["request_id"]: r["at"] for r in records if r["type"] == "request.created"}
    inside = [r for r in records if SINCE <= datetime.fromisoformat(r["at"]) < UNTIL]
    outcomes: Counter[str] = Counter()
    waits = []
    for r in inside:
        kind = r["type"].split(".")[-1]
        if r["type"] in ("request.approved", "request.denied", "request.expired", "request.cancelled"):
            if r["actor"]["kind"] == "system" and kind in ("approved", "denied"):
                kind = "allowed_by_policy" if kind == "approved" else "denied_by_policy"
            else:
                if kind in ("approved", "denied"):
                    delta = datetime.fromisoformat(r["at"]) - datetime.fromisoformat(created[r["request_id"]])
                    waits.append(delta.total_seconds())
            outcomes[kind] += 1
    per_person = Counter(r["actor"]["email"] for r in inside if r["type"] == "approval.recorded")
    return {"outcomes": outcomes, "per_person": per_person, "median": statistics.median(waits)}


def query(end: int, **extra: Any) -> Query:
    return Query(since=SINCE, until=UNTIL, end_seq=end, **extra)


def test_figures_equal_an_independent_count_over_the_export(logged: Path) -> None:
    records = load(logged)
    figures = compute(records, query(len(records)))
    expected = independent(records)
    by_outcome = figures["totals"]["by_outcome"]
    assert {k: v for k, v in by_outcome.items() if v} == dict(expected["outcomes"])
    assert by_outcome == {
        "approved": 5,
        "denied": 1,
        "expired": 1,
        "cancelled": 1,
        "allowed_by_policy": 5,
        "denied_by_policy": 1,
    }
    per_person = {p: c["approved"] for p, c in figures["approvals"]["by_person"].items() if c.get("approved")}
    assert per_person == dict(expected["per_person"])
    assert figures["approvals"]["by_person"]["alice@example.com"]["denied"] == 1
    assert figures["approvals"]["by_group"]["dba"] == {"approved": 5, "denied": 1}
    assert figures["approvals"]["by_group"]["security"] == {"approved": 3}
    assert figures["time_to_decision"]["median_s"] == expected["median"]
    assert figures["time_to_decision"]["p95_s"] == 30 * 60  # nearest rank of 6 waits: the largest
    assert figures["self_approval_blocked"]["total"] == 1
    assert figures["self_approval_blocked"]["rows"][0]["who"] == "carol@example.com"
    assert figures["escalations"]["total"] == 1
    assert figures["expired_unanswered"]["total"] == 1
    assert figures["totals"]["by_rule"]["reads"] == {"allowed_by_policy": 5}
    assert figures["controls"]["recorded"] == []
    assert figures["actions"]["total"] == figures["actions"]["shown"] == 14
    assert sum(figures["per_day"]["2025-03-06"].values()) == 4


def test_the_filters_and_the_controls_field(logged: Path) -> None:
    records = load(logged)
    figures = compute(records, query(len(records), action="db.*"))
    assert figures["totals"]["by_outcome"]["denied"] == 0
    assert set(figures["totals"]["by_action"]) == {"db.read", "db.migrate", "db.drop"}
    with pytest.raises(ReportError, match=r"unknown control 'SOC2-CC6\.1'.*none recorded"):
        compute(records, query(len(records), control="SOC2-CC6.1"))
    for r in records:  # what the rules issue will add: controls named in a request's records
        if r.get("action") == "iam.grant":
            r.setdefault("data", {})["controls"] = ["SOC2-CC6.1"]
    figures = compute(records, query(len(records), control="SOC2-CC6.1"))
    assert figures["controls"] == {"recorded": ["SOC2-CC6.1"], "requests": {"SOC2-CC6.1": 2}}
    assert figures["totals"]["by_outcome"]["denied"] == 1 and figures["totals"]["by_outcome"]["approved"] == 0


def test_records_after_the_snapshot_are_ignored(logged: Path) -> None:
    records = load(logged)
    end = len(records)
    later = [*records, {**records[-1], "seq": end + 1, "at": "2025-03-02T00:00:00+00:00"}]
    assert compute(later, query(end)) == compute(records, query(end))


def sign(records: list[dict[str, Any]], signer: Signer, **extra: Any) -> tuple[dict[str, Any], str]:
    doc = make_doc(
        records,
        query(len(records), **extra),
        deployment="test <b>deploy</b>",
        generated_at="2025-03-09T00:00:00Z",
        chain={"ok": True, "count": len(records), "head": {"seq": len(records), "hash": "ab" * 32}},
        signer=signer,
    )
    return doc, sign_and_render(doc, signer)


def test_verify_report_passes_and_detects_a_changed_figure_and_row(logged: Path, signer: Signer) -> None:
    records = load(logged)
    _, page = sign(records, signer)
    assert verify_report(page, signer.keyring, records).ok

    # a figure edited in the visible page (the signed data untouched)
    cell = '<td>allowed by policy</td><td class="n">5</td>'
    assert cell in page
    check = verify_report(page.replace(cell, cell.replace(">5<", ">50<")), signer.keyring)
    assert not check.ok and "visible report differs" in check.problems[0]

    # a figure edited in the embedded data: the signature fails
    key_id, sig, body = read_embedded(page)
    forged = json.loads(body)
    forged["figures"]["totals"]["by_outcome"]["denied"] = 0
    forged_page = render(forged, key_id, sig)
    check = verify_report(forged_page, signer.keyring)
    assert not check.ok and "signature does not match" in check.problems[0]

    # a row changed and re-signed with the right key: only the log can tell
    forged = json.loads(body)
    forged["figures"]["actions"]["rows"][3]["decided_by"] = "mallory@example.com"
    resigned = sign_and_render(forged, signer)
    assert verify_report(resigned, signer.keyring).ok
    check = verify_report(resigned, signer.keyring, records)
    assert not check.ok
    assert check.problems == ["does not follow from the log: figures.actions.rows[3].decided_by"]

    # another key
    other = Signer.__new__(Signer)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other.__init__(Ed25519PrivateKey.generate())  # type: ignore[misc]
    assert not verify_report(page, other.keyring).ok


def test_agent_supplied_text_is_escaped(logged: Path, signer: Signer) -> None:
    records = load(logged)
    _, page = sign(records, signer)
    assert (
        "<script" not in page and "<img" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    )
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "test &lt;b&gt;deploy&lt;/b&gt;" in page
    assert page.count("<svg") == 2


def test_rows_beyond_the_limit_are_summarised_and_said_so(logged: Path, signer: Signer) -> None:
    records = load(logged)
    doc, page = sign(records, signer, row_limit=4, list_limit=0)
    actions = doc["figures"]["actions"]
    assert (actions["total"], actions["shown"], len(actions["rows"])) == (14, 4, 4)
    omitted = actions["omitted_by_action"]
    assert sum(sum(c.values()) for c in omitted.values()) == 10
    assert "Rows are summarised: the first 4 are listed in full, the other 10" in page
    assert "Showing the first 0 of 1" in page
    assert verify_report(page, signer.keyring, records).ok


def test_dates_and_bad_periods() -> None:
    assert parse_day_or_time("2025-03-01") == SINCE
    assert parse_day_or_time("2025-03-07", end=True) == UNTIL
    assert parse_day_or_time("2025-03-01T10:00:00+02:00") == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert parse_day_or_time("2025-03-01T08:00:00Z") == datetime(2025, 3, 1, 8, tzinfo=UTC)
    with pytest.raises(ReportError, match="not a date"):
        parse_day_or_time("March 1st")


async def test_build_report_errors(logged: Path, redis, signer: Signer) -> None:
    with pytest.raises(ReportError, match="must be before"):
        await build_report(redis, signer, since=UNTIL, until=SINCE, deployment="d")
    with pytest.raises(ReportError, match="no audit records"):
        await build_report(
            redis, signer, since=UNTIL + timedelta(days=30), until=UNTIL + timedelta(days=31), deployment="d"
        )
    with pytest.raises(ReportError, match="unknown control"):
        await build_report(redis, signer, since=SINCE, until=UNTIL, deployment="d", control="ISO-A.5")
    page = await build_report(redis, signer, since=SINCE, until=UNTIL, deployment="prod")
    check = verify_report(page, signer.keyring, load(logged))
    assert check.ok, check.problems
    _, _, body = read_embedded(page)
    assert json.loads(body)["chain"]["ok"] is True
    assert canonical(json.loads(body)) == body and base64.b64encode(body)


def run_cli(monkeypatch, settings, *argv: str) -> int:
    from approvalbot.cli import main

    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("APPROVALBOT_DATA_DIR", str(settings.data_dir))
    return main(list(argv))


async def test_cli_report_and_verify_report(logged: Path, settings, tmp_path: Path, monkeypatch, capsys) -> None:
    import asyncio

    out = tmp_path / "r.html"
    args = ["audit", "report", "--since", "2025-03-01", "--until", "2025-03-07", "--out", str(out)]
    assert await asyncio.to_thread(run_cli, monkeypatch, settings, *args) == 0
    pem = tmp_path / "pub.pem"
    assert await asyncio.to_thread(run_cli, monkeypatch, settings, "keys", "show") == 0
    pem.write_text(capsys.readouterr().out)
    verify = ["audit", "verify-report", str(out), "--log", str(logged), "--public-key", str(pem)]
    assert await asyncio.to_thread(run_cli, monkeypatch, settings, *verify) == 0
    out.write_text(out.read_text().replace("looks fine 2", "looks fine 3"))
    assert await asyncio.to_thread(run_cli, monkeypatch, settings, *verify) == 1
    capsys.readouterr()
    bad = ["audit", "report", "--since", "2025-03-08", "--until", "2025-03-01", "--out", str(out)]
    assert await asyncio.to_thread(run_cli, monkeypatch, settings, *bad) == 2
    assert "must be before" in capsys.readouterr().err
    unknown = ["audit", "report", "--since", "2025-03-01", "--until", "2025-03-07", "--control", "X", "--out", str(out)]
    assert await asyncio.to_thread(run_cli, monkeypatch, settings, *unknown) == 2
    assert "unknown control 'X'" in capsys.readouterr().err
