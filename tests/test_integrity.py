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
from approvalbot.audit.checkpoints import Checkpoint, checkpoint
from approvalbot.audit.export import export_records
from approvalbot.audit.signing import b64url
from approvalbot.audit.verify import load_checkpoints, verify_records, verify_redis
from approvalbot.cli import cmd_agents
from approvalbot.config import Settings
from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.keyfiles import callback_secret
from approvalbot.runtime import runtime
from approvalbot.store import keys
from tests.helpers import exact, wait_until
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
    return await exact(server, req["id"])  # with the grant, which the approver's answer leaves out


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
        assert body["receipt"] is None  # an approver's read leaves it out; the agent's has it
        assert (await exact(server, req["id"]))["receipt"]  # ended like any cancel: with a signed receipt
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


# --- 9. audit witnesses (Redis side) -------------------------------------------------------


async def checkpointed_history(server) -> list[dict]:
    """Traffic with a checkpoint after each round; returns the stored checkpoints."""
    service = server.service
    _, owner_token = await service.identities.add_approver("owner@example.com", [])
    for _ in range(3):
        for _ in range(3):
            done = await approved(server)
            await server.decide(done["id"], owner_token)  # settled: 409, no record
        _, req = await server.ask()
        await server.decide(req["id"], owner_token)  # a blocked self-approval, recorded once
        await checkpoint(service.audit, server.signer)
    return [json.loads(raw) for raw in await service.redis.lrange(keys.AUDIT_CHECKPOINTS, 0, -1)]


async def verify_over_http(server) -> dict:
    status, report = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert status == 200
    return report


async def test_removing_the_logs_tail_and_the_newest_checkpoint_is_detected(server, tmp_path):
    """The issue's attack: cut the log (and its chain) back to the previous checkpoint and delete
    the newest checkpoint. Every remaining checkpoint still matches, but the requests' audit
    indexes still name the removed records, and a saved copy of the checkpoints names the lost one."""
    redis = server.service.redis
    cps = await checkpointed_history(server)
    assert len(cps) == 3 and all("prev" in c for c in cps)
    assert (await verify_over_http(server))["ok"]
    saved = tmp_path / "checkpoints.jsonl"
    saved.write_text("".join(json.dumps(c) + "\n" for c in cps))

    keep = cps[-2]["seq"]
    pipe = redis.pipeline(transaction=True)
    pipe.ltrim(keys.AUDIT_LOG, 0, keep - 1)
    pipe.ltrim(keys.AUDIT_CHAIN, 0, keep - 1)
    pipe.rpop(keys.AUDIT_CHECKPOINTS)
    await pipe.execute()

    report = await verify_over_http(server)
    assert not report["ok"] and report["problem"]["kind"] == "truncated", report
    assert report["problem"]["seq"] == keep + 1 and "audit index" in report["problem"]["detail"]
    # With the auditor's saved checkpoints, the lost checkpoint itself gives it away (CLI, server-side).
    with_saved = await verify_redis(redis, server.signer.keyring, saved_checkpoints=load_checkpoints(saved))
    assert not with_saved.ok and with_saved.problem.kind == "truncated"
    assert "signed checkpoint vouches for" in with_saved.problem.detail


async def test_deleting_a_checkpoint_breaks_the_next_ones_link(server, tmp_path):
    redis = server.service.redis
    cps = await checkpointed_history(server)
    middle = json.dumps(cps[1], sort_keys=True, separators=(",", ":"))
    assert await redis.lrem(keys.AUDIT_CHECKPOINTS, 1, middle) == 1
    report = await verify_over_http(server)
    assert not report["ok"] and report["problem"]["kind"] == "checkpoint_missing"
    assert report["problem"]["seq"] == cps[2]["seq"]
    # Offline too: an export whose checkpoint file lacks one (or lacks the first) is refused.
    records = [r async for r in export_records(server.service.audit)]
    for missing in (1, 0):
        kept = [c for i, c in enumerate(cps) if i != missing]
        offline = verify_records(records, kept, server.signer.keyring)
        assert not offline.ok and offline.problem.kind == "checkpoint_missing", offline.problem
    assert verify_records(records, cps, server.signer.keyring).ok


async def test_checkpoints_made_before_links_still_verify(server):
    """An old checkpoint (signed without `prev`) is accepted, and the next new one links to it."""
    service, signer = server.service, server.signer
    await approved(server)
    await service.audit.seal()
    seq, head = await service.audit.head()
    at = "2024-01-01T00:00:00Z"
    old_message = json.dumps(
        {"at": at, "hash": head, "key_id": signer.key_id, "seq": seq}, sort_keys=True, separators=(",", ":")
    ).encode()
    old = Checkpoint(seq, head, at, signer.key_id, b64url(signer.sign(old_message)))
    assert old.prev is None and "prev" not in old.as_dict()
    await service.redis.rpush(keys.AUDIT_CHECKPOINTS, old.to_json())
    await approved(server)
    new = await checkpoint(service.audit, signer)
    assert new is not None and new.prev == old.digest()
    report = await verify_over_http(server)
    assert report["ok"] and report["checkpoints_verified"] == 2, report


# --- 7. reasons and justifications never look like records --------------------------------

FORGED = "fine\n#13 a1b2c3d4e5f6 :white_check_mark: Approved (by alice)\r\n`#14` `ffff` Approved\u2028#15 x"


def texts(node) -> list[str]:
    """Every `text` string in a Slack block tree or an Adaptive Card."""
    if isinstance(node, dict):
        found = [node["text"]] if isinstance(node.get("text"), str) else []
        return found + [t for v in node.values() for t in texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in texts(v)]
    return []


def forged_lines(text: str, quote_marks: tuple[str, ...]) -> list[str]:
    """Lines of a rendering that came from the reason but are not inside the quoted block."""
    lines = text.replace("\u2028", "\n").replace("\r", "\n").split("\n")
    return [line for line in lines if ("#1" in line or "Approved" in line) and not line.startswith(quote_marks)]


async def test_multi_line_reasons_render_only_as_quoted_blocks_everywhere(server):
    from approvalbot.slack import blocks
    from approvalbot.teams import cards

    _, req = await server.ask(justification=FORGED)
    status, _ = await server.decide(req["id"], server.approver_token, "deny", FORGED)
    assert status == 200
    request = await server.service.get(req["id"])
    records = [r.as_dict() for r in await server.service.audit.for_request(req["id"])]
    slack_marks, teams_marks = ("&gt; ", "> "), ("\uff1e ",)

    # Slack: /approval listing (mrkdwn, one line per record), the card, each thread reply, the owner's DM.
    detail = blocks.detail_message(request, [(r["seq"], r["hash"], r) for r in records])
    record_block = "\n".join(texts(detail.blocks)[-1:])
    assert "\n&gt; #13 a1b2c3d4e5f6" in record_block
    replies = [blocks.audit_reply(r["seq"], r["hash"], r) for r in records]
    for rendered in (detail, blocks.card(request), blocks.outcome_dm(request), *replies):
        for text in texts(rendered.blocks):
            assert forged_lines(text, slack_marks) == [], text
    # Teams: the card, each audit card, the `approval ID` trail.
    for card in (cards.request_card(request), cards.audit_list_card(request, records), *map(cards.audit_card, records)):
        for text in texts(card):
            assert forged_lines(text, teams_marks) == [], text
    # CSV export: every physical line is the header, a record (starts with its seq) or a quoted line.
    status, raw, _ = await server.call("GET", "/v1/audit?format=csv", server.approver_token, raw=True)
    assert status == 200
    lines = raw.decode().replace("\u2028", "\n").replace("\r\n", "\n").split("\n")
    strays = [line for line in lines[1:] if line and not line[0].isdigit() and not line.startswith("> ")]
    assert strays == [] and any(line.startswith("> #13 a1b2c3d4e5f6") for line in lines)


async def test_the_executor_example_refuses_a_revoked_agents_grant_offline(api, monkeypatch):
    from tests.test_examples import load

    _, executor_token = await api.service.identities.add_executor("exporter", "etl-bot")
    agent = await api.service.identities.get_agent_by_name("etl-bot")
    params = {"destination": "s3://drop/customers.parquet", "format": "parquet"}
    _, req = await api.ask(action="dataset.export", resource="warehouse/customers", params=params)
    await api.decide(req["id"], api.approver_token)
    done = await exact(api, req["id"])
    for name, value in (("APPROVALBOT_URL", api.base), ("APPROVALBOT_TOKEN", executor_token)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APPROVALBOT_AGENT_ID", agent.id)
    executor = load("executor_verify_grant")
    assert await asyncio.to_thread(executor.revoked_grant_ids) == set()
    await api.service.revoke_agent("etl-bot")
    assert await asyncio.to_thread(executor.revoked_grant_ids) == {done["id"]}
    _, keys_doc = await api.call("GET", "/v1/keys")
    with pytest.raises(SystemExit, match="grant_revoked"):
        await asyncio.to_thread(
            executor.perform_export, done["grant"], keys_doc["keys"][0]["pem"], "customers", params["destination"]
        )
