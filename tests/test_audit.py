"""The tamper-evident audit trail: chain, signed checkpoints, verification, export, HTTP and CLI.

Histories are built through the real service on a real Redis; tampering is done
to exported records (offline verifier) and to the Redis lists themselves
(server-side verifier), and every single change must be caught at the right seq.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as sync_redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from approvalbot.audit import grants
from approvalbot.audit.checkpoints import (
    Checkpoint,
    checkpoint,
    maybe_checkpoint,
    read_checkpoints,
)
from approvalbot.audit.export import CSV_COLUMNS, export_records
from approvalbot.audit.signing import Signer, load_signer
from approvalbot.audit.verify import verify_file, verify_records, verify_redis
from approvalbot.cli.audit import main as audit_main
from approvalbot.config import Settings
from approvalbot.core.chain import GENESIS, canonical, link
from approvalbot.core.machine import Refused
from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.service import ApprovalService, human_actor
from approvalbot.store import keys

pytest_plugins = ["tests.audit_support"]  # the signer and server fixtures

SRC = Path(__file__).resolve().parents[1] / "src"


# --- helpers ------------------------------------------------------------------


async def build_history(service: ApprovalService, signer: Signer, n: int = 30, every: int = 10) -> list[str]:
    """A varied history through the real service: approvals, denials, cancels, blocked
    self-approvals, expiries; a signed checkpoint every `every` requests and at the end."""
    ids = service.identities
    agent, _ = await ids.add_agent("etl-bot", "owner@example.com")
    alice, _ = await ids.add_approver("alice@example.com", ["security"])
    bob, _ = await ids.add_approver("bob@example.com", ["security"])
    owner, _ = await ids.add_approver("owner@example.com", ["security"])
    made = []
    for i in range(n):
        body = RequestCreate(
            action="dataset.export",
            resource=f"s3://bucket/{i}",
            params={"rows": i, "note": "ünïcode ✓"},
            justification=f"run {i}",
        )
        req, _ = await service.create(agent, body)
        made.append(req.id)
        kind = i % 5
        if kind == 0:
            await service.decide(req.id, human_actor(alice), alice, "approve", None)
        elif kind == 1:
            await service.decide(req.id, human_actor(bob), bob, "deny", "not today")
        elif kind == 2:
            await service.cancel(req.id, agent)
        elif kind == 3:
            with pytest.raises(Refused):
                await service.decide(req.id, human_actor(owner), owner, "approve", "mine")
            await service.decide(req.id, human_actor(bob), bob, "approve", "ok")
        else:
            real = service.clock
            service.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
            await service.expire(req.id)
            service.clock = real
        if (i + 1) % every == 0:
            await checkpoint(service.audit, signer)
    await checkpoint(service.audit, signer)
    return made


async def _exported(redis_url: str, data_dir: Path, n: int = 30):
    redis = Redis.from_url(redis_url)
    try:
        service = ApprovalService(redis, Policy.default())
        signer = load_signer(Settings(APPROVALBOT_DATA_DIR=data_dir))
        grants.install(service, signer)
        await build_history(service, signer, n)
        records = [r async for r in export_records(service.audit)]
        cps = [c.as_dict() for c in await read_checkpoints(redis)]
        return records, cps, signer
    finally:
        await redis.aclose()


def rehash(records: list[dict], start: int = 0) -> None:
    """What a careful forger does: recompute hash and prev_hash from `start` on."""
    prev = records[start - 1]["hash"] if start else GENESIS
    for i in range(start, len(records)):
        body = {k: v for k, v in records[i].items() if k not in ("seq", "hash", "prev_hash")}
        records[i]["seq"] = i + 1
        records[i]["prev_hash"] = prev
        records[i]["hash"] = prev = link(prev, i + 1, canonical(body))


def alter(record: dict, field: str) -> None:
    """Change one body field to a different value."""
    if field == "actor":
        record["actor"] = {**record["actor"], "email": "mallory@evil.example"}
    elif field == "data":
        record["data"] = {**record.get("data", {}), "status": "approved", "forged": True}
    else:
        record[field] = "tampered" if record.get(field) != "tampered" else "tampered again"


BODY_FIELDS = ["type", "at", "request_id", "action", "resource", "actor", "reason", "policy", "data"]


# --- the chain itself ---------------------------------------------------------


async def test_history_verifies_offline_and_server_side(redis, settings, signer):
    service = ApprovalService(redis, Policy.default())
    grants.install(service, signer)
    await build_history(service, signer, 20)
    assert await service.audit.length() == await service.audit.sealed()
    records = [r async for r in export_records(service.audit)]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    cps = await read_checkpoints(redis)
    assert [c.seq for c in cps] == sorted({c.seq for c in cps}) and len(cps) == 2
    offline = verify_records(records, [c.as_dict() for c in cps], signer.public_pem())
    assert offline.ok, offline.problem
    assert (offline.count, offline.checkpoints_verified, offline.attested_seq) == (len(records), 2, len(records))
    online = await verify_redis(redis, signer.keyring)
    assert online.ok and online.as_dict()["head"] == offline.as_dict()["head"]
    types = {r["type"] for r in records}
    assert {
        "request.created",
        "request.approved",
        "request.denied",
        "request.cancelled",
        "request.expired",
        "self_approval.blocked",
        "approval.recorded",
    } <= types


async def test_checkpoint_skips_an_unchanged_head_and_concurrent_checkpointers_agree(redis, signer):
    service = ApprovalService(redis, Policy.default())
    assert await checkpoint(service.audit, signer) is None  # empty log: nothing to vouch for
    agent, _ = await service.identities.add_agent("bot", "o@example.com")
    await service.create(agent, RequestCreate(action="x.y"))
    first = await checkpoint(service.audit, signer)
    # seq 1 is the owner's person.added record
    assert first is not None and first.seq == 2 and first.key_id == signer.key_id
    assert await checkpoint(service.audit, signer) is None
    for _ in range(5):
        await service.create(agent, RequestCreate(action="x.y"))
    made = await asyncio.gather(
        *(checkpoint(ApprovalService(redis, Policy.default()).audit, signer) for _ in range(10))
    )
    assert sum(m is not None for m in made) == 1
    stored = await read_checkpoints(redis)
    assert [c.seq for c in stored] == [2, 7]
    assert stored[1].signature_problem(signer.keyring) is None


async def test_maybe_checkpoint_waits_for_the_interval(redis, signer):
    service = ApprovalService(redis, Policy.default())
    agent, _ = await service.identities.add_agent("bot", "o@example.com")
    await service.create(agent, RequestCreate(action="x.y"))
    t0 = datetime.now(UTC)
    assert (await maybe_checkpoint(service.audit, signer, 300, t0)) is not None
    await service.create(agent, RequestCreate(action="x.y"))
    assert await maybe_checkpoint(service.audit, signer, 300, t0 + timedelta(seconds=299)) is None
    late = await maybe_checkpoint(service.audit, signer, 300, t0 + timedelta(seconds=301))
    assert late is not None and late.seq == 3  # after the owner's person.added
    assert await maybe_checkpoint(service.audit, signer, 300, t0 + timedelta(seconds=900)) is None  # unchanged


def test_checkpoint_interval_setting():
    assert Settings().checkpoint_seconds == 300
    assert Settings(APPROVALBOT_CHECKPOINT_SECONDS=60).checkpoint_seconds == 60


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@hsettings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), JSON, max_size=6))
def test_the_verifiers_fast_serialiser_is_canonical(body):
    from approvalbot.audit.verify import _canonical

    assert _canonical(body).encode() == canonical(body)
    assert canonical(json.loads(canonical(body))) == canonical(body)  # exports round-trip


# --- property: every single tampering of an export is caught at the right seq --


def test_offline_verifier_catches_every_single_tampering(redis_url, tmp_path):
    records, cps, signer = asyncio.run(_exported(redis_url, tmp_path / "data"))
    n = len(records)
    pem = signer.public_pem()
    cp_seqs = sorted(c["seq"] for c in cps)
    assert cp_seqs[-1] == n
    assert verify_records(records, cps, pem).ok

    @hsettings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def tampered(data):
        forged = copy.deepcopy(records)
        op = data.draw(
            st.sampled_from(["modify", "delete", "insert", "insert_rehashed", "swap", "truncate", "rewrite", "seq"])
        )
        i = data.draw(st.integers(0, n - 1), label="i")
        kinds = None
        if op == "modify":
            alter(forged[i], data.draw(st.sampled_from(BODY_FIELDS)))
            seq, kinds = i + 1, {"changed"}
        elif op == "delete":
            del forged[i]
            seq, kinds = i + 1, {"missing"} if i < n - 1 else {"truncated"}
        elif op in ("insert", "insert_rehashed"):
            fake = copy.deepcopy(records[i])
            alter(fake, "reason")
            if op == "insert_rehashed":  # a forger who knows the algorithm links the fake in properly
                body = {k: v for k, v in fake.items() if k not in ("seq", "hash", "prev_hash")}
                fake["hash"] = link(fake["prev_hash"], i + 1, canonical(body))
            forged.insert(i, fake)
            seq, kinds = i + 1, {"inserted"}
        elif op == "swap":
            j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
            i, j = min(i, j), max(i, j)
            forged[i], forged[j] = forged[j], forged[i]
            seq, kinds = i + 1, {"reordered"}
        elif op == "truncate":
            forged = forged[:i]
            seq, kinds = i + 1, {"truncated"}
        elif op == "seq":  # renumbering one record
            forged[i]["seq"] = data.draw(st.integers(-3, n + 3).filter(lambda s: s != i + 1))
            seq = i + 1
        else:  # rewrite: change a record and recompute the whole chain after it
            alter(forged[i], data.draw(st.sampled_from(BODY_FIELDS)))
            rehash(forged, i)
            seq, kinds = next(s for s in cp_seqs if s >= i + 1), {"changed"}
        report = verify_records(forged, cps, pem)
        assert not report.ok, (op, i)
        assert report.problem.seq == seq, (op, i, report.problem)
        if kinds:
            assert report.problem.kind in kinds, (op, i, report.problem)

    tampered()


def test_offline_untouched_prefixes_always_verify(redis_url, tmp_path):
    records, cps, signer = asyncio.run(_exported(redis_url, tmp_path / "data", n=15))

    @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(records)))
    def prefix(k):
        usable = [c for c in cps if c["seq"] <= k]
        report = verify_records(records[:k], usable, signer.public_key)
        assert report.ok and report.count == k
        assert report.attested_seq == max([c["seq"] for c in usable], default=0)

    prefix()


def test_checkpoint_forgery_is_a_signature_problem(redis_url, tmp_path):
    records, cps, signer = asyncio.run(_exported(redis_url, tmp_path / "data", n=10))
    pem = signer.public_pem()
    moved = copy.deepcopy(cps)
    moved[0]["seq"] -= 1  # claim a shorter log without re-signing
    r = verify_records(records, moved, pem)
    assert (r.ok, r.problem.kind, r.problem.seq) == (False, "signature", cps[0]["seq"] - 1)
    other = Signer(Ed25519PrivateKey.generate())
    resigned = Checkpoint.make(cps[-1]["seq"], cps[-1]["hash"], other).as_dict()
    r = verify_records(records, [resigned], pem)
    assert r.problem.kind == "signature" and "not among the trusted" in r.problem.detail
    same_kid = {**resigned, "key_id": signer.key_id}
    r = verify_records(records, [same_kid], pem)
    assert r.problem.kind == "signature"
    r = verify_records(records, [{"seq": "x"}], pem)
    assert r.problem.kind == "malformed"
    # Without checkpoints the chain still verifies, but nothing is attested.
    r = verify_records(records, [], None)
    assert r.ok and r.attested_seq == 0 and r.checkpoints_verified == 0


def test_malformed_lines_are_reported(redis_url, tmp_path):
    records, _, _ = asyncio.run(_exported(redis_url, tmp_path / "data", n=5))
    lines = [canonical(r) for r in records]
    lines[3] = b"{not json"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    r = verify_file(path, None, None)
    assert (r.problem.seq, r.problem.kind, r.count) == (4, "malformed", len(records))
    r = verify_records([{**records[0], "hash": 5}], [], None)
    assert r.problem.kind == "malformed"


# --- property: tampering with the Redis lists directly ------------------------


def test_server_side_verifier_catches_tampering_in_redis(redis_url, tmp_path):
    _, _, signer = asyncio.run(_exported(redis_url, tmp_path / "data", n=25))
    client = sync_redis.Redis.from_url(redis_url)
    log = client.lrange(keys.AUDIT_LOG, 0, -1)
    chain = client.lrange(keys.AUDIT_CHAIN, 0, -1)
    cps = [json.loads(c) for c in client.lrange(keys.AUDIT_CHECKPOINTS, 0, -1)]
    cp_seqs = sorted(c["seq"] for c in cps)
    n = len(log)
    assert len(chain) == n and cp_seqs[-1] == n

    def put(new_log, new_chain):
        pipe = client.pipeline(transaction=True)
        pipe.delete(keys.AUDIT_LOG, keys.AUDIT_CHAIN)
        if new_log:
            pipe.rpush(keys.AUDIT_LOG, *new_log)
        if new_chain:
            pipe.rpush(keys.AUDIT_CHAIN, *new_chain)
        pipe.execute()

    async def run_verify():
        redis = Redis.from_url(redis_url)
        try:
            return await verify_redis(redis, signer.keyring, batch=7)  # small batches cross boundaries
        finally:
            await redis.aclose()

    assert asyncio.run(run_verify()).ok

    def changed_body(raw: bytes, field: str) -> bytes:
        record = json.loads(raw)
        alter(record, field)
        return canonical(record)

    @hsettings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def tampered(data):
        new_log, new_chain = list(log), list(chain)
        op = data.draw(
            st.sampled_from(
                [
                    "modify",
                    "modify_hash",
                    "delete_log",
                    "delete_both",
                    "insert_log",
                    "insert_both",
                    "insert_both_linked",
                    "swap_log",
                    "swap_both",
                    "truncate_both",
                    "truncate_log",
                    "rewrite",
                ]
            )
        )
        i = data.draw(st.integers(0, n - 1), label="i")
        if op == "modify":
            new_log[i] = changed_body(log[i], data.draw(st.sampled_from(BODY_FIELDS)))
            expected = (i + 1, {"changed"})
        elif op == "modify_hash":
            new_chain[i] = link(GENESIS, 0, b"bogus").encode()
            expected = (i + 1, {"changed"})
        elif op == "delete_log":
            del new_log[i]
            expected = (i + 1, {"missing"} if i < n - 1 else {"truncated"})
        elif op == "delete_both":
            del new_log[i], new_chain[i]
            expected = (i + 1, {"missing"} if i < n - 1 else {"truncated"})
        elif op == "insert_log":
            new_log.insert(i, changed_body(log[i], "reason"))
            expected = (i + 1, {"inserted"})
        elif op in ("insert_both", "insert_both_linked"):
            fake = changed_body(log[i], "reason")
            prev = chain[i - 1].decode() if i else GENESIS
            fake_hash = link(prev, i + 1, fake) if op == "insert_both_linked" else link(GENESIS, 0, fake)
            new_log.insert(i, fake)
            new_chain.insert(i, fake_hash.encode())
            expected = (i + 1, {"inserted"})
        elif op in ("swap_log", "swap_both"):
            j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
            i, j = min(i, j), max(i, j)
            new_log[i], new_log[j] = new_log[j], new_log[i]
            if op == "swap_both":
                new_chain[i], new_chain[j] = new_chain[j], new_chain[i]
            expected = (i + 1, {"reordered"})
        elif op == "truncate_both":
            new_log, new_chain = new_log[:i], new_chain[:i]
            expected = (i + 1, {"truncated"})
        elif op == "truncate_log":
            new_log = new_log[:i]
            expected = (i + 1, {"truncated"})
        else:  # rewrite a record and re-seal everything after it: only a checkpoint can tell
            new_log[i] = changed_body(log[i], data.draw(st.sampled_from(BODY_FIELDS)))
            prev = chain[i - 1].decode() if i else GENESIS
            for k in range(i, n):
                prev = link(prev, k + 1, new_log[k])
                new_chain[k] = prev.encode()
            expected = (next(s for s in cp_seqs if s >= i + 1), {"changed"})
        put(new_log, new_chain)
        try:
            report = asyncio.run(run_verify())
        finally:
            put(log, chain)
        assert not report.ok, (op, i)
        assert (report.problem.seq, report.problem.kind in expected[1]) == (expected[0], True), (op, i, report.problem)

    tampered()
    assert asyncio.run(run_verify()).ok
    client.close()


async def test_unsealed_records_are_counted_not_failed(redis, signer):
    service = ApprovalService(redis, Policy.default())
    agent, _ = await service.identities.add_agent("bot", "o@example.com")
    await service.create(agent, RequestCreate(action="x.y"))
    await redis.rpush(keys.AUDIT_LOG, b'{"type":"request.created"}')  # appended, not sealed yet
    report = await verify_redis(redis, signer.keyring)
    assert report.ok and report.unsealed == 1 and report.count == 3 and report.head_seq == 2


# --- atomicity under concurrency ----------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from redis.asyncio import Redis
    from approvalbot.audit import grants
    from approvalbot.audit.signing import load_signer
    from approvalbot.config import Settings
    from approvalbot.core.policy import Policy
    sys.path.insert(0, os.environ["ROOT_DIR"])
    from tests.test_audit import race

    async def main():
        redis = Redis.from_url(os.environ["REDIS_URL"], max_connections=200)
        await redis.incr("test:ready")
        while not await redis.exists("test:go"):
            await asyncio.sleep(0.005)
        signer = load_signer(Settings(APPROVALBOT_DATA_DIR=Path(os.environ["DATA_DIR"])))
        await race(redis, signer, int(sys.argv[1]), int(sys.argv[2]))
        await redis.aclose()

    asyncio.run(main())
    """
)


async def race(redis, signer, requests: int, tasks: int) -> None:
    """`requests` requests, `tasks` at a time; each gets two approvers and its agent racing to finish it."""
    from approvalbot.service import ApprovalService as Service

    service = Service(redis, Policy.default())
    grants.install(service, signer)
    ids = service.identities
    agent = await ids.get_agent_by_name("race-bot")
    deciders = [await ids.get_approver(f"r{k}@example.com") for k in range(3)]
    gate = asyncio.Semaphore(tasks)

    async def one(i: int) -> None:
        async with gate:
            req, _ = await service.create(agent, RequestCreate(action="deploy.run", params={"i": i}))
            a, b = deciders[i % 3], deciders[(i + 1) % 3]
            attempts = [
                service.decide(req.id, human_actor(a), a, "approve", None),
                service.decide(req.id, human_actor(b), b, "deny", "race"),
                service.cancel(req.id, agent),
            ]
            await asyncio.gather(*attempts, return_exceptions=True)

    await asyncio.gather(*(one(i) for i in range(requests)))


async def test_racing_writers_in_two_processes_and_many_tasks_keep_the_log_whole(redis, redis_url, settings, signer):
    ids = ApprovalService(redis, Policy.default()).identities
    await ids.add_agent("race-bot", "owner@example.com")
    for k in range(3):
        await ids.add_approver(f"r{k}@example.com", [])
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(settings.data_dir),
        "ROOT_DIR": str(SRC.parent),
        "PYTHONPATH": str(SRC),
    }
    per_process, procs = 300, []
    for _ in range(2):
        procs.append(
            await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER, str(per_process), "40", env=env)
        )
    for _ in range(600):
        if int(await redis.get("test:ready") or 0) == len(procs):
            break
        await asyncio.sleep(0.05)
    await redis.set("test:go", 1)
    await race(redis, signer, per_process, 40)
    codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    assert codes == [0, 0]

    audit = ApprovalService(redis, Policy.default()).audit
    await audit.seal()
    length = await audit.length()
    assert length == await audit.sealed()
    request_ids = [k.decode().removeprefix("ab:req:") for k in await redis.keys("ab:req:*")]
    assert len(request_ids) == 3 * per_process
    seqs: list[int] = []
    for rid in request_ids:
        mine = [int(s) for s in await redis.lrange(keys.request_audit(rid), 0, -1)]
        seqs += mine
        types = [json.loads(await redis.lindex(keys.AUDIT_LOG, s - 1))["type"] for s in mine]
        assert types[0] == "request.created"
        final = [t for t in types if t in ("request.approved", "request.denied", "request.cancelled")]
        assert len(final) == 1, (rid, types)
    assert len(seqs) == len(set(seqs))  # no duplicates
    others = sorted(set(range(1, length + 1)) - set(seqs))  # no gaps: the rest are the owners' person records
    other_types = {json.loads(await redis.lindex(keys.AUDIT_LOG, s - 1))["type"] for s in others}
    assert other_types <= {"person.added"}
    report = await verify_redis(redis, signer.keyring)
    assert report.ok and report.count == length
    # Every process found or made the same signing key: all grants verify with one public key.
    docs = [await ApprovalService(redis, Policy.default()).get(rid) for rid in request_ids]
    for doc in docs:
        if doc.grant:
            grants.verify_grant(doc.grant, signer.public_key)
        else:
            assert grants.verify_receipt(doc.receipt, signer.public_key)["status"] == doc.status.value


# --- export, HTTP and CLI -----------------------------------------------------


async def _some_traffic(server, n: int = 6) -> list[str]:
    ids = []
    for i in range(n):
        status, req = await server.call(
            "POST",
            "/v1/requests",
            server.agent_token,
            json={
                "action": "dataset.export",
                "resource": f"r{i}",
                "justification": "=cmd|' /C calc'!A0" if i == 0 else None,
            },
        )
        assert status == 201
        ids.append(req["id"])
        decision = {"decision": "approve"} if i % 2 else {"decision": "deny", "reason": "@SUM(1+1)"}
        status, _ = await server.call(
            "POST", f"/v1/requests/{req['id']}/decisions", server.approver_token, json=decision
        )
        assert status == 200
    return ids


async def test_http_export_round_trips_into_offline_cli_verify(server, tmp_path):
    await _some_traffic(server)
    await checkpoint(server.service.audit, server.signer)
    status, keys_doc = await server.call("GET", "/v1/keys")  # public: no token
    assert status == 200
    (key,) = keys_doc["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["kid"] == server.signer.key_id
    status, cps = await server.call("GET", "/v1/audit/checkpoints", server.approver_token)
    assert status == 200 and len(cps["checkpoints"]) == 1
    await _some_traffic(server, 2)  # more records after the checkpoint: still verifies
    status, body, headers = await server.call("GET", "/v1/audit?format=jsonl", server.approver_token, raw=True)
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    lines = body.splitlines()
    assert int(headers["X-Audit-Seq"]) == len(lines) == 22  # 2 person.added (fixture) + 20
    assert all(canonical(json.loads(line)) == line for line in lines)  # canonical, so it round-trips

    export, cp_file = tmp_path / "audit.jsonl", tmp_path / "cps.json"
    export.write_bytes(body)
    cp_file.write_text(json.dumps(cps))
    jwks, pem = tmp_path / "keys.json", tmp_path / "key.pem"
    jwks.write_text(json.dumps(keys_doc))
    pem.write_text(key["pem"])
    for key_file in (jwks, pem):
        assert (
            audit_main(
                ["audit", "verify", "--file", str(export), "--checkpoints", str(cp_file), "--public-key", str(key_file)]
            )
            == 0
        )

    # In a separate process with no Redis anywhere: offline means offline.
    env = {
        **os.environ,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "PYTHONPATH": str(SRC),
        "APPROVALBOT_DATA_DIR": str(tmp_path / "nowhere"),
    }
    command = [
        sys.executable,
        "-m",
        "approvalbot.cli.audit",
        "audit",
        "verify",
        "--file",
        str(export),
        "--checkpoints",
        str(cp_file),
        "--public-key",
        str(pem),
    ]

    def offline_verify():
        return asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    done = await offline_verify()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["checkpoints_verified"] == 1 and report["count"] == 22
    assert "not yet covered" in done.stderr

    tampered = [json.loads(line) for line in lines]
    tampered[4]["actor"]["email"] = "mallory@evil.example"
    export.write_bytes(b"".join(canonical(r) + b"\n" for r in tampered))
    done = await offline_verify()
    assert done.returncode == 1
    assert json.loads(done.stdout)["problem"] == {
        "seq": 5,
        "kind": "changed",
        "detail": "the record's content does not match its recorded hash",
    }
    assert "FAILED at seq 5" in done.stderr


async def test_csv_export_and_filters(server):
    ids = await _some_traffic(server)
    status, body, headers = await server.call("GET", "/v1/audit?format=csv", server.approver_token, raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == CSV_COLUMNS
    assert rows[0] == [
        "seq",
        "at",
        "type",
        "request_id",
        "action",
        "resource",
        "actor_kind",
        "actor_id",
        "actor_email",
        "actor_channel",
        "reason",
        "policy",
        "hash",
    ]
    assert len(rows) == 1 + 2 + 3 * 3 + 3 * 2  # header, the fixture's person.added records, traffic
    assert [r[2] for r in rows[1:3]] == ["person.added", "person.added"]
    first = dict(zip(rows[0], rows[3], strict=True))
    assert (first["seq"], first["type"], first["request_id"], first["actor_kind"]) == (
        "3",
        "request.created",
        ids[0],
        "agent",
    )
    assert first["reason"].startswith("'=")  # a formula is never live in a spreadsheet
    denied = dict(zip(rows[0], rows[4], strict=True))
    assert denied["type"] == "request.denied" and denied["reason"] == "'@SUM(1+1)"
    assert denied["actor_email"] == "alice@example.com" and denied["actor_channel"] == "api"
    assert len(denied["hash"]) == 64

    status, body, _ = await server.call("GET", f"/v1/audit?request_id={ids[1]}", server.approver_token, raw=True)
    mine = [json.loads(line) for line in body.splitlines()]
    assert [r["type"] for r in mine] == ["request.created", "approval.recorded", "request.approved"]
    assert {r["request_id"] for r in mine} == {ids[1]}

    _, all_body, _ = await server.call("GET", "/v1/audit", server.approver_token, raw=True)
    everything = [json.loads(line) for line in all_body.splitlines()]
    k = next(k for k in range(5, len(everything)) if everything[k]["at"] > everything[k - 1]["at"])
    cut = everything[k]["at"]
    status, body, _ = await server.call("GET", "/v1/audit", server.approver_token, raw=True, params={"since": cut})
    assert [json.loads(x)["seq"] for x in body.splitlines()] == [r["seq"] for r in everything[k:]]
    status, body, _ = await server.call("GET", "/v1/audit", server.approver_token, raw=True, params={"until": cut})
    assert [json.loads(x)["seq"] for x in body.splitlines()] == [r["seq"] for r in everything[:k]]
    status, err = await server.call("GET", "/v1/audit?format=xml", server.approver_token)
    assert (status, err["error"]["code"]) == (422, "invalid_query")
    status, err = await server.call("GET", "/v1/audit?since=yesterday", server.approver_token)
    assert status == 422


async def test_audit_endpoints_need_an_approver_token(server):
    for path in ("/v1/audit", "/v1/audit/checkpoints", "/v1/audit/verify"):
        status, err = await server.call("GET", path)
        assert (status, err["error"]["code"]) == (401, "unauthorized")
        status, err = await server.call("GET", path, server.agent_token)
        assert (status, err["error"]["code"]) == (403, "forbidden")


async def test_verify_endpoint_reports_tampering_with_200(server, redis):
    await _some_traffic(server, 3)
    await checkpoint(server.service.audit, server.signer)
    status, report = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert status == 200 and report["ok"] and report["checkpoints_verified"] == 1
    assert report["problem"] is None and report["head"]["seq"] == report["count"] == 9  # 2 person records
    record = json.loads(await redis.lindex(keys.AUDIT_LOG, 2))
    record["reason"] = "rewritten"
    await redis.lset(keys.AUDIT_LOG, 2, canonical(record))
    status, report = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert status == 200 and not report["ok"]
    assert report["problem"]["seq"] == 3 and report["problem"]["kind"] == "changed"
    await redis.ltrim(keys.AUDIT_LOG, 0, 1)
    await redis.ltrim(keys.AUDIT_CHAIN, 0, 1)
    status, report = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert report["problem"]["kind"] == "truncated" and report["problem"]["seq"] == 3


async def test_cli_export_checkpoint_and_server_verify(rt, redis, signer, tmp_path, capsys, monkeypatch):
    from approvalbot.cli import audit as audit_cli

    service = ApprovalService(redis, Policy.default())
    grants.install(service, signer)
    await build_history(service, signer, 6, every=3)
    parser = audit_cli.parser()

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return asyncio.get_running_loop().run_in_executor(None, audit_cli.COMMANDS[args.command], rt, args)

    export, cps = tmp_path / "e.jsonl", tmp_path / "c.jsonl"
    assert await run("audit", "export", "--format", "jsonl", "--output", str(export), "--checkpoints", str(cps)) == 0
    assert await run("audit", "checkpoint") == 0
    assert await run("audit", "verify") == 0
    out = capsys.readouterr().out
    assert '"ok": true' in out
    pem = tmp_path / "k.pem"
    assert await run("keys", "show") == 0
    pem.write_text(capsys.readouterr().out)
    report = audit_cli.verify_file(export, cps, pem.read_text())
    assert report.ok and report.checkpoints_verified == 2 and report.count == len(export.read_bytes().splitlines())
    assert (
        await run("audit", "export", "--format", "csv", "--output", str(tmp_path / "e.csv"), "--request", "nope") == 0
    )
    assert (tmp_path / "e.csv").read_text().splitlines() == [",".join(CSV_COLUMNS)]
    await redis.lset(keys.AUDIT_CHAIN, 0, "0" * 64)
    assert await run("audit", "verify") == 1
