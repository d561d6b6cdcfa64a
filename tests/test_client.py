"""The Python client, decorator and CLI against the real server on loopback."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest

from approvalbot.client import (
    ApiError,
    ApprovalClient,
    ApprovalError,
    AsyncApprovalClient,
    Cancelled,
    Denied,
    Expired,
    StillPending,
)
from approvalbot.gate import approval, requires_approval
from tests.helpers import approve_when_asked


async def test_async_client_request_get_wait_cancel(api):
    async with AsyncApprovalClient(api.base, api.agent_token) as client:
        req = await client.request(
            "dataset.export", resource="s3://b/k", params={"rows": 3}, context={"code_path": "x.py:1"}
        )
        assert req.status.value == "pending" and req.params == {"rows": 3}
        assert (await client.get(req.id)).id == req.id
        decider = asyncio.create_task(approve_when_asked(api))
        approved = await client.wait(req.id, timeout=10)
        await decider
        assert approved.status.value == "approved"

        other = await client.request("dataset.export")
        cancelled = await client.cancel(other.id)
        assert cancelled.status.value == "cancelled"
        with pytest.raises(Cancelled):
            await client.wait(other.id, timeout=1)


async def test_denied_carries_reason_and_approver(api):
    async with AsyncApprovalClient(api.base, api.agent_token) as client:
        req = await client.request("iam.role.attach")
        decider = asyncio.create_task(approve_when_asked(api, "deny", "least privilege"))
        with pytest.raises(Denied) as denied:
            await client.wait(req.id, timeout=10)
        await decider
        assert denied.value.reason == "least privilege"
        assert denied.value.approver == "alice@example.com"


async def test_expired_and_still_pending(api):
    from datetime import UTC, datetime, timedelta

    async with AsyncApprovalClient(api.base, api.agent_token) as client:
        req = await client.request("x.y", expires_in=10)
        with pytest.raises(StillPending):
            await client.wait(req.id, timeout=0.2)
        api.service.clock = lambda: datetime.now(UTC) + timedelta(seconds=11)
        await api.service.expire(req.id)
        with pytest.raises(Expired):
            await client.wait(req.id, timeout=1)


async def test_api_errors_are_typed(api):
    async with AsyncApprovalClient(api.base, "abk_agent_wrong") as client:
        with pytest.raises(ApiError) as err:
            await client.request("x.y")
        assert (err.value.status, err.value.code) == (401, "unauthorized")
    async with AsyncApprovalClient(api.base, api.agent_token) as client:
        req = await client.request("x.y")
        with pytest.raises(ApiError) as err:
            await client.decide(req.id, "approve")
        assert err.value.code == "forbidden"


async def test_transport_failure_is_approval_error():
    async with AsyncApprovalClient("http://127.0.0.1:9", "t", retries=1, backoff=0.01) as client:
        with pytest.raises(ApprovalError):
            await client.get("req_x")


class DropAfterSending(httpx.AsyncBaseTransport):
    """Delivers the request, then loses the response: the worst case for a retry."""

    def __init__(self, drops: int):
        self.inner = httpx.AsyncHTTPTransport()
        self.drops = drops
        self.keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self.drops:
            self.drops -= 1
            raise httpx.ReadError("connection dropped", request=request)
        return response


async def test_retry_after_dropped_connection_creates_one_request(api):
    transport = DropAfterSending(drops=2)
    async with AsyncApprovalClient(api.base, api.agent_token, transport=transport, backoff=0.01) as client:
        req = await client.request("model.deploy", resource="prod")
    assert len(transport.keys) == 3 and len(set(transport.keys)) == 1
    assert await api.service.redis.zcard("ab:pending") == 1
    assert (await api.service.get(req.id)).resource == "prod"


async def test_sync_client_and_decorator_on_sync_function(api):
    calls = []

    @requires_approval(
        "dataset.export",
        resource=lambda table, rows, **_: f"warehouse/{table}",
        params=lambda table, rows, **_: {"rows": rows},
    )
    def export(table, rows, grant=None):
        calls.append((table, rows, grant))
        return "exported"

    def run():
        os.environ["APPROVALBOT_URL"], os.environ["APPROVALBOT_TOKEN"] = api.base, api.agent_token
        try:
            return export("customers", 10)
        finally:
            del os.environ["APPROVALBOT_URL"], os.environ["APPROVALBOT_TOKEN"]

    decider = asyncio.create_task(approve_when_asked(api))
    result = await asyncio.to_thread(run)
    approved = await decider
    assert result == "exported"
    assert calls == [("customers", 10, approved["grant"])]
    assert approved["resource"] == "warehouse/customers" and approved["params"] == {"rows": 10}


async def test_decorator_on_async_function_raises_on_denial_and_never_runs(api):
    ran = []
    client = AsyncApprovalClient(api.base, api.agent_token)

    @requires_approval("iam.key.rotate", resource="key-1", client=client)
    async def rotate():
        ran.append(True)

    decider = asyncio.create_task(approve_when_asked(api, "deny", "not now"))
    with pytest.raises(Denied):
        await rotate()
    await decider
    assert ran == []

    decider = asyncio.create_task(approve_when_asked(api))
    async with approval("iam.key.rotate", resource="key-1", client=client) as granted:
        assert granted.status.value == "approved"
    await decider
    await client.aclose()


def test_sync_client_needs_a_token(monkeypatch):
    monkeypatch.delenv("APPROVALBOT_TOKEN", raising=False)
    with pytest.raises(ApprovalError, match="no token"):
        ApprovalClient("http://127.0.0.1:1")


async def run_cli(api, *args, token=None):
    env = {**os.environ, "APPROVALBOT_URL": api.base, "APPROVALBOT_TOKEN": token or api.agent_token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "approvalbot",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("decision, code", [("approve", 0), ("deny", 1)])
async def test_cli_request_wait_exit_codes(api, decision, code):
    decider = asyncio.create_task(approve_when_asked(api, decision, "because", within=30))
    rc, out, err = await run_cli(
        api,
        "request",
        "deploy.production",
        "--resource",
        "web",
        "--param",
        "replicas=3",
        "--param",
        "canary=true",
        "--wait",
        "--json",
    )
    decided = await decider
    assert rc == code, err
    assert f'"id":"{decided["id"]}"' in out
    assert decided["params"] == {"replicas": 3, "canary": True}


async def test_cli_exit_codes_for_cancelled_error_and_usage(api):
    rc, out, _ = await run_cli(api, "request", "x.y")
    assert rc == 0
    request_id = out.split()[0]
    rc, _, _ = await run_cli(api, "cancel", request_id)
    assert rc == 0
    rc, out, _ = await run_cli(api, "status", request_id)
    assert rc == 2 and "cancelled" in out
    rc, _, err = await run_cli(api, "request", "x.y", token="abk_agent_bogus")
    assert rc == 3 and "unauthorized" in err
    rc, _, err = await run_cli(api, "request", "x.y", "--param", "novalue")
    assert rc == 3 and "key=value" in err
    rc, _, _ = await run_cli(api, "request")
    assert rc == 3


async def test_cli_pending_approve_and_deny(api):
    _, first = await api.ask(resource="one")
    _, second = await api.ask(resource="two")
    rc, out, _ = await run_cli(api, "pending", token=api.approver_token)
    assert rc == 0 and [line.split("\t")[0] for line in out.splitlines()] == [first["id"], second["id"]]
    rc, out, _ = await run_cli(api, "approve", first["id"], "--reason", "ok", token=api.approver_token)
    assert rc == 0 and "approved" in out
    rc, _, err = await run_cli(api, "deny", second["id"], token=api.approver_token)
    assert rc == 3 and "--reason" in err
    rc, out, _ = await run_cli(api, "deny", second["id"], "--reason", "no", token=api.approver_token)
    assert rc == 0 and "denied" in out


async def test_a_mismatched_client_is_refused_before_anything_runs():
    """A sync `with` over an async client used to run its block with no approval at all."""
    ran = []
    async_client = AsyncApprovalClient("http://127.0.0.1:1", "abk_agent_x")
    with pytest.raises(TypeError, match="async with"), approval("x.y", client=async_client):
        ran.append("block")

    @requires_approval("x.y", client=async_client)
    def sync_action():
        ran.append("function")

    with pytest.raises(TypeError, match="async with"):
        sync_action()
    sync_client = ApprovalClient("http://127.0.0.1:1", "abk_agent_x")
    with pytest.raises(TypeError, match="AsyncApprovalClient"):
        async with approval("x.y", client=sync_client):
            ran.append("async block")
    assert ran == []
    sync_client.close()
    await async_client.aclose()
