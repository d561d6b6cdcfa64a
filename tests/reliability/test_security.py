"""Security across the real processes: forged and replayed Slack requests, revoked and misused
tokens, cross-agent access, and secrets that must never leave the service.

Identity comes from credentials (a Slack signature over the exact bytes, a bearer token), never
from what a payload claims; refused requests change nothing; and the bearer tokens, the Slack
signing secret and bot token, the Teams app password, the callback secret and the Ed25519 private
key appear in no log line (process stderr, and in-process logs at DEBUG), API answer, card, chat
payload or audit export, including when things fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import subprocess
import sys
import time
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp
import redis as sync_redis
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from rq import Queue

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.jobs.outbox import CALLBACKS, Outbox
from approvalbot.runtime import Runtime
from approvalbot.slack import subscribers as slack_subscribers
from approvalbot.store.identities import IdentityStore
from approvalbot.teams.delivery import subscribers as teams_subscribers
from approvalbot.web.openapi import document
from tests.helpers import Api, eventually
from tests.reliability.chat_support import (
    CHANNEL,
    POLICY,
    USERS,
    Drained,
    WatchedSlack,
    chat_env,
    make_identities,
    slack_client,
)
from tests.reliability.conftest import service_env
from tests.reliability.test_load_and_faults import CallbackReceiver
from tests.slack.conftest import SIGNING_SECRET, sign
from tests.slack.fake_slack import BOT_TOKEN
from tests.teams.conftest import TENANT

APP_ID = "5b1f0a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def secured_operations() -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document that takes a bearer token."""
    return [
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if op.get("security")
    ]


def state(client: sync_redis.Redis, request_id: str) -> tuple:
    pipe = client.pipeline(transaction=True)
    pipe.llen("ab:audit:log")
    pipe.zrange("ab:pending", 0, -1)
    pipe.hget(f"ab:req:{request_id}", "doc")
    return tuple(pipe.execute())


def cli(redis_url: str, data_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "approvalbot", *args],
        env=service_env(redis_url, data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


class Cluster:
    """One web process with Slack on (and Teams in dev mode), the fake Slack, and HTTP helpers."""

    def __init__(self, redis_url, spawn, tmp_path):
        self.redis_url, self.spawn, self.tmp_path = redis_url, spawn, tmp_path

    async def __aenter__(self) -> Self:
        self.fake = WatchedSlack(users=dict(USERS), channels={"approvals": CHANNEL})
        await self.fake.start()
        policy = self.tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        self.web = self.spawn(self.redis_url, "web", web=True, **chat_env(self.fake, policy))
        self.ids = await make_identities(self.redis_url)
        self.http = aiohttp.ClientSession()
        self.slack = slack_client(self.fake, self.web.base, self.http, iter(range(1, 10**6)))
        self.client = sync_redis.Redis.from_url(self.redis_url)
        return self

    async def __aexit__(self, *exc) -> None:
        self.client.close()
        await self.http.close()
        await self.fake.close()

    async def call(self, method: str, path: str, token: str | None = None, **kwargs) -> tuple[int, Any]:
        return await Api(self.web.base, self.http).call(method, path, token, **kwargs)

    async def ask(self, token: str | None = None, **body) -> dict:
        status, created = await self.call(
            "POST", "/v1/requests", token or self.ids.agent, json={"action": "db.migrate", "resource": "prod", **body}
        )
        assert status == 201, created
        return created


def submission(user: dict, request_id: str, decision: str = "approve", reason: str | None = None) -> dict:
    """A view_submission of the reason modal, as Slack would send it for `user`."""
    meta = json.dumps({"r": request_id, "d": decision, "c": CHANNEL, "h": False})
    values = {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
    return {
        "type": "view_submission",
        "team": {"id": "T0FAKE"},
        "user": user,
        "api_app_id": "A0APP",
        "trigger_id": "t-sub",
        "view": {
            "id": "V0MODAL",
            "type": "modal",
            "callback_id": "decision",
            "private_metadata": meta,
            "state": {"values": values},
            "hash": "h",
        },
    }


def encoded(payload: dict) -> str:
    return urlencode({"payload": json.dumps(payload)})


async def test_forged_and_replayed_slack_requests_are_refused_and_change_nothing(redis_url, spawn, tmp_path):
    async with Cluster(redis_url, spawn, tmp_path) as c:
        rid = (await c.ask())["id"]
        before = state(c.client, rid)
        alice = {"id": "U0ALICE", "username": "u0alice", "team_id": "T0FAKE"}
        click = encoded(c.slack.click_payload("U0ALICE", rid))
        approve = encoded(submission(alice, rid))
        now = int(time.time())
        attempts = {
            # another user's id, signed with a secret that is not ours (a forger's re-signing)
            "click, wrong secret": (click, now, sign(click, now, "f" * 32)),
            "submission, wrong secret": (approve, now, sign(approve, now, SIGNING_SECRET[::-1])),
            "submission, no signature": (approve, now, ""),
            "submission, signature of another body": (approve, now, sign(click, now)),
            # genuine requests, captured and replayed more than five minutes later
            "click replayed after 301 s": (click, now - 301, sign(click, now - 301)),
            "submission replayed after 6 min": (approve, now - 360, sign(approve, now - 360)),
            "submission from the future": (approve, now + 400, sign(approve, now + 400)),
        }
        for name, (body, ts, signature) in attempts.items():
            status, answer = await c.slack.post(body, timestamp=ts, signature=signature or "v0=")
            assert status == 401, (name, status, answer)
        await asyncio.sleep(0.3)  # room for a wrongly accepted request to act; none may have
        assert state(c.client, rid) == before
        assert not c.fake.calls_of("users.info") and not c.fake.calls_of("views.open")
        # Control: the very same submission, signed now with the real secret, decides.
        status, _ = await c.slack.post(approve)
        assert status == 200
        _, note = await c.fake.first([("note", "U0ALICE", rid)])
        assert note.startswith("You approved")
        _, doc = await c.call("GET", f"/v1/requests/{rid}", c.ids.agent)
        assert doc["status"] == "approved" and doc["decisions"][0]["approver"] == "alice@example.com"


async def test_the_owner_is_refused_in_slack_whatever_name_the_payload_claims(redis_url, spawn, tmp_path):
    """Signed by Slack for the owner's user id, the payload calls them alice: the id decides who it is."""
    async with Cluster(redis_url, spawn, tmp_path) as c:
        rid = (await c.ask())["id"]  # etl-bot is owned by owner@example.com, also a registered approver
        disguised = {
            "id": "U0OWNER",
            "username": "alice",
            "name": "alice",
            "team_id": "T0FAKE",
            "email": "alice@example.com",
        }
        payload = c.slack.click_payload("U0OWNER", rid)
        payload["user"] = disguised
        status, _ = await c.slack.interact(payload)
        assert status == 200
        _, note = await c.fake.first([("note", "U0OWNER", rid)])
        assert "cannot approve your own request" in note
        assert not c.fake.calls_of("views.open")
        # The modal was never opened; a hand-made submission of it is refused just the same.
        status, _ = await c.slack.interact(submission(disguised, rid, "approve", "it's me, alice"))
        assert status == 200
        await eventually(lambda: len(c.fake.seen.get(("note", "U0OWNER", rid), [])) == 2, 10)
        assert "cannot approve your own request" in c.fake.seen[("note", "U0OWNER", rid)][1]
        _, doc = await c.call("GET", f"/v1/requests/{rid}", c.ids.agent)
        assert doc["status"] == "pending" and doc["decisions"] == []
        records = [
            json.loads(c.client.lindex("ab:audit:log", int(s) - 1))
            for s in c.client.lrange(f"ab:audit:req:{rid}", 0, -1)
        ]
        # One person's repeated attempts on one request: one record, then a count on the request (issue 12).
        assert [r["type"] for r in records] == ["request.created", "self_approval.blocked"]
        assert list(doc["self_approval_attempts"].values()) == [2]
        for blocked in records[1:]:
            assert blocked["actor"]["email"] == "owner@example.com"
            assert (blocked["actor"]["channel"], blocked["actor"]["channel_user"]) == ("slack", "U0OWNER")
        assert [u["user"] for u in c.fake.calls_of("users.info")] == ["U0OWNER"]  # asked Slack, once (cached)


async def test_revoked_tokens_are_refused_on_every_endpoint(redis_url, spawn, tmp_path):
    async with Cluster(redis_url, spawn, tmp_path) as c:
        rid = (await c.ask())["id"]
        decided = (await c.ask())["id"]
        status, _ = await c.call("POST", f"/v1/requests/{decided}/decisions", c.ids.bob, json={"decision": "approve"})
        assert status == 200
        _, approved = await c.call("GET", f"/v1/requests/{decided}", c.ids.agent)  # the grant is the agent's
        assert approved["grant"]
        data_dir = tmp_path / "data"
        assert "revoked" in cli(redis_url, data_dir, "agents", "revoke", "etl-bot").stderr
        assert "revoked" in cli(redis_url, data_dir, "approvers", "revoke", "alice@example.com").stderr
        before = state(c.client, rid)
        operations = secured_operations()
        assert len(operations) >= 10
        for token in (c.ids.agent, c.ids.alice):
            for method, path in operations:
                body = (
                    {"decision": "approve"}
                    if path.endswith("decisions")
                    else {"grant": approved["grant"]}
                    if path.endswith("consume")
                    else {"action": "db.migrate"}
                    if method == "POST"
                    else None
                )
                status, answer = await c.call(method, path.replace("{id}", rid), token, json=body)
                assert (status, answer["error"]["code"]) == (401, "unauthorized"), (method, path, answer)
        assert state(c.client, rid) == before
        # Everyone else still gets in.
        status, _ = await c.call("GET", "/v1/requests", c.ids.bob)
        assert status == 200


async def test_agent_tokens_are_refused_on_approver_endpoints(redis_url, spawn, tmp_path):
    async with Cluster(redis_url, spawn, tmp_path) as c:
        rid = (await c.ask())["id"]
        before = state(c.client, rid)
        for method, path, body in (
            ("GET", "/v1/requests", None),
            ("GET", "/v1/requests?status=pending&limit=5", None),
            ("POST", f"/v1/requests/{rid}/decisions", {"decision": "approve"}),
            ("POST", f"/v1/requests/{rid}/decisions", {"decision": "deny", "reason": "no"}),
            ("GET", "/v1/audit", None),
            ("GET", "/v1/audit?format=csv", None),
            ("GET", "/v1/audit/checkpoints", None),
            ("GET", "/v1/audit/verify", None),
        ):
            status, answer = await c.call(method, path, c.ids.agent, json=body)
            assert (status, answer["error"]["code"]) == (403, "forbidden"), (method, path, answer)
        assert state(c.client, rid) == before


async def test_agents_cannot_see_or_touch_each_others_requests(redis_url, spawn, tmp_path):
    async with Cluster(redis_url, spawn, tmp_path) as c:
        rid = (await c.ask())["id"]
        other = cli(
            redis_url, tmp_path / "data", "agents", "add", "other-bot", "--owner", "mallory@example.com"
        ).stdout.strip()
        before = state(c.client, rid)
        for method, suffix in (("GET", ""), ("GET", "?wait=1"), ("POST", "/cancel"), ("GET", "/deliveries")):
            mine = await c.call(method, f"/v1/requests/{rid}{suffix}", other)
            nobody = await c.call(method, f"/v1/requests/req_aaaaaaaaaaaaaaaa{suffix}", other)
            assert mine == nobody and mine[0] == 404, (method, suffix, mine)  # no oracle: "not found" alike
        assert state(c.client, rid) == before
        status, own = await c.call("GET", f"/v1/requests/{rid}/deliveries", c.ids.agent)
        assert status == 200 and own["request_id"] == rid


# --- secrets -------------------------------------------------------------------------------------


def signing_key() -> tuple[str, list[str]]:
    """An Ed25519 private key as PEM, and every form of it that must never be seen."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, [
        "".join(pem.splitlines()[1:-1]),
        seed.hex(),
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
    ]


def assert_nowhere(secrets: dict[str, str], places: dict[str, str]) -> None:
    for name, secret in secrets.items():
        assert len(secret) >= 12, name  # long enough that a match means a leak
        for where, text in places.items():
            assert secret not in text, f"{name} found in {where}"


async def revoked_agent_token(redis_url: str) -> str:
    """The token of an agent revoked at once."""
    redis = Redis.from_url(redis_url)
    ids = IdentityStore(redis)
    _, token = await ids.add_agent("gone-bot", "owner@example.com")
    await ids.revoke_agent("gone-bot")
    await redis.aclose()
    return token


async def test_secrets_never_leave_the_processes(redis_url, spawn, tmp_path):
    pem, key_forms = signing_key()
    callback_secret = "cb-" + "7e" * 24
    app_password = "teams-app-password-" + "5f" * 10
    fake = WatchedSlack(users=dict(USERS), channels={"approvals": CHANNEL})
    await fake.start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = chat_env(
        fake,
        policy,
        MICROSOFT_APP_ID=APP_ID,
        MICROSOFT_APP_PASSWORD=app_password,
        APPROVALBOT_CALLBACK_SECRET=callback_secret,
        APPROVALBOT_SIGNING_KEY=pem,
        APPROVALBOT_JOB_TIMEOUT="5",
    )
    del env["APPROVALBOT_TEAMS_DEV"]
    web = spawn(redis_url, "web", web=True, **env)
    worker = spawn(redis_url, "worker", **env)
    logs = {"web": Drained(web), "worker": Drained(worker)}
    ids = await make_identities(redis_url)
    revoked = await revoked_agent_token(redis_url)
    seen: list[str] = []
    receiver = CallbackReceiver(fail_first=2)  # failing callbacks: RQ retries, and logs why
    try:
        async with receiver as hook, aiohttp.ClientSession() as http:

            async def call(method, path, token=None, raw_auth=None, **kwargs):
                headers = kwargs.pop("headers", {})
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                if raw_auth:
                    headers["Authorization"] = raw_auth
                async with http.request(method, web.base + path, headers=headers, **kwargs) as resp:
                    text = await resp.text()
                    seen.append(f"{resp.status} {dict(resp.headers)} {text}")
                    return resp.status, text

            fake.fail("chat.postMessage", 2, status=500)
            fake.fail("chat.postMessage", 1, error="invalid_auth")  # Slack refuses "our token" once
            rids = []
            for i in range(4):
                status, text = await call(
                    "POST",
                    "/v1/requests",
                    ids.agent,
                    json={"action": "db.migrate", "resource": f"db{i}", "callback_url": hook},
                )
                assert status == 201
                rids.append(json.loads(text)["id"])
            # failures of every kind, carrying secrets where a careless server might echo them
            for raw_auth in (
                f"Bearer {revoked}",
                f"Bearer {SIGNING_SECRET}",
                f"Bearer {BOT_TOKEN}",
                f"Basic {callback_secret}",
                f"Bearer {ids.agent}x",
                "Bearer",
            ):
                status, _ = await call("POST", "/v1/requests", raw_auth=raw_auth, json={"action": "db.migrate"})
                assert status == 401
            status, _ = await call("POST", "/v1/requests", ids.agent, json={"action": app_password + " !"})
            assert status == 422
            status, _ = await call("GET", f"/v1/requests?cursor={callback_secret}", ids.alice)
            assert status == 422
            status, _ = await call("POST", f"/v1/requests/{rids[0]}/decisions", ids.agent, json={"decision": "approve"})
            assert status == 403
            status, _ = await call("POST", "/v1/grants/consume", ids.agent, json={"grant": pem})
            assert status in (400, 422)
            for headers in ({}, {"Authorization": f"Bearer {app_password}"}, {"Authorization": "Bearer a.b.c"}):
                status, _ = await call(
                    "POST",
                    "/api/messages",
                    headers=headers,
                    json={
                        "type": "message",
                        "serviceUrl": "http://127.0.0.1:9/",
                        "channelId": "msteams",
                        "from": {"id": "29:alice"},
                        "recipient": {"id": "28:bot"},
                        "conversation": {"id": "19:x"},
                        "text": "pending",
                    },
                )
                assert status == 401
            status, _ = await call(
                "POST",
                "/slack/events",
                data=encoded({"type": "block_actions"}),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": "1",
                    "X-Slack-Signature": "v0=00",
                },
            )
            assert status == 401
            # and successes: API decisions, and a signed Slack click and modal
            assert (await call("POST", f"/v1/requests/{rids[0]}/decisions", ids.alice, json={"decision": "approve"}))[
                0
            ] == 200
            assert (
                await call(
                    "POST",
                    f"/v1/requests/{rids[1]}/decisions",
                    ids.bob,
                    json={"decision": "deny", "reason": "not today"},
                )
            )[0] == 200
            slack = slack_client(fake, web.base, http, iter(range(1, 100)))
            payload = slack.click_payload("U0ALICE", rids[2])
            assert (await slack.interact(payload))[0] == 200
            _, view = await fake.first([("view", payload["trigger_id"])])
            assert (await slack.submit("U0ALICE", view, "fine"))[0] == 200
            await fake.first([("note", "U0ALICE", rids[2])])
            await eventually(lambda: len(receiver.delivered) == 3, 60)
            await eventually(lambda: len(fake.cards_by_request()) == 4, 60)
            for path in ("/v1/audit", "/v1/audit?format=csv", "/v1/audit/verify", "/v1/audit/checkpoints"):
                status, _ = await call("GET", path, ids.alice)
                assert status == 200
            for path in (
                "/v1/keys",
                "/metrics",
                "/openapi.json",
                f"/v1/requests/{rids[0]}",
                f"/v1/requests/{rids[0]}/deliveries",
            ):
                await call("GET", path, ids.agent)
    finally:
        await fake.close()
    for proc in (web, worker):  # a graceful stop, so shutdown logging is read too
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(30)
    assert receiver.failures == 2
    client = sync_redis.Redis.from_url(redis_url)
    records = [json.loads(r) for r in client.lrange("ab:audit:log", 0, -1)]
    client.close()
    assert any(r["type"] == "delivery.failed" and r["data"].get("error") == "invalid_auth" for r in records)
    places = {name: log.text(wait=10) for name, log in logs.items()}
    assert "approvalbot listening" in places["web"] and "worker started" in places["worker"]
    assert "Traceback" in places["worker"]  # the failures above were logged, with their tracebacks
    places["API answers"] = "\n".join(seen)
    places["Slack payloads"] = json.dumps([c.args for c in fake.calls] + fake.responses, default=str)
    secrets = {
        "agent token": ids.agent,
        "approver token": ids.alice,
        "revoked token": revoked,
        "Slack signing secret": SIGNING_SECRET,
        "Slack bot token": BOT_TOKEN,
        "Teams app password": app_password,
        "callback secret": callback_secret,
        **{f"signing key ({i})": form for i, form in enumerate(key_forms)},
    }
    assert_nowhere(secrets, places)


async def test_secrets_never_reach_logs_in_process_at_debug(redis_url, tmp_path, monkeypatch, caplog):
    """The same service in this process, every logger at DEBUG, delivery and callback jobs included."""
    pem, key_forms = signing_key()
    callback_secret = "cb-" + "3d" * 24
    app_password = "teams-app-password-" + "a1" * 10
    fake = WatchedSlack(users=dict(USERS), channels={"approvals": CHANNEL})
    await fake.start()
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": "#approvals",
        "SLACK_API_URL": fake.api_url,
        "MICROSOFT_APP_ID": APP_ID,
        "MICROSOFT_APP_PASSWORD": app_password,
        "APPROVALBOT_TEAMS_TENANTS": TENANT,
        "APPROVALBOT_CALLBACK_SECRET": callback_secret,
        "APPROVALBOT_CALLBACK_ALLOW": "127.0.0.1",  # the callback receiver listens on loopback
        "APPROVALBOT_SIGNING_KEY": pem,
        "REDIS_URL": redis_url,
        "APPROVALBOT_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in env.items():  # jobs read their settings from the environment, as in a worker
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    monkeypatch.delenv("APPROVALBOT_TEAMS_DEV", raising=False)
    caplog.set_level(logging.DEBUG)
    settings = Settings()
    rt = Runtime(settings=settings, redis_url=redis_url, policy=Policy.from_yaml(POLICY))
    redis = rt.async_redis()
    service = rt.service(redis)
    server = TestServer(build_app(settings, service), host="127.0.0.1", port=0)
    await server.start_server()
    queue = Queue(settings.queue_name, connection=rt.sync_redis())
    outbox = Outbox(redis, queue, [CALLBACKS, *slack_subscribers(settings), *teams_subscribers(settings)])
    seen: list[str] = []
    receiver = CallbackReceiver(fail_first=1)
    try:
        async with receiver as hook, aiohttp.ClientSession() as http:
            api = Api(base=str(server.make_url("")).rstrip("/"), http=http, service=service)
            agent, api.agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
            agent_secret = await service.identities.callback_secret(agent.id)
            _, api.approver_token = await service.identities.add_approver("alice@example.com", ["security"])
            harness = slack_client(fake, api.base, http, iter(range(1, 100)))
            harness.api, harness.queue, harness.outbox = api, queue, outbox
            fake.fail("chat.postMessage", 1, status=500)
            fake.fail("chat.update", 1, error="invalid_auth")
            created = [await api.ask(resource=f"db{i}", callback_url=hook) for i in range(2)]
            assert {s for s, _ in created} == {201}
            rids = [body["id"] for _, body in created]
            seen.append(json.dumps(created))
            await harness.run_until_settled()  # the cards are up, so the decisions below update them
            for header in (f"Bearer {api.agent_token}!", f"Bearer {SIGNING_SECRET}", "Bearer junk"):
                seen.append(repr(await api.call("GET", "/v1/requests", headers={"Authorization": header})))
            seen.append(
                repr(await api.call("POST", "/v1/requests", api.agent_token, json={"action": callback_secret + " x"}))
            )
            seen.append(
                repr(
                    await api.call(
                        "POST", "/api/messages", json={"type": "message"}, headers={"Authorization": "Bearer x.y.z"}
                    )
                )
            )
            payload = harness.click_payload("U0ALICE", rids[0])
            assert (await harness.interact(payload))[0] == 200
            _, view = await fake.first([("view", payload["trigger_id"])])
            assert (await harness.submit("U0ALICE", view, "ok"))[0] == 200
            await fake.first([("note", "U0ALICE", rids[0])])
            seen.append(repr(await api.decide(rids[1], api.approver_token, "deny", "no")))
            await harness.run_until_settled()
            await eventually(lambda: len(receiver.delivered) == 2, 30)
            for path in ("/v1/audit", "/v1/audit?format=csv", "/v1/audit/verify"):
                seen.append(repr(await api.call("GET", path, api.approver_token)))
    finally:
        await server.close()
        await redis.aclose()
        queue.connection.close()
        await fake.close()
    assert receiver.failures == 1
    assert "invalid_auth" in caplog.text and any(r.levelno == logging.DEBUG for r in caplog.records)
    places = {
        "logs": caplog.text + "\n".join(str(r.__dict__) for r in caplog.records),
        "API answers": "\n".join(seen),
        "Slack payloads": json.dumps([c.args for c in fake.calls] + fake.responses, default=str),
    }
    secrets = {
        "agent token": api.agent_token,
        "approver token": api.approver_token,
        "Slack signing secret": SIGNING_SECRET,
        "Slack bot token": BOT_TOKEN,
        "Teams app password": app_password,
        "callback secret": callback_secret,
        "agent callback secret": agent_secret,
        **{f"signing key ({i})": form for i, form in enumerate(key_forms)},
    }
    assert_nowhere(secrets, places)
