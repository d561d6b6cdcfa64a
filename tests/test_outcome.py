"""POST /v1/requests/{id}/outcome over HTTP, and the client and gate reporting it themselves."""

from __future__ import annotations

import asyncio
import json

import pytest

from approvalbot.client import ApiError, AsyncApprovalClient
from approvalbot.gate import approval, requires_approval
from tests.helpers import approve_when_asked

pytest_plugins = ["tests.audit_support"]
SHA = "ab" * 32


async def approved_request(server) -> dict:
    status, req = await server.ask(action="dataset.export", resource="s3://x", params={"rows": 1})
    assert status == 201, req
    status, done = await server.decide(req["id"], server.approver_token, "approve", "fine")
    assert (status, done["status"]) == (200, "approved")
    return done


async def records(server, request_id: str) -> list[dict]:
    return [
        r.as_dict() async for r in server.service.audit.records() if json.loads(r.body).get("request_id") == request_id
    ]


async def outcome(server, request_id: str, token: str, **body) -> tuple:
    return await server.call("POST", f"/v1/requests/{request_id}/outcome", token, json=body)


async def test_outcome_once_for_an_approved_request_and_audited(server):
    done = await approved_request(server)
    status, body = await outcome(
        server, done["id"], server.agent_token, status="executed", detail="ok", result_sha256=SHA
    )
    assert status == 200, body
    assert body["status"] == "approved" and body["execution"]["status"] == "executed"
    assert body["execution"]["result_sha256"] == SHA and body["execution"]["detail"] == "ok"
    status, again = await outcome(server, done["id"], server.agent_token, status="failed")
    assert (status, again["error"]["code"]) == (409, "outcome_already_reported")
    types = [r["type"] for r in await records(server, done["id"])]
    assert types[-1] == "executed" and types.count("executed") == 1


async def test_outcome_refused_unless_approved_and_for_strangers(server):
    status, pending = await server.ask(action="dataset.export")
    status, body = await outcome(server, pending["id"], server.agent_token, status="executed")
    assert (status, body["error"]["code"]) == (409, "not_approved")
    done = await approved_request(server)
    status, body = await outcome(server, done["id"], server.approver_token, status="executed")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    _, other = await server.service.identities.add_agent("other-bot", "o@example.com")
    status, body = await outcome(server, done["id"], other, status="executed")
    assert status == 404
    _, foreign = await server.service.identities.add_executor("foreign", "other-bot")
    assert (await outcome(server, done["id"], foreign, status="executed"))[0] == 404
    for bad in ({"status": "done"}, {"status": "executed", "result_sha256": "xyz"}, {"status": "failed", "x": 1}):
        assert (await outcome(server, done["id"], server.agent_token, **bad))[0] == 422


async def test_an_executor_bound_to_the_agent_reports_failure(server):
    done = await approved_request(server)
    _, executor = await server.service.identities.add_executor("deployer", "etl-bot")
    status, body = await outcome(server, done["id"], executor, status="failed", detail="disk full")
    assert status == 200 and body["execution"]["status"] == "failed"
    last = (await records(server, done["id"]))[-1]
    assert last["type"] == "execution_failed" and last["actor"]["kind"] == "executor"
    assert last["reason"] == "disk full"


async def test_client_and_gate_report_automatically(server):
    async with AsyncApprovalClient(server.base, server.agent_token) as client:
        req = await client.request("dataset.export")
        decider = asyncio.create_task(approve_when_asked(server))
        await client.wait(req.id, timeout=10)
        await decider
        reported = await client.report_outcome(req.id, "executed", result_sha256=SHA)
        assert reported.execution is not None and reported.execution.status == "executed"
        with pytest.raises(ApiError):
            await client.report_outcome(req.id, "failed")

        @requires_approval("dataset.export", client=client)
        async def explode() -> None:
            raise RuntimeError("boom")

        decider = asyncio.create_task(approve_when_asked(server))
        with pytest.raises(RuntimeError):
            await explode()
        failed = await client.get((await decider)["id"])
        assert failed.execution is not None and failed.execution.status == "failed"
        assert failed.execution.detail == "raised RuntimeError"

        decider = asyncio.create_task(approve_when_asked(server))
        async with approval("dataset.export", client=client) as ok:
            pass
        await decider
        ran = await client.get(ok.id)
        assert ran.execution is not None and ran.execution.status == "executed"


def test_cards_show_the_execution():
    from datetime import UTC, datetime

    from approvalbot.core.models import Execution, Status
    from approvalbot.slack.blocks import card as slack_card
    from approvalbot.slack.blocks import describe
    from approvalbot.teams.cards import _outcome_block
    from tests.core.factories import request as make_request

    req = make_request(status=Status.APPROVED)
    req = req.model_copy(
        update={
            "decided_at": datetime(2025, 1, 1, 14, 0, tzinfo=UTC),
            "execution": Execution(status="executed", at=datetime(2025, 1, 1, 14, 2, tzinfo=UTC), by="agent:a"),
        }
    )
    assert "Executed 14:02 UTC" in json.dumps(slack_card(req).blocks)
    assert "Executed 14:02 UTC" in json.dumps(_outcome_block(req))
    failed = req.model_copy(update={"execution": req.execution.model_copy(update={"status": "failed"})})
    assert "Execution failed" in json.dumps(slack_card(failed).blocks)
    assert "Execution failed" in json.dumps(_outcome_block(failed))
    assert describe({"type": "executed", "actor": {"kind": "agent", "id": "a"}})[1].startswith("Executed")


async def test_an_outcome_detail_is_masked_like_a_reason(server):
    """The detail is free text people read (cards, thread, audit): a pasted key must not reach them."""
    done = await approved_request(server)
    key = "AKIA" + "Q" * 16
    status, body = await outcome(server, done["id"], server.agent_token, status="failed", detail=f"denied for {key}")
    assert status == 200, body
    assert key not in json.dumps(body) and body["execution"]["detail"].startswith("denied for ")
    last = (await records(server, done["id"]))[-1]
    assert key not in json.dumps(last) and last["reason"] == body["execution"]["detail"]
