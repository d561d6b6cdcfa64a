"""Auditor tokens: the audit log, its verification and the evidence report, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from approvalbot.audit.report import verify_report
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

    # everything else is closed to auditors
    for method, path in [
        ("GET", "/v1/audit/checkpoints"),
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
