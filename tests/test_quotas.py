"""Per-agent quotas over HTTP against a real Redis/Valkey: at most N pending requests, a token-bucket
creation rate, 429 with Retry-After beyond them, one audit record per burst of refusals, and a
pending count that follows every transition (created, approved, denied, expired, cancelled).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from approvalbot.config import Settings
from approvalbot.core.policy import Policy
from approvalbot.runtime import Runtime
from approvalbot.store import keys
from approvalbot.store.requests import Quota
from tests.helpers import Api

POLICY = Policy.from_yaml(
    """
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
    approvers: [security]
"""
)


async def agent_id(api: Api) -> str:
    status, body = await api.ask(resource="probe")
    assert status == 201, body
    status, _ = await api.call("POST", f"/v1/requests/{body['id']}/cancel", api.agent_token)
    assert status == 200
    return str(body["agent_id"])


async def pending_of(api: Api, agent: str) -> int:
    return int(await api.service.redis.zcard(keys.agent_pending(agent)))


async def quota_records(api: Api) -> list[dict[str, object]]:
    return [r.as_dict() async for r in api.service.audit.records() if b'"quota.exceeded"' in r.body]


def test_settings_reach_the_service(rt: Runtime) -> None:
    assert Settings().max_pending_per_agent == 100 and Settings().agent_rate_limit == (10.0, 50)
    assert rt.service(rt.async_redis()).quota == Quota(max_pending=100, rate=10.0, burst=50)
    off = Runtime(
        settings=Settings(APPROVALBOT_AGENT_RATE="off", APPROVALBOT_MAX_PENDING_PER_AGENT=0),
        redis_url=rt.redis_url,
        policy=rt.policy,
    )
    assert not off.service(off.async_redis()).quota.active


async def test_pending_quota_counts_every_transition(api: Api) -> None:
    agent = await agent_id(api)
    api.service.quota = Quota(max_pending=3)
    made = []
    for i in range(3):
        status, body = await api.ask(resource=f"r{i}")
        assert status == 201, body
        made.append(body["id"])
    assert await pending_of(api, agent) == 3

    status, body, headers = await api.call("POST", "/v1/requests", api.agent_token, raw=True, json={"action": "x.y"})
    assert status == 429 and b'"quota_exceeded"' in body
    assert 1 <= int(headers["Retry-After"]) <= 60  # at the latest when the first pending one expires

    # Each way out of pending frees one slot: approve, deny, cancel, expire.
    exits = [
        lambda rid: api.decide(rid, api.approver_token),
        lambda rid: api.decide(rid, api.approver_token, "deny", "no"),
        lambda rid: api.call("POST", f"/v1/requests/{rid}/cancel", api.agent_token),
    ]
    for leave in exits:
        status, _ = await leave(made.pop(0))
        assert status == 200
        assert await pending_of(api, agent) == 2
        status, body = await api.ask(resource="again")
        assert status == 201, body
        made.append(body["id"])
    assert await pending_of(api, agent) == 3

    real_clock = api.service.clock
    api.service.clock = lambda: real_clock() + timedelta(days=2)
    assert await api.service.expire(made[0]) is not None
    api.service.clock = real_clock
    assert await pending_of(api, agent) == 2
    status, _ = await api.ask(resource="after expiry")
    assert status == 201


async def test_requests_settled_at_once_are_not_pending(api: Api) -> None:
    api.service.policy = POLICY
    agent = await agent_id(api)
    api.service.quota = Quota(max_pending=1)
    status, _ = await api.ask(resource="one")
    assert status == 201
    assert (await api.ask(resource="two"))[0] == 429
    for action in ("dataset.read", "db.drop"):  # allowed and denied at once: never pending
        status, body = await api.ask(action=action)
        assert status == 201 and body["status"] in ("approved", "denied"), body
    assert await pending_of(api, agent) == 1


async def test_an_idempotent_replay_never_counts(api: Api) -> None:
    api.service.quota = Quota(max_pending=1, rate=1.0, burst=1)
    headers = {"Idempotency-Key": "job-7"}
    body = {"action": "dataset.export", "resource": "s3://x"}
    first = await api.call("POST", "/v1/requests", api.agent_token, json=body, headers=dict(headers))
    assert first[0] == 201
    for _ in range(5):  # at the pending quota and out of tokens, yet the replay answers as before
        status, again = await api.call("POST", "/v1/requests", api.agent_token, json=body, headers=dict(headers))
        assert status == 200 and again["id"] == first[1]["id"]


async def test_rate_is_a_token_bucket_with_retry_after(api: Api) -> None:
    api.service.quota = Quota(rate=2.0, burst=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        *(api.call("POST", "/v1/requests", api.agent_token, raw=True, json={"action": "a.b"}) for _ in range(12))
    )
    elapsed = loop.time() - started
    created = [r for r in results if r[0] == 201]
    limited = [r for r in results if r[0] == 429]
    assert len(created) + len(limited) == 12
    assert 5 <= len(created) <= 5 + int(2 * elapsed) + 1  # the burst, plus what refilled meanwhile
    assert all(b'"rate_limited"' in body and int(h["Retry-After"]) >= 1 for _, body, h in limited)
    await asyncio.sleep(max(int(h["Retry-After"]) for _, _, h in limited) + 0.1)
    assert (await api.ask(resource="after the wait"))[0] == 201


async def test_refusals_are_audited_once_per_burst_and_other_agents_are_unaffected(api: Api) -> None:
    api.service.quota = Quota(max_pending=2, rate=1000.0, burst=4)
    for i in range(2):
        assert (await api.ask(resource=f"r{i}"))[0] == 201
    statuses = [(await api.ask(resource="more"))[0] for _ in range(6)]
    assert statuses == [429] * 6
    _, other = await api.service.identities.add_agent("other-bot", "owner@example.com")
    assert (await api.ask(other, resource="mine"))[0] == 201  # one agent's flood is its own problem

    records = await quota_records(api)
    assert len(records) == 1, records
    data = records[0]["data"]
    assert isinstance(data, dict)
    assert data["code"] == "quota_exceeded" and data["agent_name"] == "etl-bot" and data["limit"] == "2 pending"
    assert records[0]["hash"]  # sealed into the chain like every record

    api.service.quota = Quota(rate=0.001, burst=1)  # now a rate problem: a new kind, audited once too
    await api.ask(other, resource="uses the token")
    statuses = [(await api.ask(other, resource="x"))[0] for _ in range(4)]
    assert statuses == [429] * 4
    codes = sorted(str(r["data"]["code"]) for r in await quota_records(api))
    assert codes == ["quota_exceeded", "rate_limited"]
    stats = await api.service.redis.hgetall(keys.STATS)
    assert int(stats[b"refused:quota_exceeded"]) == 6 and int(stats[b"refused:rate_limited"]) == 4
