"""Issue 13, server side: people read masks, the agent and the grant keep exact values, reveals are
audited, raw values are deleted after the retention period, and no planted secret reaches a log.

Everything over HTTP against the real app and a real Redis; retention is driven through the service
with a moved clock (what the ticker calls every tick).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import timedelta

import pytest

from approvalbot.audit.grants import params_digest, verify_grant
from approvalbot.core.masking import is_masked
from approvalbot.core.policy import Policy

pytest_plugins = ["tests.audit_support"]  # the `server` fixture: the app with audit routes and grants

AWS = "AKIAIOSFODNN7EXAMPLE"
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # a GitHub token shape
DB_PASSWORD = "hunter2-correct-horse"  # found only because the policy marks the path
EMAIL = "jane.customer@example.org"
PLANTED = (AWS, TOKEN, DB_PASSWORD, EMAIL)

POLICY = """
rules:
  - name: rotate
    match: {action: "secret.rotate"}
    effect: require_approval
    approvers: [security]
    sensitive: [db.password]
  - name: sealed
    match: {action: "secret.sealed"}
    effect: require_approval
    approvers: [security]
    reveal: false
  - name: rest
    match: {action: "*"}
    effect: require_approval
    approvers: ["*"]
"""

PARAMS = {"key_id": AWS, "db": {"host": "db1", "password": DB_PASSWORD}, "notify": [EMAIL], "rows": 3}
BODY = {
    "action": "secret.rotate",
    "resource": f"vault://kv/{TOKEN}",
    "params": PARAMS,
    "justification": f"customer {EMAIL} asked to rotate {AWS}",
    "context": {"ticket": "OPS-1", "reporter": EMAIL},
}


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


def decoded(text: str) -> str:
    """`text` plus the decoded header and claims of every JWT in it: what anyone holding it can read."""
    parts = [text]
    for token in JWT.findall(text):
        for part in token.split(".")[:2]:
            parts.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode(errors="replace"))
    return "\n".join(parts)


def leaks(text: str) -> list[str]:
    text = decoded(text)
    return [s for s in PLANTED if s in text]


async def ask(server, **changes):
    status, req = await server.ask(**{**BODY, **changes})
    assert status == 201, req
    return req


async def approver(server, email: str, groups: list[str]) -> str:
    _, token = await server.service.identities.add_approver(email, groups)
    return token


async def test_approver_reads_masks_and_the_agent_reads_exact_values(server):
    req = await ask(server)
    assert req["params"] == PARAMS and req["justification"] == BODY["justification"]  # the agent's answer
    assert req["masked"]["params_sha256"] == params_digest(PARAMS)

    status, agent_view = await server.call("GET", f"/v1/requests/{req['id']}", server.agent_token)
    assert status == 200 and agent_view["params"] == PARAMS and agent_view["context"] == BODY["context"]

    status, raw, _ = await server.call("GET", f"/v1/requests/{req['id']}", server.approver_token, raw=True)
    assert status == 200 and leaks(raw.decode()) == []
    shown = json.loads(raw)
    assert shown["params"]["db"]["password"].startswith("[sensitive · ")
    assert shown["params"]["db"]["host"] == "db1" and shown["params"]["rows"] == 3  # the rest stays readable
    assert (
        is_masked(shown["justification"]) and is_masked(shown["resource"]) and is_masked(shown["context"]["reporter"])
    )
    paths = {item["path"] for item in shown["masked"]["items"]}
    assert {"params.key_id", "params.db.password", "params.notify.0", "justification", "resource"} <= paths

    status, raw, _ = await server.call("GET", "/v1/requests?status=pending", server.approver_token, raw=True)
    assert status == 200 and leaks(raw.decode()) == [] and len(json.loads(raw)["items"]) == 1

    status, raw, _ = await server.call(
        "POST",
        f"/v1/requests/{req['id']}/decisions",
        server.approver_token,
        raw=True,
        json={"decision": "approve", "reason": f"ok, mail {EMAIL} when done"},
    )
    assert status == 200 and leaks(raw.decode()) == []  # the approver's answer, and the reason they typed


async def test_grant_binds_the_raw_params_and_the_audit_export_holds_no_raw_value(server):
    req = await ask(server)
    status, done = await server.decide(req["id"], server.approver_token, "approve", f"fine, told {EMAIL}")
    assert status == 200 and done["status"] == "approved"
    _, agent_view = await server.call("GET", f"/v1/requests/{req['id']}", server.agent_token)
    assert agent_view["grant"]
    _, keys_doc = await server.call("GET", "/v1/keys")
    claims = verify_grant(agent_view["grant"], json.dumps(keys_doc), "secret.rotate", BODY["resource"], PARAMS)
    assert claims["params_sha256"] == agent_view["masked"]["params_sha256"]

    for fmt in ("jsonl", "csv"):
        status, raw, _ = await server.call("GET", f"/v1/audit?format={fmt}", server.approver_token, raw=True)
        assert status == 200 and leaks(raw.decode()) == [], fmt
    _, raw, _ = await server.call("GET", "/v1/audit?format=jsonl", server.approver_token, raw=True)
    created = next(r for r in map(json.loads, raw.decode().splitlines()) if r["type"] == "request.created")
    assert created["data"]["params_sha256"] == params_digest(PARAMS)
    assert created["data"]["masked"]["params"]["db"]["host"] == "db1" and is_masked(created["reason"])
    status, verdict = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert status == 200 and verdict["ok"], verdict


async def test_reveal_answers_exact_values_to_an_eligible_approver_and_is_audited_without_them(server):
    req = await ask(server)
    path = f"/v1/requests/{req['id']}/reveal"
    status, got = await server.call("POST", path, server.approver_token, json={"paths": ["params.db.password"]})
    assert status == 200, got
    assert got["values"] == {"params.db.password": DB_PASSWORD}
    status, got = await server.call("POST", path, server.approver_token, json={"paths": ["justification"]})
    assert got["values"] == {"justification": BODY["justification"]}  # a text with detected parts: whole

    status, err = await server.call("POST", path, server.approver_token, json={"paths": ["params.db.host"]})
    assert (status, err["error"]["code"]) == (422, "unknown_path")  # shown already: nothing to reveal
    status, err = await server.call("POST", path, server.agent_token, json={"paths": ["params.key_id"]})
    assert (status, err["error"]["code"]) == (403, "forbidden")

    _, raw, _ = await server.call(
        "GET", f"/v1/audit?format=jsonl&request_id={req['id']}", server.approver_token, raw=True
    )
    assert leaks(raw.decode()) == []
    reveals = [r for r in map(json.loads, raw.decode().splitlines()) if r["type"] == "params.revealed"]
    assert [r["data"]["paths"] for r in reveals] == [["params.db.password"], ["justification"]]
    assert reveals[0]["actor"]["email"] == "alice@example.com" and reveals[0]["at"]

    # still allowed once the request is final, for the one who decided it
    await server.decide(req["id"], server.approver_token, "approve")
    status, got = await server.call("POST", path, server.approver_token, json={"paths": ["params.key_id"]})
    assert (status, got["values"]) == (200, {"params.key_id": AWS})


async def test_reveal_is_refused_by_the_rule_and_to_people_who_do_not_judge_the_request(server):
    sealed = await ask(server, action="secret.sealed")
    status, err = await server.call(
        "POST", f"/v1/requests/{sealed['id']}/reveal", server.approver_token, json={"paths": ["params.key_id"]}
    )
    assert (status, err["error"]["code"]) == (403, "reveal_forbidden")

    req = await ask(server)
    path = f"/v1/requests/{req['id']}/reveal"
    outsider = await approver(server, "bob@example.com", ["finance"])  # not among this rule's approvers
    status, err = await server.call("POST", path, outsider, json={"paths": ["params.key_id"]})
    assert (status, err["error"]["code"]) == (404, "not_found")  # to him the request does not exist
    owner = await approver(server, "owner@example.com", ["security"])  # the agent's owner, an approver too
    status, err = await server.call("POST", path, owner, json={"paths": ["params.key_id"]})
    assert (status, err["error"]["code"]) == (403, "not_eligible")
    _, raw, _ = await server.call(
        "GET", f"/v1/audit?format=jsonl&request_id={req['id']}", server.approver_token, raw=True
    )
    assert "params.revealed" not in raw.decode()


async def test_retention_deletes_raw_values_and_keeps_the_masked_copy_and_the_chain(server):
    service = server.service
    req = await ask(server)
    pending = await ask(server)
    await server.decide(req["id"], server.approver_token, "approve")
    _, agent_view = await server.call("GET", f"/v1/requests/{req['id']}", server.agent_token)
    grant = agent_view["grant"]

    service.params_retention = 60
    assert await service.forget_params() == []  # not yet due
    real_clock = service.clock
    service.clock = lambda: real_clock() + timedelta(seconds=61)
    try:
        assert await service.forget_params() == [req["id"]]
        assert await service.forget_params() == []  # done once, and out of the index
    finally:
        service.clock = real_clock

    raw = await service.redis.hget(f"ab:req:{req['id']}", "doc")
    assert leaks(raw.decode()) == []
    status, gone = await server.call("GET", f"/v1/requests/{req['id']}", server.agent_token)
    assert status == 200 and gone["params_deleted"] is True and is_masked(gone["params"]["key_id"])
    assert gone["masked"]["params_sha256"] == params_digest(PARAMS)
    assert gone["grant"] is None  # its claims name the exact resource: it goes with the raw values
    _, keys_doc = await server.call("GET", "/v1/keys")
    verify_grant(grant, json.dumps(keys_doc), "secret.rotate", BODY["resource"], PARAMS)  # the executor's check
    status, err = await server.call(
        "POST", f"/v1/requests/{req['id']}/reveal", server.approver_token, json={"paths": ["params.key_id"]}
    )
    assert (status, err["error"]["code"]) == (410, "params_deleted")
    status, verdict = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert status == 200 and verdict["ok"], verdict
    _, still = await server.call("GET", f"/v1/requests/{pending['id']}", server.agent_token)
    assert still["params"] == PARAMS and not still["params_deleted"]  # pending requests are never touched


async def test_no_planted_value_reaches_a_log(server, caplog):
    caplog.set_level(logging.DEBUG)
    req = await ask(server)
    await server.call("GET", f"/v1/requests/{req['id']}", server.approver_token)
    await server.call("POST", f"/v1/requests/{req['id']}/reveal", server.approver_token, json={"paths": []})
    await server.call("POST", f"/v1/requests/{req['id']}/reveal", server.approver_token, json={"paths": ["nope"]})
    await server.decide(req["id"], server.approver_token, "deny", f"no: {AWS} is still in use by {EMAIL}")
    await server.call("GET", "/v1/audit?format=csv", server.approver_token)
    assert caplog.records  # something was logged, so the check below means something
    assert leaks(caplog.text) == []
    assert leaks(" ".join(str(r.args) for r in caplog.records)) == []


async def test_an_approvers_answers_carry_no_token_whose_claims_name_raw_values(server):
    """Grants and receipts are JWTs: base64, not encryption. Their claims name the exact resource, so
    a reviewer's answers leave them out; the agent (and its executor) still get them."""
    approved = await ask(server)
    status, raw, _ = await server.call(
        "POST",
        f"/v1/requests/{approved['id']}/decisions",
        server.approver_token,
        raw=True,
        json={"decision": "approve"},
    )
    assert status == 200 and json.loads(raw)["status"] == "approved"
    denied = await ask(server)
    await server.decide(denied["id"], server.approver_token, "deny", "not today")
    answers = [raw.decode()]
    for req in (approved, denied):
        _, body, _ = await server.call("GET", f"/v1/requests/{req['id']}", server.approver_token, raw=True)
        answers.append(body.decode())
        shown = json.loads(body)
        assert shown["status"] in ("approved", "denied") and shown["grant"] is None and shown["receipt"] is None
    assert [leaks(a) for a in answers] == [[]] * len(answers)

    # The scan decodes tokens: the agent's own reads hold them, and their claims do name the raw resource.
    for req, field in ((approved, "grant"), (denied, "receipt")):
        _, body, _ = await server.call("GET", f"/v1/requests/{req['id']}", server.agent_token, raw=True)
        token = json.loads(body)[field]
        assert token and TOKEN in decoded(token), field


OLD_POLICY_FIELDS = ("sensitive", "detect", "reveal")


async def store_in_the_old_shape(server, request_id: str) -> None:
    """Rewrite a stored request as a version before masking wrote it: no masked view, no masking fields
    in its policy, not in the retention index."""
    redis = server.service.redis
    doc = json.loads(await redis.hget(f"ab:req:{request_id}", "doc"))
    for field in ("masked", "params_deleted"):
        doc.pop(field)
    for field in OLD_POLICY_FIELDS:
        doc["policy"].pop(field)
    await redis.hset(f"ab:req:{request_id}", "doc", json.dumps(doc))
    await redis.zrem("ab:final", request_id)


async def test_requests_stored_before_masking_are_masked_on_read_and_upgraded_once(server):
    service = server.service
    pending, decided = await ask(server), await ask(server)
    await server.decide(decided["id"], server.approver_token, "approve")
    for req in (pending, decided):
        await store_in_the_old_shape(server, req["id"])
    assert await service.redis.zscore("ab:final", decided["id"]) is None
    seq = await service.redis.llen("ab:audit:log")

    # Read before any upgrade: the approver sees masks (computed on read), the agent its exact values.
    for req in (pending, decided):
        status, raw, _ = await server.call("GET", f"/v1/requests/{req['id']}", server.approver_token, raw=True)
        assert status == 200 and leaks(raw.decode()) == [], raw
        shown = json.loads(raw)
        assert is_masked(shown["params"]["key_id"]) and is_masked(shown["resource"])
        assert shown["params"]["db"]["password"].startswith("[secret · credential field · ")
    status, raw, _ = await server.call("GET", "/v1/requests?status=pending", server.approver_token, raw=True)
    assert status == 200 and leaks(raw.decode()) == [] and len(json.loads(raw)["items"]) == 1
    _, mine = await server.call("GET", f"/v1/requests/{pending['id']}", server.agent_token)
    assert mine["params"] == PARAMS and mine["resource"] == BODY["resource"]

    # New records about an old request name it masked; its masked values can be revealed.
    _, got = await server.call(
        "POST", f"/v1/requests/{pending['id']}/reveal", server.approver_token, json={"paths": ["params.key_id"]}
    )
    assert got["values"] == {"params.key_id": AWS}
    status, raw, _ = await server.call(
        "POST",
        f"/v1/requests/{pending['id']}/decisions",
        server.approver_token,
        raw=True,
        json={"decision": "deny", "reason": "no"},
    )
    assert status == 200 and leaks(raw.decode()) == []
    later = [json.loads(r) for r in await service.redis.lrange("ab:audit:log", seq, -1)]
    assert [r["type"] for r in later] == ["params.revealed", "request.denied"]
    assert leaks(json.dumps(later)) == [] and is_masked(later[-1]["resource"])

    # The one-time upgrade stores the views and files the old final request for retention; a document
    # it cannot read is left alone, not in its way.
    await service.redis.hset("ab:req:req_unreadable0000000", "doc", "{not json")
    changed = 0
    for _ in range(100):
        changed += await service.upgrade_stored(count=1)
        if await service.redis.get("ab:upgrade:masked") == b"done":
            break
    assert await service.redis.get("ab:upgrade:masked") == b"done"
    assert changed >= 1  # the pending one was stored masked by its decision already; the decided one here
    stored = json.loads(await service.redis.hget(f"ab:req:{decided['id']}", "doc"))
    assert stored["masked"]["params_sha256"] == params_digest(PARAMS) and stored["params"] == PARAMS
    assert await service.redis.zscore("ab:final", decided["id"]) is not None
    assert await service.upgrade_stored() == 0  # done for good

    service.params_retention = 60
    real_clock = service.clock
    service.clock = lambda: real_clock() + timedelta(seconds=61)
    try:
        forgotten = await service.forget_params()
    finally:
        service.clock = real_clock
    assert set(forgotten) == {decided["id"], pending["id"]}
    for req in (pending, decided):
        raw = await service.redis.hget(f"ab:req:{req['id']}", "doc")
        assert leaks(raw.decode()) == [] and json.loads(raw)["params_deleted"] is True
    status, verdict = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert status == 200 and verdict["ok"], verdict
