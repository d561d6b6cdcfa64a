"""Auditor tokens: the audit log, its verification and the evidence report, and nothing else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from approvalbot.audit.checkpoints import checkpoint
from approvalbot.audit.report import verify_report
from approvalbot.cli import cmd_auditors, parser
from tests.audit_support import server, signer  # noqa: F401  (fixtures)


async def test_auditor_token_rights(server) -> None:  # noqa: F811
    ids = server.service.identities
    auditor, token = await ids.add_auditor("Auditor@Example.com")
    assert auditor.email == "auditor@example.com" and token.startswith("abk_audit_")
    status, body = await server.ask()
    assert status in (200, 201, 202), body
    today = datetime.now(UTC).date()
    period = f"since={today}&until={today + timedelta(days=1)}"

    status, page, headers = await server.call("GET", f"/v1/audit/report?{period}", token, raw=True)
    assert status == 200, page
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert verify_report(page.decode(), server.signer.keyring).ok
    assert (await server.call("GET", "/v1/audit?format=jsonl", token, raw=True))[0] == 200
    status, report = await server.call("GET", "/v1/audit/verify", token)
    assert status == 200 and report["ok"] is True
    await checkpoint(server.service.audit, server.signer)
    status, listed = await server.call("GET", "/v1/audit/checkpoints", token)  # what offline verification needs
    assert status == 200 and len(listed["checkpoints"]) == 1 and listed["checkpoints"][0]["sig"]
    for method in ("POST", "PUT", "DELETE"):  # read-only: no other method on it exists for anyone
        assert (await server.call(method, "/v1/audit/checkpoints", token, json={}))[0] == 405

    # everything else is closed to auditors
    for method, path in [
        ("POST", f"/v1/requests/{body['id']}/reveal"),
        ("GET", "/v1/requests"),
        ("GET", f"/v1/requests/{body['id']}"),
        ("POST", f"/v1/requests/{body['id']}/decisions"),
        ("POST", f"/v1/requests/{body['id']}/cancel"),
        ("POST", "/v1/grants/consume"),
        ("GET", "/v1/grants/revoked"),
        ("POST", "/v1/requests"),
    ]:
        status, answer = await server.call(method, path, token, json={})
        assert status == 403, (method, path, status, answer)

    # approvers and agents may not fetch the report
    for other in (server.approver_token, server.agent_token):
        status, answer = await server.call("GET", f"/v1/audit/report?{period}", other)
        assert status == 403 and answer["error"]["code"] == "forbidden", answer

    # bad input is a clear 422
    status, answer = await server.call("GET", "/v1/audit/report?since=2025-03-08&until=2025-03-01", token)
    assert status == 422 and "must be before" in answer["error"]["message"], answer
    status, answer = await server.call("GET", f"/v1/audit/report?{period}&control=NOPE", token)
    assert status == 422 and "unknown control" in answer["error"]["message"], answer

    assert await ids.revoke_auditor("auditor@example.com") == 1
    assert (await server.call("GET", "/v1/audit/verify", token))[0] == 401


def auditors(rt, *argv: str) -> int:
    """The real `approvalbot auditors ...` command body (it runs its own event loop)."""
    return cmd_auditors(rt, parser().parse_args(["auditors", *argv]))


async def test_auditors_list_shows_live_tokens_never_the_tokens(server, rt, capsys) -> None:  # noqa: F811
    assert await asyncio.to_thread(auditors, rt, "list") == 0
    assert capsys.readouterr().out == ""  # none yet
    ids = server.service.identities
    _, first = await ids.add_auditor("Carol@Example.com")
    _, second = await ids.add_auditor("carol@example.com")  # a second token for the same address
    _, other = await ids.add_auditor("dave@example.com")
    assert await asyncio.to_thread(auditors, rt, "list") == 0
    out, err = capsys.readouterr()
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["carol@example.com", "carol@example.com", "dave@example.com"]
    assert all(r[1].startswith("tok_") and r[2].startswith("aud_") and r[3] != "-" for r in rows)
    assert len({r[1] for r in rows}) == 3 and "3 auditor token(s) of 2 address(es)" in err
    assert not [t for t in (first, second, other) if t in out + err]
    added = [r async for r in server.service.audit.records() if r.as_dict()["type"] == "auditor.added"]
    assert sorted(r.as_dict()["data"]["token_id"] for r in added) == sorted(r[1] for r in rows)  # as the log names

    assert await asyncio.to_thread(auditors, rt, "revoke", "carol@example.com") == 0
    assert await asyncio.to_thread(auditors, rt, "list") == 0
    out = capsys.readouterr().out
    assert [line.split("\t")[0] for line in out.splitlines()] == ["dave@example.com"]
