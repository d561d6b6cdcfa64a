"""No leaks by construction (issue 13): generated secrets and personal data, put anywhere in a request,
never reach a person who may not see them.

One server with Slack AND Teams on (the fake Slack and the fake Bot Framework connector over real
HTTP), the real worker jobs, the real API. Hypothesis generates values of every kind the detectors
know (cloud and GitHub keys, e-mail addresses, Luhn-valid card numbers, IBANs, phone numbers) and
values only the policy's `sensitive:` path can catch, and puts each in a random place: a top-level
or nested param, a list item, context, the justification, the resource. After intake, delivery, a
decision and delivery again, none of them may appear in

* any body sent to the Slack or Teams fakes (cards, updates, thread replies);
* any API answer to an approver (the request, the pending list, the decision's answer), with every
  JWT in them decoded: a token is base64, not encryption;
* the audit export (JSON lines and CSV);
* any log record (message and arguments) of the whole run;

while the agent reads its exact values back and its grant verifies against them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue

from approvalbot.app import build_app, subscribers
from approvalbot.audit.grants import verify_grant
from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.jobs.outbox import Outbox
from approvalbot.web.context import SERVICES
from tests.helpers import Api, drain, queued
from tests.slack.conftest import SIGNING_SECRET
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.teams.conftest import TENANT, FakeConnector, Person, Teams, new_conversation

POLICY = """
rules:
  - name: everything
    match: {action: "*"}
    effect: require_approval
    approvers: [security]
    sensitive: ["*memo*", "context.memo"]
"""
SLACK_CHANNEL = "C0APPROVALS"
JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


@pytest.fixture
def policy() -> Policy:
    return Policy.from_yaml(POLICY)


@pytest.fixture
def settings_both(monkeypatch, redis_url, data_dir, fake_slack) -> Settings:
    """Slack and Teams both on; jobs read settings from the environment, as the worker does."""
    env = {
        "REDIS_URL": redis_url,
        "APPROVALBOT_DATA_DIR": str(data_dir),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": "#approvals",
        "SLACK_API_URL": fake_slack.api_url,
        "APPROVALBOT_TEAMS_DEV": "1",
        "APPROVALBOT_TEAMS_TENANTS": TENANT,
    }
    for name in ("SLACK_APP_TOKEN", "MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(
        REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, APPROVALBOT_TEAMS_DEV=True, APPROVALBOT_TEAMS_TENANTS=TENANT
    )


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    users = {"U0ALICE": "alice@example.com", "U0OWNER": "owner@example.com"}  # the owner gets a DM
    fake = FakeSlack(users=users, channels={"approvals": SLACK_CHANNEL})
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    fake = FakeConnector()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    fake.url = str(server.make_url("/"))
    yield fake
    await server.close()


@dataclass
class Rig:
    api: Api
    teams: Teams
    slack: FakeSlack
    connector: FakeConnector
    queue: Queue
    outbox: Outbox
    teams_channel: str

    async def run_jobs(self) -> None:
        """Every channel's delivery jobs (one outbox with all subscribers), until nothing is left."""
        for _ in range(20):
            while await self.outbox.dispatch():
                pass
            if not queued(self.queue):
                return
            await drain(self.queue)
        raise AssertionError("jobs kept producing work")


@pytest.fixture
async def rig(settings_both, rt, redis, redis_url, fake_slack, connector) -> AsyncIterator[Rig]:
    rt.settings = settings_both
    service = rt.service(redis)
    app = build_app(settings_both, service)
    assert {"slack", "teams"} <= set(app[SERVICES].extras)  # both channels mounted
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    sync = sync_redis.Redis.from_url(redis_url)
    queue = Queue(settings_both.queue_name, connection=sync)
    async with aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        api = Api(base=base, http=http, service=service)
        teams = Teams(base=base, http=http, service=service, fake=connector, settings=settings_both, sync=sync)
        _, api.agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
        _, api.approver_token = await service.identities.add_approver("alice@example.com", ["security"])
        alice = connector.add(Person("29:alice", "aad-alice", "alice@example.com", "Alice"))
        channel = new_conversation("approvals")
        await teams.add_bot(channel, name="approvals", by=alice)
        yield Rig(api, teams, fake_slack, connector, queue, Outbox(redis, queue, subscribers(settings_both)), channel)
    sync.close()
    await server.close()


# --- generated secrets and personal data ------------------------------------------------------------

UPPER_DIGITS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits


def luhn(digits: str) -> str:
    """`digits` with the check digit that makes the whole number pass the Luhn check."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return digits + str((10 - total % 10) % 10)


def iban(bban: str, country: str = "DE") -> str:
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def text(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size)


@st.composite
def secrets_(draw) -> tuple[str, tuple[str, ...]]:
    """(value, needles): the value to plant and the substrings of it that must never show."""
    kind = draw(st.sampled_from(["aws", "github", "email", "card", "iban", "phone", "memo"]))
    if kind == "aws":
        value = "AKIA" + draw(text(UPPER_DIGITS, 16))
    elif kind == "github":
        value = "ghp_" + draw(text(ALNUM, 36))
    elif kind == "email":
        local = draw(text(string.ascii_lowercase, draw(st.integers(2, 10)))) + str(draw(st.integers(0, 99)))
        domain = draw(text(string.ascii_lowercase, draw(st.integers(3, 10))))
        value = f"{local}@{domain}{draw(st.sampled_from(['.com', '.org', '.io', '.de']))}"
    elif kind == "card":
        digits = luhn("4" + draw(text(string.digits, 14)))
        spaced = " ".join(digits[i : i + 4] for i in range(0, 16, 4))
        return (spaced if draw(st.booleans()) else digits), (digits, spaced)
    elif kind == "iban":
        value = iban(draw(text(string.digits, 18)))
    elif kind == "phone":
        value = "+" + draw(st.sampled_from(["44", "49", "33"])) + draw(text(string.digits, draw(st.integers(9, 10))))
    else:  # nothing any detector finds: only the policy's `sensitive: ["*memo*"]` path hides it
        value = "memo-" + draw(text(string.ascii_lowercase, 12))
        return value, (value,)
    return value, (value,)


WORDS = st.sampled_from(["rows", "target", "notes", "owner", "config", "db"])


@st.composite
def planted(draw) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A request with one generated value somewhere, and the needles that must not show."""
    value, needles = draw(secrets_())
    memo = value.startswith("memo-")
    places = ["param", "nested", "list", "context"]  # where a policy path can name it
    where = draw(st.sampled_from(places if memo else [*places, "justification", "resource"]))
    framed = draw(st.sampled_from(["{}", "see: {} now", "x={};"])).format(value)
    body: dict[str, Any] = {"action": "dataset.export", "params": {"rows": draw(st.integers(0, 10**6))}}
    key = "memo" if memo else draw(WORDS)
    if where == "param":
        body["params"][key] = framed
    elif where == "nested":
        body["params"]["config"] = {draw(WORDS): {key: [1, framed]}}
    elif where == "list":
        body["params"][key] = ["a", framed]
    elif where == "context":
        body["context"] = {key: framed}
    elif where == "justification":
        body["justification"] = f"because {framed} needs it"
    else:
        body["resource"] = f"vault://kv/{value}"
    return body, needles


def readable(text: str) -> str:
    """`text` plus the decoded parts of every JWT in it: what anyone holding the text can read."""
    parts = [text]
    for token in JWT.findall(text):
        for part in token.split(".")[:2]:
            parts.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode(errors="replace"))
    return "\n".join(parts)


def found(needles: tuple[str, ...], *texts: str) -> list[str]:
    seen = readable("\n".join(texts))
    return [n for n in needles if n in seen]


async def test_property_no_generated_secret_reaches_chat_approvers_the_audit_export_or_logs(rig, caplog):
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    api = rig.api
    planted_needles: list[str] = []
    _, keys_doc = await api.call("GET", "/v1/keys")

    async def one(body: dict[str, Any], needles: tuple[str, ...]) -> None:
        status, created = await api.ask(**body)
        assert status == 201, created
        rid = created["id"]
        assert created["params"] == body["params"]  # the agent's own answer: exact
        await rig.run_jobs()
        answers: list[str] = []
        for path in (f"/v1/requests/{rid}", "/v1/requests?status=pending"):
            status, raw, _ = await api.call("GET", path, api.approver_token, raw=True)
            assert status == 200
            answers.append(raw.decode())
        decision = {"decision": "approve", "reason": "fine"}
        status, raw, _ = await api.call(
            "POST", f"/v1/requests/{rid}/decisions", api.approver_token, raw=True, json=decision
        )
        assert status == 200, raw
        answers.append(raw.decode())
        status, raw, _ = await api.call("GET", f"/v1/requests/{rid}", api.approver_token, raw=True)
        answers.append(raw.decode())
        await rig.run_jobs()

        slack_cards = [c for c in rig.slack.calls if c.method in ("chat.postMessage", "chat.update")]
        teams_cards = [c for c in rig.connector.calls if c.kind in ("create", "update")]
        assert any(rid in json.dumps(c.args) for c in slack_cards), "the request reached Slack"
        assert any(rid in json.dumps(c.body) for c in teams_cards), "the request reached Teams"
        assert not [c for c in rig.slack.calls if c.failed], "every Slack call went through (the owner's DM too)"
        slack_sent = json.dumps([{"method": c.method, **c.args} for c in rig.slack.calls] + rig.slack.responses)
        teams_sent = json.dumps([c.body for c in rig.connector.calls])
        assert found(needles, slack_sent) == [], ("slack", body)
        assert found(needles, teams_sent) == [], ("teams", body)
        assert found(needles, *answers) == [], ("approver answers", body)
        for fmt in ("jsonl", "csv"):
            status, raw, _ = await api.call("GET", f"/v1/audit?format={fmt}", api.approver_token, raw=True)
            assert status == 200 and found(needles, raw.decode()) == [], (fmt, body)

        # The agent gets its exact values back, and its grant binds them.
        _, mine = await api.call("GET", f"/v1/requests/{rid}", api.agent_token)
        assert mine["params"] == body["params"] and mine.get("resource") == body.get("resource")
        verify_grant(mine["grant"], json.dumps(keys_doc), "dataset.export", body.get("resource"), body["params"])
        assert found(needles, json.dumps(mine)) != []  # the needles are there to be found where allowed
        planted_needles.extend(needles)

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(planted())
    def example(drawn: tuple[dict[str, Any], tuple[str, ...]]) -> None:
        asyncio.run_coroutine_threadsafe(one(*drawn), loop).result(timeout=120)

    await asyncio.to_thread(example)
    assert len(planted_needles) >= 10  # the examples ran, each through intake, both channels and a decision
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert caplog.records and found(tuple(planted_needles), logged) == []
