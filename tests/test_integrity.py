"""Issue 12, integrity: revocation cascades, finite numbers, settled requests and repeated self-approvals.

Every test goes over real HTTP to the real app, against the session's real Valkey/Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import stat
import time
from pathlib import Path

import pytest

from approvalbot.audit import grants
from approvalbot.cli import cmd_agents
from approvalbot.config import Settings
from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.keyfiles import callback_secret
from approvalbot.runtime import runtime
from approvalbot.store import keys
from tests.helpers import wait_until
from tests.memory_channel import BOARD
from tests.test_channel_interface import run_jobs, with_memory_channel  # noqa: F401  (fixture)

pytest_plugins = ["tests.audit_support"]  # the signer and server fixtures


async def records_of(server, request_id: str) -> list[dict]:
    return [r.as_dict() for r in await server.service.audit.for_request(request_id)]


async def approved(server, token: str | None = None, **body) -> dict:
    status, req = await server.ask(token, **{"action": "dataset.export", "params": {"rows": 5}, **body})
    assert status == 201, req
    status, done = await server.decide(req["id"], server.approver_token, "approve")
    assert (status, done["status"]) == (200, "approved"), done
    return done


def revoke_with_cli(rt, name: str) -> int:
    """The real `approvalbot agents revoke NAME` command body (it runs its own event loop)."""
    return cmd_agents(rt, argparse.Namespace(action="revoke", name=name))


# --- 6. revocation cascades --------------------------------------------------------------


async def test_revoking_an_agent_cancels_its_pending_requests_audited_and_revokes_its_grants(server, rt):
    service = server.service
    other, other_token = await service.identities.add_agent("other-bot", "owner2@example.com")
    executor, executor_token = await service.identities.add_executor("runner", "etl-bot")
    done = await approved(server)
    pending = [(await server.ask(action="dataset.export", resource=f"r{i}"))[1] for i in range(3)]
    _, theirs = await server.ask(other_token, action="dataset.export")

    assert await asyncio.to_thread(revoke_with_cli, rt, "etl-bot") == 0

    for req in pending:
        status, body = await server.call("GET", f"/v1/requests/{req['id']}", server.approver_token)
        assert (status, body["status"], body["outcome_reason"]) == (200, "cancelled", "agent revoked")
        assert body["receipt"]  # ended like any cancel: with a signed receipt
        final = (await records_of(server, req["id"]))[-1]
        assert final["type"] == "request.cancelled" and final["reason"] == "agent revoked"
        assert final["actor"]["kind"] == "system" and final["actor"]["id"] == "admin"
    # Another agent's request is untouched; the revoked agent's token is dead.
    _, body = await server.call("GET", f"/v1/requests/{theirs['id']}", other_token)
    assert body["status"] == "pending"
    assert (await server.ask())[0] == 401

    # Its unexpired grant can no longer be used, even by an executor bound to it ...
    status, body = await server.consume(done["grant"], executor_token)
    assert (status, body["error"]["code"]) == (409, "grant_revoked"), body
    assert [r["type"] for r in await records_of(server, done["id"])].count("grant.consumed") == 0
    # ... and executors that verify offline find it on the revoked list (any valid token reads it).
    for token in (executor_token, server.approver_token, other_token):
        status, listed = await server.call("GET", "/v1/grants/revoked", token)
        assert status == 200
        claims = json.loads(json.dumps(grants.verify_grant(done["grant"], server.signer.keyring)))
        assert {"jti": done["id"], "exp": claims["exp"]} in listed["revoked"]
    assert (await server.call("GET", "/v1/grants/revoked"))[0] == 401
    assert executor.agent_id != other.id


async def test_a_revoked_agents_grant_approved_during_the_cascade_is_still_refused(server):
    """The consume check also asks whether the grant's agent is revoked, so a grant that was not yet
    indexed when the cascade ran is refused too."""
    done = await approved(server)
    _, executor_token = await server.service.identities.add_executor("runner", "etl-bot")
    await server.service.identities.revoke_agent("etl-bot")  # tokens and flag only, no cascade
    status, body = await server.consume(done["grant"], executor_token)
    assert (status, body["error"]["code"]) == (409, "grant_revoked")


async def test_revocation_lists_only_unexpired_grants_and_repeating_it_completes_it(server):
    service = server.service
    done = await approved(server)
    # An expired grant of the same agent (index entry older than now) is not listed.
    await service.redis.zadd(keys.agent_grants(done["agent_id"]), {"req_old": time.time() - 60})
    first = await service.revoke_agent("etl-bot")
    again = await service.revoke_agent("etl-bot")  # idempotent: nothing left to cancel, same grants
    assert first.grants == again.grants == [done["id"]] and again.cancelled == []
    listed = await grants.revoked_grants(service.redis)
    assert [g["jti"] for g in listed] == [done["id"]]


async def test_revocation_updates_the_card_through_the_normal_outbox(with_memory_channel, server, rt):  # noqa: F811
    service = server.service
    _, req = await server.ask(action="dataset.export")
    await run_jobs(service.redis, rt)
    assert [p["card"]["request_id"] for p in BOARD.posts] == [req["id"]]
    await service.revoke_agent("etl-bot")
    await run_jobs(service.redis, rt)
    assert BOARD.updates and BOARD.updates[-1]["card"]["status"] == "cancelled"
    assert BOARD.replies[-1]["type"] == "request.cancelled"


# --- 7. input: finite numbers ------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
async def test_non_finite_numbers_anywhere_in_a_body_are_refused_with_422(server, literal):
    before = await server.service.redis.llen(keys.AUDIT_LOG)
    bodies = [
        f'{{"action": "dataset.export", "params": {{"rows": {literal}}}}}',
        f'{{"action": "dataset.export", "params": {{"a": [1, {{"b": {literal}}}]}}}}',
    ]
    for raw in bodies:
        status, body = await server.call(
            "POST", "/v1/requests", server.agent_token, data=raw, headers={"Content-Type": "application/json"}
        )
        assert (status, body["error"]["code"]) == (422, "non_finite_number"), body
        assert "finite" in body["error"]["message"]
    assert await server.service.redis.llen(keys.AUDIT_LOG) == before  # nothing was created
    done = await approved(server)
    raw = json.dumps({"grant": done["grant"], "params": {"rows": math.inf}})  # Python writes Infinity
    status, body = await server.call(
        "POST", "/v1/grants/consume", server.agent_token, data=raw, headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]["code"]) == (422, "non_finite_number")


def test_nan_never_reaches_the_policys_order_conditions():
    policy = Policy.from_yaml(
        """
rules:
  - name: small
    match: {action: "pay", params: [{param: amount, op: "<", value: 100}]}
    effect: allow
  - name: rest
    match: {action: "*"}
    effect: require_approval
    approvers: ["*"]
"""
    )
    with pytest.raises(ValueError, match="finite"):
        RequestCreate.model_validate({"action": "pay", "params": {"amount": -math.inf}})
    with pytest.raises(ValueError, match="finite"):
        RequestCreate.model_validate_json('{"action": "pay", "params": {"amount": NaN}}')
    # Even handed one directly, the policy never treats a non-finite value as a number.
    for value in (-math.inf, math.nan, math.inf):
        assert policy.evaluate("pay", None, "bot", {"amount": value}).rule == "rest"
    assert policy.evaluate("pay", None, "bot", {"amount": 5}).rule == "small"


# --- 7. decisions on settled requests, repeated self-approvals ----------------------------


async def test_a_decision_on_a_settled_request_is_409_before_any_identity_check_and_unaudited(server):
    service = server.service
    await service.identities.add_approver("owner@example.com", [])  # the agent's owner is also an approver
    _, owner_token = await service.identities.add_approver("owner@example.com", [])
    _, outsider_token = await service.identities.add_approver("eve@example.com", ["nobody"])
    _, req = await server.ask(action="dataset.export")
    status, _ = await server.call("POST", f"/v1/requests/{req['id']}/cancel", server.agent_token)
    assert status == 200
    before = await service.redis.llen(keys.AUDIT_LOG)
    for token in (owner_token, outsider_token, server.approver_token):
        for _ in range(5):
            status, body = await server.decide(req["id"], token, "deny", "x" * 3900)
            assert (status, body["error"]["code"]) == (409, "not_pending"), body
    assert await service.redis.llen(keys.AUDIT_LOG) == before  # no record, no thread reply


async def test_repeated_blocked_self_approvals_are_recorded_once_with_a_count(server):
    service = server.service
    _, owner_token = await service.identities.add_approver("owner@example.com", [])
    _, req = await server.ask(action="dataset.export")
    results = await asyncio.gather(*(server.decide(req["id"], owner_token, "approve", "me") for _ in range(30)))
    assert {(s, b["error"]["code"]) for s, b in results} == {(403, "self_approval")}
    blocked = [r for r in await records_of(server, req["id"]) if r["type"] == "self_approval.blocked"]
    assert len(blocked) == 1
    _, body = await server.call("GET", f"/v1/requests/{req['id']}", server.agent_token)
    person = blocked[0]["actor"]["person_id"]
    assert body["self_approval_attempts"] == {person: 30}
    # The final record carries the counts, so the audit export shows them too.
    await server.decide(req["id"], server.approver_token, "deny", "no")
    final = (await records_of(server, req["id"]))[-1]
    assert final["type"] == "request.denied" and final["data"]["self_approval_attempts"] == {person: 30}


# --- 8. files ------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if path.is_dir() or path.is_file():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_the_data_folder_is_private_whatever_existed_before(tmp_path):
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    for path, mode in ((data, 0o755), (data / "appendonlydir", 0o755)):
        path.chmod(mode)
    for name in ("appendonlydir/approvalbot.aof.1.incr.aof", "signing_key.pem", "notes.txt", ".secrets.lock"):
        (data / name).write_bytes(b"")
        (data / name).chmod(0o644)
    (data / "signing_key.pem").unlink()  # generated below, by the runtime
    settings = Settings(REDIS_URL=None, APPROVALBOT_DATA_DIR=data)
    with runtime(settings, need_policy=False) as rt:  # starts the embedded Valkey on this folder
        assert rt.embedded is not None
        client = rt.sync_redis()
        try:
            client.set("ab:probe", "x")
            client.execute_command("BGREWRITEAOF")  # the server's own new files must be private too
            wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, what="AOF rewrite")
        finally:
            client.close()
        callback_secret(settings)
        found = modes(data)
    assert found["."] == 0o700
    assert {"signing_key.pem", "callback_secret", "notes.txt", "valkey.conf", "valkey.log"} <= set(found)
    assert any(name.startswith("appendonlydir/") and name.endswith(".aof") for name in found)
    wrong = {name: oct(mode) for name, mode in found.items() if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert wrong == {}
