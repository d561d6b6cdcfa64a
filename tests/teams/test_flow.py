"""End to end against the fake connector: install, proactive card, Approve, updates, reply chain."""

from __future__ import annotations

import asyncio
import json

from approvalbot.store import replication
from approvalbot.teams import references
from approvalbot.teams.cards import CONTENT_TYPE

from .conftest import TENANT, new_conversation


def texts(card) -> list[str]:
    """Every string shown by a card (TextBlock text and TextRun text), in order."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") in ("TextBlock", "TextRun") and "text" in node:
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return out


def actions_of(card) -> list[str]:
    return [a.get("verb") or a.get("title") for a in card.get("actions", [])]


async def test_full_flow_card_approve_update_reply_chain_long_poll(teams, people, card_validator):
    channel = new_conversation("approvals")
    status, _ = await teams.add_bot(channel, name="approvals", by=people["alice"])
    assert status in (200, 201)
    stored = await references.ReferenceStore(teams.service.redis).all()
    assert [(r.id, r.kind, r.name, r.team, r.tenant_id) for r in stored] == [
        (channel, "channel", "approvals", "Platform", TENANT)
    ]
    await teams.service.identities.add_approver("alice@example.com", ["security"])

    created = await teams.ask(
        resource="s3://exports/customers",
        params={"rows": 5000, "pii": True},
        justification="weekly report",
        context={
            "code_path": "etl/export.py:42",
            "run_url": "https://ci.example.com/r/7",
            "model": "gpt-x",
            "impact": "read-only export",
        },
    )
    waiter = asyncio.create_task(teams.call("GET", f"/v1/requests/{created['id']}?wait=30", teams.agent_token))

    await teams.run_jobs()
    posted = teams.fake.cards("create", channel)
    assert len(posted) == 1, "exactly one card posted proactively"
    card = posted[0]
    shown = texts(card)
    for expected in (
        "dataset.export",
        "s3://exports/customers",
        "weekly report",
        "etl-bot",
        "owner@example.com",
        "etl/export.py:42",
        "https://ci.example.com/r/7",
        "gpt-x",
        "read-only export",
        "default",
        "0 of 1",
    ):
        assert any(expected in t for t in shown), expected
    assert actions_of(card) == ["approve", "Deny\u2026"]
    assert card["refresh"]["action"]["verb"] == "refresh"
    replies = [c for c in teams.fake.ok("reply") if c.conversation == channel and c.activity_id]
    assert [c.activity_id for c in replies] == [teams.fake.root(channel)]
    assert texts(teams.fake.cards("reply", channel)[0])[0] == "#3"  # after two person.added records

    # Alice clicks Approve in the channel; the invoke answer is her updated card.
    status, answer = await teams.click(people["alice"], channel, "approve", created["id"], reason="ticket DATA-311")
    assert status == 200
    assert answer["statusCode"] == 200 and answer["type"] == CONTENT_TYPE
    assert "You approved this request." in texts(answer["value"])
    assert any("Outcome: Approved" in t for t in texts(answer["value"]))
    assert "actions" not in answer["value"]

    # The agent's long-poll returns at once with the outcome.
    status, final = await asyncio.wait_for(waiter, timeout=5)
    assert (status, final["status"]) == (200, "approved")
    assert final["decisions"][0]["approver"] == "alice@example.com"
    assert final["decisions"][0]["channel"] == "teams"

    # The channel's card is updated for everyone, and the reply chain mirrors the audit log in order.
    await teams.run_jobs()
    updates = [c for c in teams.fake.ok("update") if c.conversation == channel]
    assert len(updates) == 1 and updates[0].activity_id == teams.fake.root(channel)
    updated = teams.fake.cards("update", channel)[-1]
    assert any("Outcome: Approved" in t for t in texts(updated)) and "actions" not in updated
    assert any("ticket DATA-311" in t for t in texts(updated))

    records = [r.as_dict() for r in await teams.service.audit.for_request(created["id"])]
    assert [r["type"] for r in records] == ["request.created", "approval.recorded", "request.approved"]
    chain = teams.fake.cards("reply", channel)
    assert [texts(c)[0] for c in chain] == [f"#{r['seq']}" for r in records]
    for card_json, record in zip(chain, records, strict=True):
        assert f"hash {record['hash'][:12]}" in texts(card_json)
    assert all(
        c.activity_id == teams.fake.root(channel)
        for c in teams.fake.ok("reply")
        if c.conversation == channel and c.activity_id
    )
    actor = records[1]["actor"]
    assert (actor["email"], actor["channel"], actor["channel_user"]) == ("alice@example.com", "teams", "aad-alice")

    # Running the jobs again changes nothing: posted once, mirrored once.
    before = len(teams.fake.calls)
    await teams.run_jobs()
    assert len(teams.fake.calls) == before

    for produced in [*teams.fake.all_cards(), answer["value"]]:
        assert not list(card_validator.iter_errors(produced))


async def test_decision_from_the_api_updates_the_teams_card(teams, people):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    _, token = await teams.service.identities.add_approver("bob@example.com", [])
    created = await teams.ask()
    await teams.run_jobs()
    assert len(teams.fake.cards("create", channel)) == 1
    status, body = await teams.call(
        "POST", f"/v1/requests/{created['id']}/decisions", token, json={"decision": "deny", "reason": "not this week"}
    )
    assert (status, body["status"]) == (200, "denied")
    await teams.run_jobs()
    updated = teams.fake.cards("update", channel)
    assert len(updated) == 1
    assert any("Outcome: Denied" in t for t in texts(updated[0]))
    assert any("not this week" in t for t in texts(updated[0]))
    assert json.dumps(updated[0]).count("Action.Execute") == 0


async def test_a_decision_the_replicas_do_not_confirm_asks_to_try_again(teams, people):
    """APPROVALBOT_MIN_REPLICAS not met in time (the API's 503): the card says to try again, not an error."""
    await teams.service.identities.add_approver("alice@example.com", ["security"])
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    replication.configure(1, 50)  # the test Redis has no replica: WAIT never confirms
    try:
        # Alice's first click links her Teams identity: that change is not confirmed either.
        status, first = await teams.click(people["alice"], channel, "approve", created["id"])
        assert status == 200 and first["statusCode"] == 200
        assert any("could not confirm that this was stored safely" in t for t in texts(first["value"]))
        replication.configure(0, 500)
        await teams.click(people["alice"], channel, "refresh", created["id"])  # linked now
        replication.configure(1, 50)
        status, answer = await teams.click(people["alice"], channel, "approve", created["id"])
    finally:
        replication.configure(0, 500)
    assert status == 200 and answer["statusCode"] == 200
    shown = texts(answer["value"])
    assert any("could not confirm that this was stored safely" in t for t in shown), shown
    assert not any("You approved this request." in t for t in shown)
