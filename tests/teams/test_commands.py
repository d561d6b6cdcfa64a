"""Messages to the bot: `pending` and `approval ID`, with the @mention stripped."""

from __future__ import annotations

from .conftest import new_conversation
from .test_flow import texts


def replies_in(teams, conversation: str, since: int):
    return [
        c
        for c in teams.fake.calls[since:]
        if c.kind in ("reply", "create") and c.conversation == conversation and c.status < 300
    ]


def reply_cards(calls):
    return [a["content"] for c in calls for a in (c.body.get("attachments") or [])]


def private_cards(teams, person, channel: str, since: int):
    """Said in a channel: the answer's cards in the person's 1:1 chat; the channel only gets a note."""
    in_channel = replies_in(teams, channel, since)
    assert reply_cards(in_channel) == []
    assert [c.body.get("text") for c in in_channel] == [
        next(c.body["text"] for c in in_channel if "1:1 chat" in (c.body.get("text") or ""))
    ]
    return reply_cards(replies_in(teams, teams.fake.personal[person.user_id], since))


async def test_pending_lists_what_the_caller_may_decide(teams, people, card_validator):
    await teams.service.identities.add_approver("alice@example.com", [])
    _, mine = await teams.service.identities.add_agent("alice-bot", "alice@example.com")
    decidable = [await teams.ask(resource="one"), await teams.ask(resource="two")]
    await teams.ask(token=mine, resource="alice's own")  # never in her queue
    chat = "a:personal-alice"
    since = len(teams.fake.calls)
    status, _ = await teams.say(people["alice"], chat, "pending", kind="personal")
    assert status in (200, 201)
    cards = reply_cards(replies_in(teams, chat, since))
    ids = [c["refresh"]["action"]["data"]["request_id"] for c in cards]
    assert ids == [r["id"] for r in decidable]
    assert all([a.get("verb") or a["title"] for a in c["actions"]] == ["approve", "Deny\u2026"] for c in cards)
    assert all(c["refresh"]["userIds"][0] == "29:alice" for c in cards)
    for card in cards:
        assert not list(card_validator.iter_errors(card))

    # Approving from the personal copy decides the request for everyone.
    status, answer = await teams.click(people["alice"], chat, "approve", ids[0], kind="personal")
    assert any("You approved this request." in t for t in texts(answer["value"]))
    _, final = await teams.call("GET", f"/v1/requests/{ids[0]}", teams.agent_token)
    assert final["status"] == "approved"


async def test_pending_for_someone_who_is_not_an_approver(teams, people):
    channel = new_conversation("approvals")
    since = len(teams.fake.calls)
    await teams.say(people["mallory"], channel, "pending")
    cards = private_cards(teams, people["mallory"], channel, since)
    assert len(cards) == 1
    shown = texts(cards[0])
    # Mallory's account address names no person: not linked, and told what an admin would run.
    assert "Your Teams account is not linked to a registered person." in shown
    assert any(
        "mallory@example.com" in t and "approvalbot people link EMAIL --teams tenant-1/aad-mallory" in t for t in shown
    )


async def test_pending_with_nothing_waiting(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    since = len(teams.fake.calls)
    await teams.say(people["alice"], "a:personal-alice", "PENDING", kind="personal")
    cards = reply_cards(replies_in(teams, "a:personal-alice", since))
    assert texts(cards[0]) == ["Nothing is waiting for your decision."]


async def test_approval_id_shows_the_request_and_its_audit_trail(teams, people, card_validator):
    await teams.service.identities.add_approver("alice@example.com", [])
    _, bob = await teams.service.identities.add_approver("bob@example.com", [])
    created = await teams.ask(justification="quarterly report")
    await teams.call("POST", f"/v1/requests/{created['id']}/decisions", bob, json={"decision": "approve"})
    channel = new_conversation("approvals")
    since = len(teams.fake.calls)
    await teams.say(people["alice"], channel, f"approval {created['id']}")
    cards = private_cards(teams, people["alice"], channel, since)
    assert len(cards) == 2
    assert any("quarterly report" in t for t in texts(cards[0]))
    assert any("Outcome: Approved" in t for t in texts(cards[0]))
    records = [r.as_dict() for r in await teams.service.audit.for_request(created["id"])]
    trail = texts(cards[1])
    for record in records:
        assert f"#{record['seq']} " in trail
        assert any(record["hash"][:12] in t for t in trail)
    for card in cards:
        assert not list(card_validator.iter_errors(card))


async def test_approval_of_an_unknown_or_invisible_id(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    created = await teams.ask()
    channel = new_conversation("approvals")
    for person, text in (
        (people["alice"], "approval req_doesnotexistxyza"),
        (people["mallory"], f"approval {created['id']}"),
    ):
        since = len(teams.fake.calls)
        await teams.say(person, channel, text)
        cards = private_cards(teams, person, channel, since)
        assert texts(cards[0]) == ["No request with that id is visible to you."]
    since = len(teams.fake.calls)
    await teams.say(people["alice"], channel, "approval <at>evil</at>; drop")
    assert texts(private_cards(teams, people["alice"], channel, since)[0])[0] == "That is not a request id."


async def test_anything_else_gets_help(teams, people):
    channel = new_conversation("approvals")
    since = len(teams.fake.calls)
    await teams.say(people["alice"], channel, "what can you do?")
    shown = texts(reply_cards(replies_in(teams, channel, since))[0])
    assert shown[0] == "approvalbot commands" and any(t.startswith("pending") for t in shown)


async def test_deny_without_reason_is_refused_server_side(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    channel = new_conversation("approvals")
    created = await teams.ask()
    status, answer = await teams.click(people["alice"], channel, "deny", created["id"], deny_reason="   ")
    assert status == 200
    assert "A reason is required to deny." in texts(answer["value"])
    assert [a.get("verb") or a["title"] for a in answer["value"]["actions"]] == ["approve", "Deny\u2026"]
    assert [r.as_dict()["type"] for r in await teams.service.audit.for_request(created["id"])] == ["request.created"]


async def test_refresh_gives_each_viewer_their_own_view(teams, people):
    await teams.service.identities.add_approver("alice@example.com", [])
    channel = new_conversation("approvals")
    created = await teams.ask()
    _, for_alice = await teams.click(people["alice"], channel, "refresh", created["id"])
    _, for_owner = await teams.click(people["owner"], channel, "refresh", created["id"])
    assert "actions" in for_alice["value"] and "actions" not in for_owner["value"]
    assert any("your own request" in t for t in texts(for_owner["value"]))
    assert set(for_owner["value"]["refresh"]["userIds"]) == {"29:alice", "29:owner"}
    assert [r.as_dict()["type"] for r in await teams.service.audit.for_request(created["id"])] == ["request.created"]


async def test_bad_invokes_get_an_error_answer(teams, people):
    channel = new_conversation("approvals")
    status, answer = await teams.click(people["alice"], channel, "launch", "req_abc")
    assert status == 200 and answer["statusCode"] == 400 and answer["type"] == "application/vnd.microsoft.error"
    status, answer = await teams.click(people["alice"], channel, "approve", "../../etc")
    assert status == 200 and answer["statusCode"] == 400
    for junk in ({"type": 5}, {"text": "hi"}, [1, 2]):
        status, body = await teams.post(junk)
        assert status == 400 and body["error"]["code"] == "invalid_activity"
    async with teams.http.post(
        teams.base + "/api/messages", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
