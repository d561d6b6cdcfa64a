"""Grants and receipts: signed at the decision, checked offline, used exactly once; and the key stays secret."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from approvalbot.audit import grants
from approvalbot.audit.checkpoints import checkpoint
from approvalbot.audit.grants import (
    GrantError,
    params_digest,
    verify_grant,
    verify_receipt,
)
from approvalbot.audit.signing import (
    Signer,
    SigningKeyError,
    load_public_keys,
    load_signer,
    signer_for,
)
from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.service import ApprovalService

pytest_plugins = ["tests.audit_support"]  # the signer and server fixtures

DOC = Path(__file__).resolve().parents[1] / "docs" / "audit.md"
REFUSED = (jwt.InvalidTokenError, PermissionError)  # what the documented snippet raises

POLICY = Policy.from_yaml(
    """
defaults:
  grant_ttl: 2m
rules:
  - name: reads
    match: {action: "*.read"}
    effect: allow
  - name: nuke
    match: {action: "db.drop"}
    effect: deny
  - name: rest
    match: {action: "*"}
    effect: require_approval
    approvers: ["*"]
"""
)


async def approved(server, **body) -> dict:
    body = {"action": "dataset.export", "resource": "s3://exports/q3", "params": {"rows": 5000, "pii": False}, **body}
    status, req = await server.ask(**body)
    assert status == 201, req
    status, done = await server.decide(req["id"], server.approver_token, "approve", "fine")
    assert (status, done["status"]) == (200, "approved")
    assert done["grant"] is None  # the approver's answer: the grant names the exact resource
    return await agent_read(server, req["id"])


async def agent_read(server, request_id: str) -> dict:
    """The request as its agent reads it: the only reader that gets the grant or receipt."""
    status, doc = await server.call("GET", f"/v1/requests/{request_id}", server.agent_token)
    assert status == 200, doc
    return doc


def forge(token: str, **changes) -> str:
    """Change claims but keep the original signature (what a tamperer can do without the key)."""
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{sig}"


# --- grants -------------------------------------------------------------------


async def test_grant_verifies_offline_with_only_the_public_key(server):
    done = await approved(server)
    assert done["grant"] and done["receipt"] is None
    _, keys_doc = await server.call("GET", "/v1/keys")
    (key,) = keys_doc["keys"]
    for public in (key["pem"], json.dumps(key), json.dumps(keys_doc), load_public_keys(key["pem"])):
        claims = verify_grant(
            done["grant"],
            public,
            action="dataset.export",
            resource="s3://exports/q3",
            params={"pii": False, "rows": 5000},
        )
        assert claims["jti"] == done["id"] and claims["sub"] == done["agent_id"]
        assert claims["agent"] == "etl-bot" and claims["approvers"] == ["alice@example.com"]
        assert claims["params_sha256"] == params_digest({"rows": 5000, "pii": False})
        assert claims["exp"] - claims["iat"] == done["policy"]["grant_ttl"] == 300
        assert claims["iss"] == "approvalbot" and claims["typ"] == "grant"
    assert jwt.get_unverified_header(done["grant"])["kid"] == key["kid"]
    # The agent reads the same grant from the request.
    _, seen = await server.call("GET", f"/v1/requests/{done['id']}", server.agent_token)
    assert seen["grant"] == done["grant"]


async def test_tampered_foreign_expired_and_mismatched_grants_are_rejected(server):
    done = await approved(server)
    token, pem = done["grant"], server.signer.public_pem()

    def code(tok: str, **kw) -> str:
        with pytest.raises(GrantError) as err:
            verify_grant(tok, pem, **kw)
        return err.value.code

    assert code(forge(token, action="iam.role.attach")) == "invalid_signature"
    assert code(forge(token, exp=2_000_000_000)) == "invalid_signature"
    assert code(forge(token, resource="s3://exports/everything")) == "invalid_signature"
    assert code(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")) == "invalid_signature"
    assert code("not.a.jwt") == "malformed_grant" and code("") == "malformed_grant"

    other = Signer(Ed25519PrivateKey.generate())
    claims = jwt.decode(token, options={"verify_signature": False})
    foreign = jwt.encode(claims, other.jwt_key, algorithm="EdDSA", headers={"kid": other.key_id})
    assert code(foreign) == "unknown_key"
    impostor = jwt.encode(claims, other.jwt_key, algorithm="EdDSA", headers={"kid": server.signer.key_id})
    assert code(impostor) == "invalid_signature"
    # Algorithm confusion: HMAC with the public key as the secret, or no signature at all.
    hs = jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": server.signer.key_id})
    assert code(hs) == "invalid_signature"
    none = jwt.encode(claims, None, algorithm="none", headers={"kid": server.signer.key_id})
    assert code(none) == "invalid_signature"

    assert code(token, action="dataset.delete") == "action_mismatch"
    assert code(token, resource="s3://exports/q4") == "resource_mismatch"
    assert code(token, params={"rows": 5001, "pii": False}) == "params_mismatch"
    assert verify_grant(token, pem, params={"pii": False, "rows": 5000})  # key order is irrelevant

    expired = jwt.encode(
        {**claims, "iat": claims["iat"] - 900, "nbf": claims["nbf"] - 900, "exp": claims["iat"] - 600},
        other.jwt_key,
        algorithm="EdDSA",
        headers={"kid": other.key_id},
    )
    with pytest.raises(GrantError) as err:
        verify_grant(expired, other.public_key)
    assert err.value.code == "grant_expired"


async def test_a_grant_decided_long_ago_has_expired(server):
    service = server.service
    service.clock = lambda: datetime.now(UTC) - timedelta(minutes=10)
    done = await approved(server)
    service.clock = lambda: datetime.now(UTC)
    with pytest.raises(GrantError) as err:
        verify_grant(done["grant"], server.signer.public_key)
    assert err.value.code == "grant_expired"
    status, body = await server.consume(done["grant"])
    assert (status, body["error"]["code"]) == (422, "grant_expired")


async def test_receipts_for_denied_expired_and_cancelled_requests(server):
    pem = server.signer.public_pem()
    _, req = await server.ask()
    _, denied = await server.decide(req["id"], server.approver_token, "deny", "no exports in freeze")
    assert denied["status"] == "denied" and denied["receipt"] is None  # not in the approver's answer
    denied = await agent_read(server, req["id"])
    _, req = await server.ask()
    _, cancelled = await server.call("POST", f"/v1/requests/{req['id']}/cancel", server.agent_token)
    server.service.clock = lambda: datetime.now(UTC) - timedelta(hours=2)  # asked long ago...
    _, req = await server.ask()
    server.service.clock = lambda: datetime.now(UTC)
    expired = (await server.service.expire(req["id"])).model_dump(mode="json")  # ...expired now

    for doc, status, deciders in (
        (denied, "denied", ["alice@example.com"]),
        (cancelled, "cancelled", []),
        (expired, "expired", []),
    ):
        assert doc["status"] == status and doc["grant"] is None and doc["receipt"]
        claims = verify_receipt(doc["receipt"], pem)
        assert (claims["typ"], claims["status"], claims["jti"]) == ("receipt", status, doc["id"])
        assert claims["deciders"] == deciders and claims["reason"] == doc["outcome_reason"]
        assert "exp" not in claims and claims["decided_at"].endswith("Z")
        # A receipt is never a grant, whatever an executor is tricked into sending.
        with pytest.raises(GrantError) as err:
            verify_grant(doc["receipt"], pem)
        assert err.value.code == "not_a_grant"
        status_code, body = await server.consume(doc["receipt"])
        assert (status_code, body["error"]["code"]) == (422, "not_a_grant")
    assert denied["receipt"] and verify_receipt(denied["receipt"], pem)["reason"] == "no exports in freeze"
    with pytest.raises(GrantError):
        verify_receipt(forge(denied["receipt"], status="approved"), pem)
    approved_grant = (await approved(server))["grant"]
    with pytest.raises(GrantError) as err:
        verify_receipt(approved_grant, pem)
    assert err.value.code == "not_a_receipt"


async def test_policy_allow_and_deny_get_a_grant_and_a_receipt_at_once(server):
    server.service.policy = POLICY
    status, read = await server.ask(action="warehouse.read", resource="t1")
    assert status == 201 and read["status"] == "approved"
    claims = verify_grant(read["grant"], server.signer.public_key, action="warehouse.read")
    assert claims["approvers"] == [] and claims["policy"] == "reads" and claims["exp"] - claims["iat"] == 120
    _, drop = await server.ask(action="db.drop")
    assert verify_receipt(drop["receipt"], server.signer.public_key)["status"] == "denied"


# --- single use ---------------------------------------------------------------


async def test_consume_once_then_409_and_it_is_audited(server, redis):
    done = await approved(server)
    status, body = await server.consume(
        done["grant"], action="dataset.export", resource="s3://exports/q3", params={"rows": 5000, "pii": False}
    )
    assert status == 200 and body["claims"]["jti"] == done["id"]
    status, err = await server.consume(done["grant"])
    assert (status, err["error"]["code"]) == (409, "grant_used")
    assert err["error"]["details"]["used_at"]
    records = [r.as_dict() for r in await server.service.audit.for_request(done["id"])]
    assert [r["type"] for r in records] == [
        "request.created",
        "approval.recorded",
        "request.approved",
        "grant.consumed",
    ]
    consumed = records[-1]
    assert consumed["seq"] == body["audit_seq"] and consumed["actor"]["kind"] == "agent"
    assert consumed["data"]["grant_sha256"] and done["grant"] not in json.dumps(records)
    assert await redis.ttl(f"ab:grants:used:{done['id']}") > 300
    status, report = await server.call("GET", "/v1/audit/verify", server.approver_token)
    assert report["ok"] and report["count"] == 6  # the fixture's two person.added records + these four


async def test_create_and_consume_in_one_call_only_when_allowed_at_once(server):
    """`?consume_grant=true` (the gateway's path for allowed calls): the grant is used by the call that
    created the request, recorded as any consumption; a pending request and a replay consume nothing."""
    server.service.policy = POLICY
    headers = {"Idempotency-Key": "read-1"}
    status, read, got = await server.call(
        "POST",
        "/v1/requests?consume_grant=true",
        server.agent_token,
        raw=True,
        json={"action": "warehouse.read", "resource": "t1"},
        headers=headers,
    )
    read = json.loads(read)
    assert status == 201 and read["status"] == "approved" and got["Grant-Consumed"].isdigit()
    records = [r.as_dict() for r in await server.service.audit.for_request(read["id"])]
    assert [r["type"] for r in records][-1] == "grant.consumed"
    assert records[-1]["seq"] == int(got["Grant-Consumed"]) and records[-1]["actor"]["kind"] == "agent"
    status, err = await server.consume(read["grant"])
    assert (status, err["error"]["code"]) == (409, "grant_used")  # single use holds across both paths

    status, _, replayed = await server.call(
        "POST",
        "/v1/requests?consume_grant=true",
        server.agent_token,
        raw=True,
        json={"action": "warehouse.read", "resource": "t1"},
        headers=headers,
    )
    assert status == 200 and replayed["Idempotent-Replayed"] == "true" and "Grant-Consumed" not in replayed

    status, pending, got = await server.call(
        "POST", "/v1/requests?consume_grant=true", server.agent_token, raw=True, json={"action": "dataset.export"}
    )
    assert status == 201 and json.loads(pending)["status"] == "pending" and "Grant-Consumed" not in got
    without = [r["type"] for r in await records_of(server, json.loads(pending)["id"])]
    assert "grant.consumed" not in without


async def records_of(server, request_id: str) -> list[dict]:
    return [r.as_dict() for r in await server.service.audit.for_request(request_id)]


async def test_concurrent_consumes_exactly_one_wins(server):
    done = await approved(server)
    _, executor = await server.service.identities.add_executor("exporter", "etl-bot")
    tokens = [server.agent_token, executor] * 15
    results = await asyncio.gather(*(server.consume(done["grant"], t) for t in tokens))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [409] * (len(tokens) - 1)
    types = [r.as_dict()["type"] for r in await server.service.audit.for_request(done["id"])]
    assert types.count("grant.consumed") == 1


async def test_consume_rules(server):
    done = await approved(server)
    status, err = await server.call("POST", "/v1/grants/consume", json={"grant": done["grant"]})
    assert (status, err["error"]["code"]) == (401, "unauthorized")
    _, other_agent = await server.service.identities.add_agent("other-bot", "x@example.com")
    status, err = await server.consume(done["grant"], other_agent)
    assert (status, err["error"]["code"]) == (403, "grant_not_yours")
    status, err = await server.consume(done["grant"], params={"rows": 1})
    assert (status, err["error"]["code"]) == (422, "params_mismatch")
    status, err = await server.consume(forge(done["grant"], resource="prod"))
    assert (status, err["error"]["code"]) == (422, "invalid_signature")
    status, err = await server.call("POST", "/v1/grants/consume", server.agent_token, json={"token": "x"})
    assert (status, err["error"]["code"]) == (422, "invalid_request")
    # People never consume grants: an approver token is refused, and uses nothing up.
    status, err = await server.consume(done["grant"], server.approver_token)
    assert (status, err["error"]["code"]) == (403, "forbidden")
    _, foreign = await server.service.identities.add_executor("foreign", "other-bot")
    status, err = await server.consume(done["grant"], foreign)
    assert (status, err["error"]["code"]) == (403, "grant_not_yours")
    # Failed attempts did not use it up: the executor bound to the agent may still use it once.
    executor, token = await server.service.identities.add_executor("exporter", "etl-bot")
    status, _ = await server.consume(done["grant"], token)
    assert status == 200
    records = [r.as_dict() for r in await server.service.audit.for_request(done["id"])]
    actor = records[-1]["actor"]
    assert (actor["kind"], actor["id"], actor["channel"]) == ("executor", executor.id, "api")
    assert actor["channel_user"].startswith("tok_")
    assert records[-1]["data"]["consumed_by"] == {"kind": "executor", "id": executor.id, "name": "exporter"}


# --- the executor snippet in docs/audit.md actually works ---------------------


def snippet() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- executor-snippet -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/audit.md has no executor snippet"
    return match.group(1)


async def test_documented_executor_snippet(server):
    code = snippet()
    assert len(code.strip().splitlines()) <= 10
    done = await approved(server)
    _, keys_doc = await server.call("GET", "/v1/keys")
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    check = namespace["check_grant"]
    pem = keys_doc["keys"][0]["pem"]
    claims = check(done["grant"], pem, "dataset.export", "s3://exports/q3", {"rows": 5000, "pii": False})
    assert claims["jti"] == done["id"]
    for bad in (
        ("dataset.delete", "s3://exports/q3", {"rows": 5000, "pii": False}),
        ("dataset.export", "s3://other", {"rows": 5000, "pii": False}),
        ("dataset.export", "s3://exports/q3", {"rows": 1}),
    ):
        with pytest.raises(REFUSED):
            check(done["grant"], pem, *bad)
    with pytest.raises(REFUSED):
        check(
            forge(done["grant"], resource="s3://other"),
            pem,
            "dataset.export",
            "s3://other",
            {"rows": 5000, "pii": False},
        )
    _, denied = await server.ask()
    _, denied = await server.decide(denied["id"], server.approver_token, "deny", "no")
    with pytest.raises(REFUSED):
        check(denied["receipt"], pem, "dataset.export", None, {})


# --- the signing key ----------------------------------------------------------


def test_signing_key_from_env_pem_base64_and_generated(tmp_path):
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    expected = Signer(key).key_id
    for value in (
        pem,
        pem.replace("\n", "\\n"),
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        base64.b64encode(der).decode(),
    ):
        got = load_signer(Settings(APPROVALBOT_SIGNING_KEY=value, APPROVALBOT_DATA_DIR=tmp_path / "unused"))
        assert got.key_id == expected
    assert not (tmp_path / "unused").exists()  # a configured key is never written anywhere
    secret = base64.b64encode(b"\x01" * 31).decode()
    for bad in ("not base64 !!", secret, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"):
        with pytest.raises(SigningKeyError) as err:
            load_signer(Settings(APPROVALBOT_SIGNING_KEY=bad))
        assert bad not in str(err.value) and "AAAA" not in str(err.value)

    data = tmp_path / "data"
    first = load_signer(Settings(APPROVALBOT_DATA_DIR=data))
    assert (data / "signing_key.pem").stat().st_mode & 0o777 == 0o600
    assert load_signer(Settings(APPROVALBOT_DATA_DIR=data)).key_id == first.key_id
    assert expected not in repr(first) and "PRIVATE" not in repr(first) and first.key_id in repr(first)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(first)


def test_processes_starting_together_agree_on_the_generated_key(tmp_path):
    data = tmp_path / "shared"
    code = (
        "import sys; from pathlib import Path; from approvalbot.config import Settings; "
        "from approvalbot.audit.signing import load_signer; "
        "print(load_signer(Settings(APPROVALBOT_DATA_DIR=Path(sys.argv[1]))).key_id)"
    )
    env = {k: v for k, v in os.environ.items() if k != "APPROVALBOT_SIGNING_KEY"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(6)
    ]
    ids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(ids) == 1 and len(ids.pop()) == 16


async def test_private_key_never_leaves_the_service(rt, redis, tmp_path, caplog, capsys):
    """With the key in the environment, nothing the API, export, CLI or logs emit contains it."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from approvalbot.app import build_app
    from approvalbot.cli import audit as audit_cli
    from tests.audit_support import Client, wire

    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    forms = {
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        seed.hex(),
        "".join(pem.splitlines()[1:-1]),
    }
    settings = Settings(
        REDIS_URL=rt.redis_url,
        APPROVALBOT_DATA_DIR=tmp_path / "d",
        APPROVALBOT_SIGNING_KEY=base64.b64encode(seed).decode(),
    )
    signer = signer_for(settings)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    service = ApprovalService(redis, POLICY)
    grants.install(service, signer)
    app = build_app(settings, service)
    wire(app, signer)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            api = Client(str(srv.make_url("")).rstrip("/"), http)
            api.service, api.signer = service, signer
            _, api.agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
            _, api.approver_token = await service.identities.add_approver("alice@example.com", [])
            done = await approved(api)
            _, denied = await api.ask()
            await api.decide(denied["id"], api.approver_token, "deny", "no")
            await checkpoint(service.audit, signer)
            await api.consume(done["grant"])
            for method, path, token in (
                ("GET", "/v1/keys", None),
                ("GET", "/v1/audit", api.approver_token),
                ("GET", "/v1/audit?format=csv", api.approver_token),
                ("GET", "/v1/audit/checkpoints", api.approver_token),
                ("GET", "/v1/audit/verify", api.approver_token),
                ("GET", f"/v1/requests/{done['id']}", api.agent_token),
                ("GET", "/openapi.json", None),
                ("GET", "/metrics", None),
            ):
                _, body, headers = await api.call(method, path, token, raw=True)
                seen.append(body.decode(errors="replace") + str(dict(headers)))
            _, body, _ = await api.call(
                "POST", "/v1/grants/consume", api.agent_token, raw=True, json={"grant": done["grant"]}
            )
            seen.append(body.decode())
            _, body, _ = await api.call(
                "POST", "/v1/grants/consume", api.agent_token, raw=True, json={"grant": "x" * 50}
            )
            seen.append(body.decode())
    finally:
        await srv.close()
    seen.append(str(done) + str(denied))

    from approvalbot.runtime import Runtime

    cli_rt = Runtime(settings=settings, redis_url=rt.redis_url, policy=POLICY)
    parser = audit_cli.parser()
    for argv in (
        ["keys", "show"],
        ["keys", "show", "--format", "jwks"],
        ["audit", "verify"],
        ["audit", "checkpoint"],
        ["audit", "export", "--format", "jsonl"],
    ):
        args = parser.parse_args(argv)
        await asyncio.get_running_loop().run_in_executor(None, audit_cli.COMMANDS[args.command], cli_rt, args)
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text, repr(signer), str(signer)]
    everything = "\n".join(seen)
    assert signer.public_pem().splitlines()[1] in everything  # the public key is there...
    for form in forms:
        assert form not in everything  # ...and no form of the private key is
    assert "PRIVATE KEY" not in everything
