"""The agent and approver HTTP API against the real server and a real Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from approvalbot.core.policy import Policy

TWO_PERSON = Policy.from_yaml(
    """
rules:
  - name: iam-two-person
    match: {action: "iam.*"}
    effect: require_approval
    approvers: [security]
    min_approvals: 2
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


async def test_happy_path_agent_asks_approver_approves_agent_learns(api):
    status, req = await api.ask(
        resource="s3://exports/customers",
        params={"rows": 5000},
        justification="weekly report",
        context={"code_path": "etl/export.py:42"},
    )
    assert status == 201
    assert req["status"] == "pending"
    assert req["approvals_needed"] == 1
    assert req["policy"]["rule"] == "default"
    assert req["expires_at"] > req["created_at"]

    status, decided = await api.decide(req["id"], api.approver_token, "approve", "looks fine")
    assert status == 200
    assert decided["status"] == "approved"
    assert decided["decisions"][0]["approver"] == "alice@example.com"

    status, seen = await api.call("GET", f"/v1/requests/{req['id']}", api.agent_token)
    assert (status, seen["status"]) == (200, "approved")


async def test_deny_requires_reason_and_settles(api):
    _, req = await api.ask()
    status, err = await api.decide(req["id"], api.approver_token, "deny")
    assert status == 422 and err["error"]["code"] == "reason_required"
    status, denied = await api.decide(req["id"], api.approver_token, "deny", "not this week")
    assert (status, denied["status"], denied["outcome_reason"]) == (200, "denied", "not this week")
    status, err = await api.decide(req["id"], api.approver_token, "approve")
    assert (status, err["error"]["code"]) == (409, "not_pending")


async def test_owner_cannot_approve_own_agents_request(api):
    _, owner_token = await api.service.identities.add_approver("Owner@Example.com", ["security"])
    _, req = await api.ask()
    status, err = await api.decide(req["id"], owner_token)
    assert status == 403 and err["error"]["code"] == "self_approval"
    _, after = await api.call("GET", f"/v1/requests/{req['id']}", api.agent_token)
    assert after["status"] == "pending" and after["decisions"] == []
    records = [r.as_dict() for r in await api.service.audit.for_request(req["id"])]
    assert [r["type"] for r in records] == ["request.created", "self_approval.blocked"]
    assert records[1]["actor"]["email"] == "owner@example.com"


async def test_on_behalf_of_person_cannot_approve(api):
    _, bob_token = await api.service.identities.add_approver("bob@example.com", ["security"])
    _, req = await api.ask(on_behalf_of="BOB@example.com")
    status, err = await api.decide(req["id"], bob_token)
    assert status == 403 and err["error"]["code"] == "self_approval"


async def test_agent_token_can_never_decide(api):
    _, req = await api.ask()
    status, err = await api.decide(req["id"], api.agent_token)
    assert status == 403 and err["error"]["code"] == "forbidden"
    status, err = await api.call("GET", "/v1/requests?status=pending", api.agent_token)
    assert status == 403


async def test_approver_outside_named_groups_is_refused(api):
    api.service.policy = TWO_PERSON
    _, outsider = await api.service.identities.add_approver("carol@example.com", ["finance"])
    _, req = await api.ask(action="iam.role.attach")
    status, err = await api.decide(req["id"], outsider)
    assert status == 403 and err["error"]["code"] == "not_eligible"


async def test_two_person_rule_counts_each_human_once(api):
    api.service.policy = TWO_PERSON
    _, bob = await api.service.identities.add_approver("bob@example.com", ["security"])
    _, req = await api.ask(action="iam.role.attach", resource="arn:aws:iam::1:role/admin")
    assert req["approvals_needed"] == 2 and req["policy"]["min_approvals"] == 2

    status, first = await api.decide(req["id"], api.approver_token)
    assert (status, first["status"], first["approvals_needed"]) == (200, "pending", 1)
    # The same human again, even with a second token, does not count twice.
    _, alice_again = await api.service.identities.add_approver("alice@example.com", ["security"])
    status, err = await api.decide(req["id"], alice_again)
    assert (status, err["error"]["code"]) == (409, "already_decided")
    status, second = await api.decide(req["id"], bob)
    assert (status, second["status"]) == (200, "approved")
    assert {d["approver"] for d in second["decisions"]} == {"alice@example.com", "bob@example.com"}


async def test_allow_and_deny_policies_settle_at_once(api):
    api.service.policy = TWO_PERSON
    _, read = await api.ask(action="warehouse.read")
    assert read["status"] == "approved" and read["policy"]["effect"] == "allow"
    _, drop = await api.ask(action="db.drop")
    assert drop["status"] == "denied" and "nuke" in drop["outcome_reason"]


async def test_concurrent_approve_and_deny_have_exactly_one_outcome(api):
    tokens = [api.approver_token]
    for i in range(5):
        tokens.append((await api.service.identities.add_approver(f"r{i}@example.com", []))[1])
    for _ in range(15):
        _, req = await api.ask()
        calls = [api.decide(req["id"], t, "approve" if i % 2 else "deny", "race") for i, t in enumerate(tokens)]
        results = await asyncio.gather(*calls)
        winners = [body for status, body in results if status == 200]
        losers = [body for status, body in results if status != 200]
        assert len(winners) == 1, results
        assert all(b["error"]["code"] == "not_pending" for b in losers)
        _, final = await api.call("GET", f"/v1/requests/{req['id']}", api.agent_token)
        assert len(final["decisions"]) == 1
        assert final["status"] == winners[0]["status"]
        types = [r.as_dict()["type"] for r in await api.service.audit.for_request(req["id"])]
        assert sum(t in ("request.approved", "request.denied") for t in types) == 1


async def test_two_approvers_racing_for_last_approval(api):
    api.service.policy = TWO_PERSON
    ids = api.service.identities
    tokens = [api.approver_token] + [(await ids.add_approver(f"s{i}@example.com", ["security"]))[1] for i in range(3)]
    for _ in range(10):
        _, req = await api.ask(action="iam.key.rotate")
        results = await asyncio.gather(*(api.decide(req["id"], t) for t in tokens))
        ok = [b for s, b in results if s == 200]
        assert len(ok) == 2  # the first two count; the rest find it no longer pending
        _, final = await api.call("GET", f"/v1/requests/{req['id']}", api.agent_token)
        assert final["status"] == "approved" and len(final["decisions"]) == 2


async def test_idempotency_key_returns_the_same_request(api):
    headers = {"Idempotency-Key": "run-42-step-3"}
    body = {"action": "model.deploy", "resource": "prod"}
    results = await asyncio.gather(
        *(api.call("POST", "/v1/requests", api.agent_token, json=body, headers=dict(headers)) for _ in range(8))
    )
    ids = {b["id"] for _, b in results}
    assert len(ids) == 1
    assert sorted(s for s, _ in results) == [200] * 7 + [201]
    assert await api.service.redis.zcard("ab:pending") == 1
    # Same key, different body: refused rather than silently returning the other request.
    status, err = await api.call(
        "POST",
        "/v1/requests",
        api.agent_token,
        json={"action": "model.deploy", "resource": "staging"},
        headers=dict(headers),
    )
    assert (status, err["error"]["code"]) == (422, "idempotency_key_reused")
    # Another agent with the same key gets its own request.
    _, other = await api.service.identities.add_agent("other-bot", "someone@example.com")
    status, theirs = await api.call("POST", "/v1/requests", other, json=body, headers=dict(headers))
    assert status == 201 and theirs["id"] not in ids


async def test_long_poll_wakes_on_decision(api):
    _, req = await api.ask()

    async def waiter():
        started = time.monotonic()
        status, body = await api.call("GET", f"/v1/requests/{req['id']}?wait=30", api.agent_token)
        return status, body, time.monotonic() - started

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.3)
    assert not task.done()
    await api.decide(req["id"], api.approver_token, "approve")
    status, body, elapsed = await asyncio.wait_for(task, timeout=5)
    assert (status, body["status"]) == (200, "approved")
    assert elapsed < 5  # it returned because of the decision, not the 30 s timeout


async def test_long_poll_times_out_pending(api):
    _, req = await api.ask()
    status, body = await api.call("GET", f"/v1/requests/{req['id']}?wait=0.3", api.agent_token)
    assert (status, body["status"]) == (200, "pending")
    status, err = await api.call("GET", f"/v1/requests/{req['id']}?wait=61", api.agent_token)
    assert status == 422 and err["error"]["code"] == "invalid_query"


async def test_cancel_by_requesting_agent_only(api):
    _, req = await api.ask()
    _, other = await api.service.identities.add_agent("other-bot", "someone@example.com")
    status, _ = await api.call("POST", f"/v1/requests/{req['id']}/cancel", other)
    assert status == 404  # another agent cannot even see it
    status, cancelled = await api.call("POST", f"/v1/requests/{req['id']}/cancel", api.agent_token)
    assert (status, cancelled["status"]) == (200, "cancelled")
    status, err = await api.call("POST", f"/v1/requests/{req['id']}/cancel", api.agent_token)
    assert (status, err["error"]["code"]) == (409, "not_pending")
    status, _ = await api.decide(req["id"], api.approver_token)
    assert status == 409


async def test_cross_agent_read_is_not_found(api):
    _, req = await api.ask()
    _, other = await api.service.identities.add_agent("other-bot", "someone@example.com")
    status, err = await api.call("GET", f"/v1/requests/{req['id']}", other)
    assert (status, err["error"]["code"]) == (404, "not_found")
    status, _ = await api.call("GET", f"/v1/requests/{req['id']}", api.approver_token)
    assert status == 200


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


async def test_pending_list_oldest_first_paged_and_without_own_requests(api):
    created = []
    for i in range(7):
        _, req = await api.ask(resource=f"r{i}")
        created.append(req)
    # Oldest first: by creation time in milliseconds (the queue's score), then by id for requests
    # made within the same millisecond.
    ids = [r["id"] for r in sorted(created, key=lambda r: (_ms(r["created_at"]), r["id"]))]
    _, mine_token = await api.service.identities.add_agent("alice-bot", "alice@example.com")
    _, own = await api.ask(token=mine_token)  # alice's own agent: she may not decide it
    seen, cursor = [], None
    for _ in range(10):
        path = "/v1/requests?status=pending&limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path, api.approver_token)
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    assert own["id"] not in seen
    status, _ = await api.call("GET", "/v1/requests?cursor=%%%", api.approver_token)
    assert status == 422


async def test_expiry_with_no_traffic_wakes_the_waiting_agent(api, rt):
    from datetime import UTC, datetime, timedelta

    from rq import Queue

    from approvalbot.jobs.ticker import Ticker

    _, req = await api.ask(expires_in=10)
    waiting = asyncio.create_task(api.call("GET", f"/v1/requests/{req['id']}?wait=20", api.agent_token))
    ticker = Ticker(api.service, Queue("t", connection=rt.sync_redis()), [], interval=0.05)
    stop = asyncio.Event()
    run = asyncio.create_task(ticker.run(stop))
    try:
        await asyncio.sleep(0.3)
        assert not waiting.done()  # not due yet: the ticker leaves it alone
        api.service.clock = lambda: datetime.now(UTC) + timedelta(seconds=11)
        status, body = await asyncio.wait_for(waiting, timeout=5)
        assert (status, body["status"]) == (200, "expired")
        types = [r.as_dict()["type"] for r in await api.service.audit.for_request(req["id"])]
        assert types == ["request.created", "request.expired"]
        assert await api.service.redis.zcard("ab:expiry") == 0
    finally:
        stop.set()
        await run


async def test_group_added_later_applies_to_existing_tokens(api):
    api.service.policy = TWO_PERSON
    ids = api.service.identities
    _, carol = await ids.add_approver("carol@example.com", ["finance"])
    _, req = await api.ask(action="iam.role.attach")
    status, _ = await api.decide(req["id"], carol)
    assert status == 403
    await ids.add_approver("carol@example.com", ["security"])  # issues a second token too
    status, body = await api.decide(req["id"], carol)
    assert status == 200 and body["approvals_needed"] == 1


async def test_burst_beyond_the_connection_pool_queues_instead_of_failing(api):
    api.service.quota = None  # this is about the pool; the per-agent quotas are tested in test_quotas.py
    results = await asyncio.gather(*(api.ask(resource=f"r{i}") for i in range(200)))
    assert [s for s, _ in results] == [201] * 200
    assert await api.service.redis.zcard("ab:pending") == 200
    # 200 request records after the fixture's two person.added records (owner, alice)
    assert await api.service.audit.sealed() == await api.service.audit.length() == 202
