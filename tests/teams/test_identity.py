"""One person is one identity (the email) across Teams, Slack and the API; self-approval is refused."""

from __future__ import annotations

import json

from approvalbot.core.policy import Policy
from approvalbot.teams.identity import member_key

from .conftest import TENANT, Person, new_conversation
from .test_flow import texts

TWO_PERSON = Policy.from_yaml(
    """
rules:
  - name: two-person
    match: {action: "*"}
    effect: require_approval
    approvers: [security]
    min_approvals: 2
"""
)


async def audit_types(teams, request_id):
    return [r.as_dict() for r in await teams.service.audit.for_request(request_id)]


async def test_owner_cannot_approve_in_teams_a_request_shown_to_them(teams, people, card_validator):
    # The owner is registered by email (as Slack or the API would resolve them); Teams resolves their
    # AAD account to the same email (the fake answers "Owner@Example.com").
    await teams.service.identities.add_approver("owner@example.com", ["security"])
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    await teams.run_jobs()

    status, answer = await teams.click(people["owner"], channel, "approve", created["id"])
    assert status == 200 and answer["statusCode"] == 200
    shown = texts(answer["value"])
    assert any("cannot approve or deny your own request" in t for t in shown)
    assert "actions" not in answer["value"]  # no buttons for the owner
    assert not list(card_validator.iter_errors(answer["value"]))

    _, after = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
    assert after["status"] == "pending" and after["decisions"] == []
    records = await audit_types(teams, created["id"])
    assert [r["type"] for r in records] == ["request.created", "self_approval.blocked"]
    blocked = records[1]["actor"]
    assert (blocked["email"], blocked["channel"], blocked["channel_user"]) == (
        "owner@example.com",
        "teams",
        "aad-owner",
    )
    assert records[1]["data"]["attempted"] == "approve"

    # The blocked attempt is mirrored in the channel's reply chain too.
    await teams.run_jobs()
    chain = [texts(c) for c in teams.fake.cards("reply", channel)]
    # audit seqs: #1, #2 are person.added (owner, approver), #4 person.linked (the owner's Teams identity)
    assert [c[0] for c in chain] == ["#3", "#5"]
    assert any("Self-approval blocked" in t for t in chain[1])


async def test_owner_who_is_not_an_approver_is_still_refused_as_self_approval(teams, people):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    status, answer = await teams.click(people["owner"], channel, "deny", created["id"], deny_reason="mine")
    assert status == 200
    assert any("your own request" in t for t in texts(answer["value"]))
    assert [r["type"] for r in await audit_types(teams, created["id"])] == ["request.created", "self_approval.blocked"]


async def test_same_email_in_api_and_teams_is_one_person(teams, people):
    """Alice approves through the API, then clicks in Teams: the core sees the same human."""
    teams.service.policy = TWO_PERSON
    _, alice_token = await teams.service.identities.add_approver("alice@example.com", ["security"])
    await teams.service.identities.add_approver("bob@example.com", ["security"])
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask(action="iam.role.attach")
    status, body = await teams.call(
        "POST", f"/v1/requests/{created['id']}/decisions", alice_token, json={"decision": "approve"}
    )
    assert (status, body["status"], body["approvals_needed"]) == (200, "pending", 1)

    status, answer = await teams.click(people["alice"], channel, "approve", created["id"])
    assert any("already decided" in t for t in texts(answer["value"]))
    _, still = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
    assert still["status"] == "pending" and len(still["decisions"]) == 1

    status, answer = await teams.click(people["bob"], channel, "approve", created["id"], reason="second pair of eyes")
    assert any("You approved this request." in t for t in texts(answer["value"]))
    _, done = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
    assert done["status"] == "approved"
    assert [(d["approver"], d["channel"]) for d in done["decisions"]] == [
        ("alice@example.com", "api"),
        ("bob@example.com", "teams"),
    ]


async def test_names_and_emails_in_the_payload_are_never_trusted(teams, people):
    """Mallory's activity claims Alice's name; the connector says who Mallory is."""
    await teams.service.identities.add_approver("alice@example.com", [])
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    activity = teams.activity(
        "invoke",
        people["mallory"],
        channel,
        name="adaptiveCard/action",
        value={
            "action": {
                "type": "Action.Execute",
                "verb": "approve",
                "data": {"request_id": created["id"], "email": "alice@example.com"},
            }
        },
    )
    activity["from"].update(name="alice@example.com", email="alice@example.com")
    status, answer = await teams.post(activity)
    assert status == 200
    shown = texts(answer["value"])
    assert "Your Teams account is not linked to a registered person." in shown
    assert any("mallory@example.com" in t for t in shown)
    assert not any("alice" in t for t in shown)  # and nothing of the request: Mallory may not view it
    _, after = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
    assert after["status"] == "pending"


async def test_unknown_teams_user_cannot_decide(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    created = await teams.ask()
    ghost = Person("29:ghost", "aad-ghost", "ghost@example.com", "alice@example.com")  # not in the fake
    status, answer = await teams.click(ghost, channel, "approve", created["id"])
    assert status == 200
    assert any("could not confirm who you are" in t for t in texts(answer["value"]))
    _, after = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
    assert after["status"] == "pending" and after["decisions"] == []


async def test_member_lookups_are_cached_and_a_linked_identity_survives_an_outage(teams, people):
    """The connector answer is cached (at most a minute); once linked, the identity needs no connector."""
    await teams.service.identities.add_approver("alice@example.com", [])
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    first = await teams.ask()
    second = await teams.ask()
    await teams.click(people["alice"], channel, "refresh", first["id"])
    await teams.click(people["alice"], channel, "refresh", second["id"])
    assert len(teams.fake.ok("member")) == 1  # the second click used the cache
    cached = await teams.service.redis.get(member_key(TENANT, "aad-alice"))
    assert b"alice@example.com" in cached

    # Make the cache stale, then break the connector: Alice's identity is linked, so she is still Alice.
    data = json.loads(cached)
    data["at"] = 0
    await teams.service.redis.set(member_key(TENANT, "aad-alice"), json.dumps(data))
    teams.fake.fail_next(1, 500, kinds=("member",))
    status, answer = await teams.click(people["alice"], channel, "approve", first["id"])
    assert status == 200 and any("You approved" in t for t in texts(answer["value"]))
    assert [c.status for c in teams.fake.calls if c.kind == "member"] == [200, 500]
