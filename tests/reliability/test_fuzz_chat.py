"""Hypothesis-generated traffic against the chat endpoints of a real web process.

`POST /slack/events` gets random form bodies, random JSON, random bytes, and `payload=`
JSON shaped like block_actions, view_submission and slash commands with random fields,
correctly signed, unsigned, signed with another secret, with a stale or future
timestamp (a replay older than five minutes) or with a garbage timestamp.
`POST /api/messages` gets random activities and Action.Execute invokes with random
values: in dev mode, and on a server with an app id, where nothing unsigned may pass.

Never a 5xx; the process keeps answering (and still works afterwards: a real click
opens a modal, a real Teams approval decides); and no state change, checked after every
example and once more when all is quiet: the audit log's length, the pending set and
the stored request are exactly as before. No generated request can be a legitimate
decision: the Slack users are strangers or not approvers, and the Teams members
resolve to nobody who may decide. Hypothesis runs in a worker thread; each example is
sent from the test's event loop, where the fakes answer the server's calls.

What the fuzz found (each a 5xx before the fix) is pinned in the last test.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.chat_support import (
    CHANNEL,
    POLICY,
    USERS,
    Drained,
    WatchedSlack,
    chat_env,
    make_identities,
    start_connector,
)
from tests.reliability.conftest import free_port
from tests.slack.conftest import SIGNING_SECRET
from tests.teams.conftest import BOT_ID, TENANT, FakeConnector, Person

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
APP_ID = "5b1f0a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
APP_PASSWORD = "fuzz-app-password-not-real"
# Placeholders filled in per run: the real pending request, the fakes' URLs.
REAL, CONNECTOR, RESPONSE_URL, CLOSED = "@real-request@", "@connector@", "@response-url@", "@closed@"

# --- strategies ----------------------------------------------------------------------------

text = st.text(max_size=30)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | text
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=10
)
request_ids = st.sampled_from([REAL, REAL, "req_aaaaaaaaaaaaaaaa", "req_", ""]) | text
slack_users = st.sampled_from(["U0MALLORY", "U0MALLORY", "U0NOBODY", "", "B0BOT", "W0123"]) | text
slack_user = st.fixed_dictionaries({"id": slack_users}, optional={"username": text, "name": text, "team_id": text})
channels = st.sampled_from([CHANNEL, "C0NOWHERE", "D0MALLORY", ""]) | text
actions = st.lists(
    st.fixed_dictionaries(
        {"action_id": st.sampled_from(["approve", "deny", "more"]) | text, "value": request_ids | json_values},
        optional={"block_id": text, "type": st.just("button"), "action_ts": text},
    ),
    min_size=1,
    max_size=2,
)
private_metadata = (
    st.fixed_dictionaries(
        {"r": request_ids, "d": st.sampled_from(["approve", "deny"]) | text},
        optional={"c": channels | json_values, "h": json_values},
    ).map(json.dumps)
    | text
)
views = st.fixed_dictionaries(
    {"callback_id": st.sampled_from(["decision"]) | text, "private_metadata": private_metadata},
    optional={
        "id": text,
        "hash": text,
        "state": st.fixed_dictionaries(
            {
                "values": st.fixed_dictionaries(
                    {"reason": st.fixed_dictionaries({"reason": st.fixed_dictionaries({"value": text | json_values})})}
                )
            }
        )
        | json_values,
    },
)


def slack_shapes(signed: bool) -> dict[str, st.SearchStrategy]:
    """Payloads shaped like Slack's, with random values and extra fields.

    Signed ones keep what Slack always sends (who, where to answer) well-formed: Slack never
    signs anything else, and bolt answers a listener that fails after its ack only after
    waiting three seconds. Unsigned ones may be anything.
    """
    user = slack_user if signed else slack_user | json_values
    channel = st.fixed_dictionaries({"id": channels}, optional={"name": text})
    always = {"trigger_id": text, "response_url": st.just(RESPONSE_URL)} if signed else {}
    maybe = {} if signed else {"trigger_id": text, "response_url": st.just(RESPONSE_URL)}
    event = st.fixed_dictionaries(
        {"type": st.sampled_from(["app_home_opened", "message"]) | text, "user": slack_users}, optional={"tab": text}
    )
    return {
        "block_actions": st.fixed_dictionaries(
            {
                "type": st.just("block_actions"),
                "user": user,
                "actions": actions if signed else actions | json_values,
                **always,
            },
            optional={
                "api_app_id": text,
                "team": json_values,
                "message": json_values,
                **maybe,
                "channel": channel if signed else channel | json_values,
                "container": st.fixed_dictionaries(
                    {"type": st.sampled_from(["message", "view"]) | text},
                    optional={"channel_id": channels, "message_ts": text},
                ),
                "view": st.fixed_dictionaries({"type": st.sampled_from(["home", "modal"]) | text}),
            },
        ),
        "view_submission": st.fixed_dictionaries(
            {"type": st.just("view_submission"), "user": user, "view": views if signed else views | json_values},
            optional={"trigger_id": text, "api_app_id": text, "team": json_values},
        ),
        "command": st.fixed_dictionaries(
            {
                "command": st.sampled_from(["/pending", "/approval"]) | text,
                "text": st.sampled_from([REAL, ""]) | text,
                "user_id": slack_users,
                **always,
            },
            optional={"channel_id": channels, "team_id": text, "user_name": text, **maybe},
        ),
        "event": st.fixed_dictionaries(
            {"type": st.sampled_from(["event_callback", "url_verification"]) | text},
            optional={
                "event": event if signed else event | json_values,
                "challenge": text,
                "token": text,
                "team_id": text,
                "event_id": text,
            },
        ),
    }


SIGNED, UNSIGNED = slack_shapes(True), slack_shapes(False)
signing = st.sampled_from(["valid"] * 5 + ["unsigned", "wrong-secret", "stale", "future", "garbage"])


@st.composite
def slack_requests(draw) -> tuple[bytes, str, str]:
    mode = draw(signing)
    shapes = SIGNED if mode == "valid" else UNSIGNED
    kind = draw(st.sampled_from(["payload"] * 4 + ["command", "json", "form", "bytes"]))
    if kind == "payload":
        payload = draw(
            st.sampled_from(
                [
                    shapes["block_actions"],
                    shapes["block_actions"],
                    shapes["view_submission"],
                    shapes["view_submission"],
                    json_values,
                ]
            ).flatmap(lambda shape: shape)
        )
        body = urlencode({"payload": json.dumps(payload)}).encode()
    elif kind == "command":
        body = urlencode(draw(shapes["command"])).encode()
    elif kind == "json":
        body = json.dumps(draw(shapes["event"] | json_values)).encode()
    elif kind == "form":
        body = urlencode(
            draw(st.dictionaries(st.sampled_from(["payload", "command", "type"]) | text, text, max_size=4))
        ).encode()
    else:
        body = draw(st.binary(max_size=200))
    default = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
    content_type = draw(st.sampled_from([default, default, "application/json", "text/plain"]))
    return body, content_type, mode


service_urls = st.sampled_from([CONNECTOR] * 8 + [CLOSED, "", "not a url", "ftp://127.0.0.1:1/"])
from_ids = st.sampled_from(["29:mallory", "29:mallory", "29:nobody", "", BOT_ID]) | text
invoke_values = st.fixed_dictionaries(
    {
        "action": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["Action.Execute"]) | text,
                "verb": st.sampled_from(["approve", "deny", "refresh"]) | text,
            },
            optional={
                "data": st.fixed_dictionaries(
                    {"request_id": request_ids | json_values},
                    optional={"reason": text | json_values, "deny_reason": text | json_values},
                )
                | json_values,
                "id": text,
            },
        )
        | json_values
    },
    optional={"trigger": st.sampled_from(["manual", "automatic"]) | text},
)
activity_types = (
    st.sampled_from(
        ["message", "invoke", "conversationUpdate", "installationUpdate", "event", "messageReaction", "typing"]
    )
    | text
)
conversations = st.fixed_dictionaries(
    {"id": st.sampled_from(["19:fuzz@thread.tacv2", "a:1"]) | text},
    optional={
        "conversationType": st.sampled_from(["channel", "groupChat", "personal"]) | text,
        "tenantId": text,
        "isGroup": st.booleans(),
    },
)
senders = st.fixed_dictionaries({"id": from_ids}, optional={"aadObjectId": st.just("aad-mallory") | text, "name": text})
contents = {
    "id": text,
    "channelData": st.fixed_dictionaries(
        {},
        optional={
            "tenant": st.fixed_dictionaries({"id": st.sampled_from([TENANT]) | text}),
            "team": json_values,
            "channel": json_values,
            "eventType": text,
        },
    )
    | json_values,
    "name": st.sampled_from(["adaptiveCard/action", "adaptiveCard/action", "composeExtension/query", "task/fetch"])
    | text,
    "value": invoke_values | json_values,
    "text": st.sampled_from(["pending", f"approval {REAL}", "help"]) | text,
    "membersAdded": st.lists(st.fixed_dictionaries({"id": st.sampled_from([BOT_ID]) | text}), max_size=2),
    "membersRemoved": st.lists(st.fixed_dictionaries({"id": st.sampled_from([BOT_ID]) | text}), max_size=2),
    "action": st.sampled_from(["add", "remove"]) | text,
    "replyToId": text,
    "entities": json_values,
}
# Mostly a well-addressed envelope (so the bot itself gets to read the content), sometimes anything.
envelopes = st.fixed_dictionaries(
    {
        "type": activity_types,
        "serviceUrl": service_urls,
        "channelId": st.just("msteams"),
        "from": senders,
        "recipient": st.fixed_dictionaries({"id": st.sampled_from([BOT_ID]) | text}),
        "conversation": conversations,
    },
    optional=contents,
)
loose = st.fixed_dictionaries(
    {"type": activity_types},
    optional={
        "serviceUrl": service_urls,
        "from": senders | json_values,
        "conversation": conversations | json_values,
        "recipient": json_values,
        "channelId": text,
        **contents,
    },
)


invokes = st.fixed_dictionaries(
    {
        "type": st.just("invoke"),
        "name": st.sampled_from(["adaptiveCard/action"] * 4 + ["task/fetch"]) | text,
        "value": invoke_values,
        "serviceUrl": service_urls,
        "channelId": st.just("msteams"),
        "from": senders,
        "recipient": st.fixed_dictionaries({"id": st.just(BOT_ID)}),
        "conversation": conversations,
    },
    optional={"channelData": contents["channelData"], "replyToId": text, "id": text},
)


@st.composite
def teams_bodies(draw) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["invoke"] * 3 + ["envelope"] * 3 + ["loose", "json", "bytes"]))
    if kind == "invoke":
        body = json.dumps(draw(invokes)).encode()
    elif kind == "envelope":
        body = json.dumps(draw(envelopes)).encode()
    elif kind == "loose":
        body = json.dumps(draw(loose)).encode()
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    else:
        body = draw(st.binary(max_size=200))
    return body, draw(st.sampled_from(["application/json"] * 5 + ["text/plain"]))


def forged_token(audience: str) -> str:
    """A well-formed JWT for our app id, signed with a key of our own and from a foreign issuer.

    (One claiming a Microsoft issuer would make the SDK fetch Microsoft's signing keys over
    the internet; the tests talk to loopback only.)
    """
    now = int(time.time())
    claims = {
        "iss": "https://login.attacker.example/",
        "aud": audience,
        "serviceurl": "http://127.0.0.1/",
        "nbf": now - 10,
        "exp": now + 3600,
    }
    return jwt.encode(claims, "not-microsofts-key-" * 3, algorithm="HS256", headers={"kid": "forged"})


header_text = st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40)
authorizations = st.sampled_from([None, "Bearer", "Bearer x.y.z", "forged", "Basic Zm9vOmJhcg=="]) | header_text


# --- the rig ------------------------------------------------------------------------------


@dataclass
class Rig:
    base: str
    http: aiohttp.ClientSession
    fake: WatchedSlack
    connector: FakeConnector
    client: sync_redis.Redis
    request_id: str
    agent: str
    log: Drained
    table: dict[str, str]

    def state(self) -> tuple:
        """What the traffic must not change: the audit records about requests, the queue, the request.

        Records about people (a refused chat identity, at most once per identity and minute; a
        Teams user linked to their person on first use) change no request, so they are not counted.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange("ab:audit:log", 0, -1)
        pipe.zrange("ab:pending", 0, -1, withscores=True)
        pipe.hget(f"ab:req:{self.request_id}", "doc")
        records, pending, doc = pipe.execute()
        about_requests = [r for r in records if json.loads(r).get("request_id")]
        return len(about_requests), pending, doc

    def fill_bytes(self, body: bytes) -> bytes:
        text_body = body.decode("utf-8", errors="surrogateescape")
        for key, real in self.table.items():
            text_body = text_body.replace(key, real).replace(urlencode({"": key})[1:], urlencode({"": real})[1:])
        return text_body.encode("utf-8", errors="surrogateescape")

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(self.base + path, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def quiet(self) -> None:
        """Bounded wait until the server stops calling the fakes (listeners run after the ack)."""
        deadline = time.monotonic() + 10
        while True:
            count = len(self.fake.calls) + len(self.connector.calls)
            await asyncio.sleep(0.3)
            if count == len(self.fake.calls) + len(self.connector.calls) or time.monotonic() > deadline:
                return

    def alive(self) -> None:
        assert self.log.proc.popen.poll() is None, self.log.text()[-3000:]


async def make_rig(redis_url, spawn, tmp_path, http, **extra) -> tuple[Rig, Any]:
    fake = WatchedSlack(users=dict(USERS), channels={"approvals": CHANNEL})
    await fake.start()
    connector, connector_server = await start_connector()
    connector.add(Person("29:mallory", "aad-mallory", "mallory@example.com", "Mallory"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    web = spawn(redis_url, "web", web=True, **chat_env(fake, policy, **extra))
    ids = await make_identities(redis_url)
    async with http.post(
        web.base + "/v1/requests",
        json={"action": "db.migrate", "resource": "prod"},
        headers={"Authorization": f"Bearer {ids.agent}"},
    ) as resp:
        assert resp.status == 201
        request_id = (await resp.json())["id"]
    table = {
        REAL: request_id,
        CONNECTOR: connector.url,
        RESPONSE_URL: fake.response_url("fuzz"),
        CLOSED: f"http://127.0.0.1:{free_port()}/",
    }
    rig = Rig(
        web.base,
        http,
        fake,
        connector,
        sync_redis.Redis.from_url(redis_url),
        request_id,
        ids.agent,
        Drained(web),
        table,
    )

    async def close():
        rig.client.close()
        await fake.close()
        await connector_server.close()

    return rig, close


@pytest.fixture
async def rig(redis_url, spawn, tmp_path):
    async with aiohttp.ClientSession() as http:
        made, close = await make_rig(redis_url, spawn, tmp_path, http)
        yield made
        await close()


@pytest.fixture
async def authenticated_rig(redis_url, spawn, tmp_path):
    async with aiohttp.ClientSession() as http:
        made, close = await make_rig(
            redis_url, spawn, tmp_path, http, MICROSOFT_APP_ID=APP_ID, MICROSOFT_APP_PASSWORD=APP_PASSWORD
        )
        yield made
        await close()


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's signature, over the raw bytes it sends."""
    base = b"v0:%d:" % timestamp + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_headers(body: bytes, content_type: str, mode: str, age: int, garbage: str) -> dict[str, str]:
    now = int(time.time())
    headers = {"Content-Type": content_type}
    raw = body
    if mode == "valid":
        headers.update({"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(raw, now)})
    elif mode == "wrong-secret":
        headers.update(
            {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(raw, now, secret=SIGNING_SECRET[::-1])}
        )
    elif mode in ("stale", "future"):
        ts = now - age if mode == "stale" else now + age
        headers.update({"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(raw, ts)})
    elif mode == "garbage":
        headers.update({"X-Slack-Request-Timestamp": garbage or "x", "X-Slack-Signature": sign(raw, now)})
    return headers


# --- the tests ----------------------------------------------------------------------------


def fuzz(loop: asyncio.AbstractEventLoop, strategy, one) -> None:
    """Run Hypothesis in this (worker) thread; each example runs on the test's loop, where the fakes live."""

    @given(strategy)
    @FUZZ
    def example(drawn):
        asyncio.run_coroutine_threadsafe(one(*drawn), loop).result(timeout=60)

    example()


async def slack_example(rig: Rig, body, age, garbage) -> None:
    raw, content_type, mode = body
    raw = rig.fill_bytes(raw)
    before = rig.state()
    status, answer = await rig.post("/slack/events", raw, slack_headers(raw, content_type, mode, age, garbage))
    assert status < 500, (status, answer, raw[:300], mode)
    if mode != "valid":
        assert status == 401, (status, answer, mode)
    assert rig.state() == before, (raw[:300], mode)


async def test_random_slack_traffic_never_breaks_or_changes_anything(rig):
    initial = rig.state()
    strategy = st.tuples(slack_requests(), st.integers(301, 10**8), header_text)
    await asyncio.to_thread(fuzz, asyncio.get_running_loop(), strategy, lambda *a: slack_example(rig, *a))
    await rig.quiet()
    assert rig.state() == initial
    rig.alive()
    # Still working: a genuine signed click by an approver opens the reason modal.
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ALICE"},
        "trigger_id": "after-the-fuzz",
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "channel_id": CHANNEL},
        "actions": [{"action_id": "approve", "value": rig.request_id, "type": "button"}],
    }
    raw = urlencode({"payload": json.dumps(payload)}).encode()
    status, _ = await rig.post(
        "/slack/events", raw, slack_headers(raw, "application/x-www-form-urlencoded", "valid", 0, "")
    )
    assert status == 200
    _, view = await rig.fake.first([("view", "after-the-fuzz")], within=10)
    assert rig.request_id in view["private_metadata"]
    assert rig.state() == initial
    assert "unhandled error" not in rig.log.text(), rig.log.text()[-3000:]  # no handler crashed into a 500


async def teams_example(rig: Rig, body, authorization=None) -> None:
    raw, content_type = body
    raw = rig.fill_bytes(raw)
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = f"Bearer {forged_token(APP_ID)}" if authorization == "forged" else authorization
    before = rig.state()
    status, answer = await rig.post("/api/messages", raw, headers)
    assert status < 500, (status, answer, raw[:300])
    assert rig.state() == before, raw[:300]
    return status


async def test_random_teams_activities_in_dev_mode_never_break_or_decide(rig):
    initial = rig.state()
    await asyncio.to_thread(
        fuzz, asyncio.get_running_loop(), st.tuples(teams_bodies()), lambda *a: teams_example(rig, *a)
    )
    await rig.quiet()
    assert rig.state() == initial
    rig.alive()
    # Still working: a real approver's Action.Execute decides the request.
    alice = rig.connector.add(Person("29:alice", "aad-alice", "alice@example.com", "Alice"))
    click = {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "serviceUrl": rig.connector.url,
        "channelId": "msteams",
        "from": {"id": alice.user_id, "aadObjectId": alice.aad},
        "recipient": {"id": BOT_ID},
        "conversation": {"id": "19:after@thread.tacv2", "conversationType": "channel"},
        "channelData": {"tenant": {"id": TENANT}},
        "value": {"action": {"type": "Action.Execute", "verb": "approve", "data": {"request_id": rig.request_id}}},
    }
    status, answer = await rig.post("/api/messages", json.dumps(click).encode(), {"Content-Type": "application/json"})
    assert status == 200 and "You approved this request." in answer, answer
    assert rig.state()[0] == initial[0] + 2  # approval.recorded, request.approved
    assert "unhandled error" not in rig.log.text(), rig.log.text()[-3000:]


async def authenticated_example(rig: Rig, body, authorization) -> None:
    status = await teams_example(rig, body, authorization)
    assert status in (400, 401, 415), status
    assert rig.connector.calls == []  # nothing was answered, looked up or posted
    assert rig.client.scard("ab:teams:convs") == 0  # and no conversation was remembered


async def test_unsigned_teams_activities_are_refused_when_an_app_id_is_set(authenticated_rig):
    rig = authenticated_rig
    initial = rig.state()
    await asyncio.to_thread(
        fuzz,
        asyncio.get_running_loop(),
        st.tuples(teams_bodies(), authorizations),
        lambda *a: authenticated_example(rig, *a),
    )
    await rig.quiet()
    assert rig.state() == initial
    rig.alive()
    async with rig.http.get(
        f"{rig.base}/v1/requests/{rig.request_id}", headers={"Authorization": f"Bearer {rig.agent}"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "pending"
    # Pinned: a bearer token that is not a JWT was a 500 (the SDK let PyJWT's error escape).
    for junk in ("Bearer junk", "Bearer x.y.z", f"Bearer {APP_PASSWORD}"):
        status, _ = await rig.post(
            "/api/messages",
            json.dumps(
                {
                    "type": "message",
                    "serviceUrl": rig.connector.url,
                    "channelId": "msteams",
                    "from": {"id": "29:x"},
                    "recipient": {"id": BOT_ID},
                    "conversation": {"id": "19:x"},
                }
            ).encode(),
            {"Content-Type": "application/json", "Authorization": junk},
        )
        assert status == 401, junk
    assert "unhandled error" not in rig.log.text(), rig.log.text()[-3000:]
    assert APP_PASSWORD not in rig.log.text()


# --- what the fuzz found, pinned -----------------------------------------------------------------


async def test_what_the_fuzz_found_stays_fixed(rig):
    """Each of these was a 5xx (or a three-second wait for a 404) before."""
    initial = rig.state()
    form = "application/x-www-form-urlencoded"

    async def slack(raw: bytes, mode: str = "valid", content_type: str = form) -> int:
        status, _ = await rig.post("/slack/events", raw, slack_headers(raw, content_type, mode, 0, "x"))
        return status

    assert await slack(b"\x80", mode="unsigned") == 401  # not UTF-8: parsed before the signature was checked
    assert await slack(b"\x80") == 401  # Slack signs UTF-8 text; these bytes cannot carry its signature
    assert await slack(b"payload={") == 400  # signed, not JSON
    assert await slack(b"{", content_type="application/json") == 400
    assert await slack(encoded_payload({"type": "block_actions", "user": {"id": "U0MALLORY"}, "actions": []})) == 400
    assert await slack(encoded_payload({"type": "block_actions", "user": [], "actions": [None]})) == 400
    assert await slack(b"payload=%7B%7D", mode="garbage") == 401  # a timestamp that is not a number
    # A stranger Slack will not let us DM: the click is still acknowledged, at once.
    click = {
        "type": "block_actions",
        "user": {"id": "U0NOBODY"},
        "trigger_id": "t",
        "response_url": RESPONSE_URL,
        "actions": [{"action_id": "approve", "value": rig.request_id}],
    }
    assert await slack(rig.fill_bytes(encoded_payload(click))) == 200

    async def teams(activity: dict) -> int:
        status, _ = await rig.post(
            "/api/messages", rig.fill_bytes(json.dumps(activity).encode()), {"Content-Type": "application/json"}
        )
        return status

    assert await teams({"type": "message"}) == 400  # nowhere to answer
    envelope = {
        "serviceUrl": CLOSED,
        "channelId": "msteams",
        "from": {"id": "29:mallory"},
        "recipient": {"id": BOT_ID},
        "conversation": {"id": "19:fuzz@thread.tacv2"},
        "channelData": {"tenant": {"id": TENANT}},  # an allowed tenant: other tenants get 403
    }
    started = time.monotonic()
    assert await teams({"type": "message", "text": "help", **envelope}) == 201  # the reply fails: logged
    assert time.monotonic() - started < 3  # our connector timeout and no hidden retries, not msrest's
    assert (
        await teams({"type": "invoke", "name": "composeExtension/query", **envelope, "serviceUrl": CONNECTOR}) == 400
    )  # an invoke the app never offered (was 501)
    await rig.quiet()
    assert rig.state() == initial
    assert "unhandled error" not in rig.log.text(), rig.log.text()[-3000:]


def encoded_payload(payload: dict) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()
