"""Deciding in Slack: click, modal, decision, card update, thread and DM, against the fake Slack."""

from __future__ import annotations

import asyncio
import json
import time

from approvalbot.slack.client import METHOD_SCOPES
from approvalbot.store import replication
from tests.helpers import eventually
from tests.slack.conftest import CHANNEL, sign


def _actions(blocks):
    return [b for b in blocks if b["type"] == "actions"]


def _texts(blocks) -> str:
    return json.dumps(blocks)


async def test_full_flow_from_agent_request_to_unblocked_agent(slack):
    status, req = await slack.api.ask(
        action="dataset.export",
        resource="s3://exports/customers",
        params={"rows": 5000},
        justification="weekly report",
        context={"code_path": "etl/export.py:42", "model": "gpt-x"},
    )
    assert status == 201
    waiting = asyncio.create_task(slack.api.call("GET", f"/v1/requests/{req['id']}?wait=30", slack.api.agent_token))

    await slack.run_jobs()
    card = slack.card_for(req["id"])
    assert card["metadata"] == {"event_type": "approvalbot_request", "event_payload": {"request_id": req["id"]}}
    assert [b["action_id"] for b in _actions(card["blocks"])[0]["elements"]] == ["approve", "deny"]
    assert {e["value"] for e in _actions(card["blocks"])[0]["elements"]} == {req["id"]}
    assert "s3://exports/customers" in _texts(card["blocks"]) and "0 of 1" in _texts(card["blocks"])
    assert "<@U0DANA>" in _texts(card["blocks"])  # an email approver named by policy is mentioned

    started = time.monotonic()
    status, _body = await slack.click("U0ALICE", req["id"], "approve", ts=card["ts"])
    assert status == 200 and time.monotonic() - started < 3
    view = await slack.opened_view()
    opened = slack.fake.calls_of("views.open")[0]
    assert opened["trigger_id"].startswith("trigger-")
    assert view["callback_id"] == "decision" and json.loads(view["private_metadata"])["r"] == req["id"]
    assert not waiting.done()

    status, _ = await slack.submit("U0ALICE", view, "looks fine")
    assert status == 200
    decided = await eventually(lambda: _final(slack, req["id"]))
    assert decided.status == "approved"
    assert decided.decisions[0].approver == "alice@example.com" and decided.decisions[0].channel == "slack"
    assert decided.decisions[0].reason == "looks fine"
    (confirm,) = await slack.ephemerals_to("U0ALICE")
    assert confirm["channel"] == CHANNEL and "approved" in confirm["text"]

    status, final = await asyncio.wait_for(waiting, timeout=5)
    assert (status, final["status"]) == (200, "approved")

    await slack.run_jobs()
    card = slack.card_for(req["id"])
    assert card.get("edited") and not _actions(card["blocks"])  # buttons gone once final
    text = _texts(card["blocks"])
    assert "Approved" in text and "alice@example.com" in text and "looks fine" in text and "1 of 1" in text

    # The thread mirrors every audit record, in order, once, with seq and hash prefix.
    records = await slack.service.audit.for_request(req["id"])
    replies = slack.fake.replies(CHANNEL, card["ts"])
    assert [r["metadata"]["event_payload"]["seq"] for r in replies] == [r.seq for r in records]
    assert [r.as_dict()["type"] for r in records] == ["request.created", "approval.recorded", "request.approved"]
    for reply, record in zip(replies, records, strict=True):
        assert f"#{record.seq} {record.hash[:12]}" in reply["text"]

    # The owner learns the outcome in a DM.
    dms = slack.fake.top_level("D0OWNER")
    assert len(dms) == 1 and "approved" in dms[0]["text"].lower()
    assert slack.fake.calls_of("conversations.open")[0]["users"] == "U0OWNER"

    # Every Web API method used is one the manifest grants scopes for.
    assert {c.method for c in slack.fake.calls} <= set(METHOD_SCOPES)

    # Running every job again changes nothing: nothing is posted twice.
    posts = len(slack.fake.calls_of("chat.postMessage"))
    for record in records:
        slack.queue.enqueue("approvalbot.slack.delivery.sync_request", req["id"], record.seq)
    await slack.run_jobs()
    assert len(slack.fake.calls_of("chat.postMessage")) == posts


async def _final(slack, request_id):
    found = await slack.service.get(request_id)
    return found if found.status != "pending" else None


async def test_deny_needs_a_reason_in_the_modal(slack):
    _, req = await slack.api.ask()
    await slack.click("U0BOB", req["id"], "deny")
    view = await slack.opened_view()
    assert view["blocks"][1]["optional"] is False
    status, body = await slack.submit("U0BOB", view, "   ")
    assert status == 200
    assert json.loads(body) == {
        "response_action": "errors",
        "errors": {"reason": "Say why: the agent and the audit log will show it."},
    }
    assert (await slack.service.get(req["id"])).status == "pending"
    status, _ = await slack.submit("U0BOB", view, "not during the freeze")
    decided = await eventually(lambda: _final(slack, req["id"]))
    assert decided.status == "denied" and decided.outcome_reason == "not during the freeze"


async def test_self_approval_through_slack_is_blocked_and_recorded(slack):
    _, req = await slack.api.ask()  # etl-bot is owned by owner@example.com, who is also an approver
    status, _ = await slack.click("U0OWNER", req["id"], "approve")
    assert status == 200
    (note,) = await slack.ephemerals_to("U0OWNER")
    assert "cannot approve your own request" in note["text"] and note["channel"] == CHANNEL
    assert slack.fake.calls_of("views.open") == []  # no modal for a decision that cannot happen
    assert (await slack.service.get(req["id"])).status == "pending"
    records = [r.as_dict() for r in await slack.service.audit.for_request(req["id"])]
    assert [r["type"] for r in records] == ["request.created", "self_approval.blocked"]
    blocked = records[1]
    assert blocked["actor"]["email"] == "owner@example.com"
    assert blocked["actor"]["channel"] == "slack" and blocked["actor"]["channel_user"] == "U0OWNER"

    await slack.run_jobs()
    card = slack.card_for(req["id"])
    replies = slack.fake.replies(CHANNEL, card["ts"])
    assert "Self-approval blocked" in replies[-1]["text"]


async def test_on_behalf_of_person_gets_the_same_refusal(slack):
    _, req = await slack.api.ask(on_behalf_of="bob@example.com")
    await slack.click("U0BOB", req["id"], "approve")
    (note,) = await slack.ephemerals_to("U0BOB")
    assert "cannot approve your own request" in note["text"]


async def test_refusals_for_strangers_and_outsiders(slack):
    _, req = await slack.api.ask()  # policy names [security, dana@example.com]
    await slack.click("U0MALLORY", req["id"], "approve")  # in our workspace, no person has her address
    (note,) = await slack.ephemerals_to("U0MALLORY")
    assert "does not know which person you are" in note["text"] and "mallory@example.com" in note["text"]
    assert "`approvalbot people link EMAIL --slack T0FAKE/U0MALLORY`" in note["text"]
    await slack.click("U0CAROL", req["id"], "approve")  # registered, but only in finance
    (note,) = await slack.ephemerals_to("U0CAROL")
    assert "not an approver for" in note["text"] and "security" in note["text"]
    await slack.click("U0NOBODY", req["id"], "approve")  # users.info knows no such user
    (note,) = await slack.ephemerals_to("U0NOBODY")
    assert "does not know which person you are" in note["text"] and "no address visible" in note["text"]
    assert slack.fake.calls_of("views.open") == []
    found = await slack.service.get(req["id"])
    assert found.status == "pending" and found.decisions == []


async def test_refusal_also_applies_at_submission(slack):
    """Someone whose approver record is revoked after the modal opened is refused by the core."""
    _, req = await slack.api.ask()
    await slack.click("U0BOB", req["id"], "approve")
    view = await slack.opened_view()
    await slack.service.identities.revoke_approver("bob@example.com")
    await slack.submit("U0BOB", view, "ok")
    (note,) = await slack.ephemerals_to("U0BOB")
    assert "not a registered approver" in note["text"]
    assert (await slack.service.get(req["id"])).status == "pending"


async def test_bad_and_stale_signatures_are_rejected_without_effect(slack):
    _, req = await slack.api.ask()
    before = len(await slack.service.audit.for_request(req["id"]))
    body = "payload=" + json.dumps(slack.click_payload("U0ALICE", req["id"]))
    status, _ = await slack.post(body, signature="v0=" + "0" * 64)
    assert status == 401
    stale = int(time.time()) - 301
    status, _ = await slack.post(body, timestamp=stale, signature=sign(body, stale))
    assert status == 401
    status, _ = await slack.post(body, signature=sign(body, int(time.time()), "not-the-secret-at-all"))
    assert status == 401
    await asyncio.sleep(0.2)  # give a wrongly accepted request time to act; none must have
    assert slack.fake.calls_of("views.open") == [] and slack.fake.calls_of("users.info") == []
    assert len(await slack.service.audit.for_request(req["id"])) == before
    # The same body, signed now, goes through.
    status, _ = await slack.post(body)
    assert status == 200
    await slack.opened_view()


async def test_two_reviewers_at_once_give_one_outcome(slack):
    for _ in range(3):
        _, req = await slack.api.ask()
        await slack.click("U0ALICE", req["id"], "approve")
        await slack.click("U0BOB", req["id"], "deny")
        await slack.click("U0ALICE", req["id"], "approve")  # a double click: a second modal
        views = [v["view"] for v in await _views(slack, 3)]
        slack.fake.calls.clear()
        results = await asyncio.gather(
            slack.submit("U0ALICE", views[0], "fine"),
            slack.submit("U0BOB", views[1], "no"),
            slack.submit("U0ALICE", views[2], "fine again"),
        )
        assert [s for s, _ in results] == [200, 200, 200]
        final = await eventually(lambda rid=req["id"]: _final(slack, rid))
        notes = await eventually(lambda: _notes(slack, 3))
        assert len(final.decisions) == 1
        winners = [n for n in notes if n["text"].startswith("You ")]
        assert len(winners) == 1, notes
        assert sum("already decided" in n["text"] for n in notes) == 2
        types = [r.as_dict()["type"] for r in await slack.service.audit.for_request(req["id"])]
        assert sum(t in ("request.approved", "request.denied") for t in types) == 1
        slack.fake.calls.clear()


async def _views(slack, n):
    async def check():
        found = slack.fake.calls_of("views.open")
        return found if len(found) >= n else None

    return await eventually(check)


async def _notes(slack, n):
    found = slack.fake.calls_of("chat.postEphemeral")
    return found if len(found) >= n else None


async def test_two_person_rule_through_slack_counts_each_approver(slack):
    _, req = await slack.api.ask(action="iam.role.attach", resource="arn:aws:iam::1:role/admin")
    await slack.run_jobs()
    for i, user in enumerate(("U0ALICE", "U0BOB"), start=1):
        await slack.click(user, req["id"], "approve")
        view = await slack.opened_view(i)
        await slack.submit(user, view, None)
        await slack.ephemerals_to(user)
        await slack.run_jobs()
        card = slack.card_for(req["id"])
        assert f"{i} of 2" in json.dumps(card["blocks"])
    card = slack.card_for(req["id"])
    assert not _actions(card["blocks"]) and (await slack.service.get(req["id"])).status == "approved"


async def test_decisions_from_the_api_update_the_card_too(slack):
    _, req = await slack.api.ask()
    await slack.run_jobs()
    status, _ = await slack.api.decide(req["id"], slack.api.approver_token, "deny", "wrong bucket")
    assert status == 200
    await slack.run_jobs()
    card = slack.card_for(req["id"])
    assert not _actions(card["blocks"]) and "Denied" in json.dumps(card["blocks"])
    assert "wrong bucket" in json.dumps(card["blocks"])
    # A stale card clicked after the fact: told it is decided, nothing changes.
    await slack.click("U0BOB", req["id"], "approve")
    (note,) = await slack.ephemerals_to("U0BOB")
    assert "already decided" in note["text"] and "denied" in note["text"]


async def test_cancel_and_policy_settled_requests(slack):
    _, req = await slack.api.ask()
    await slack.run_jobs()
    status, _ = await slack.api.call("POST", f"/v1/requests/{req['id']}/cancel", slack.api.agent_token)
    assert status == 200
    await slack.run_jobs()
    card = slack.card_for(req["id"])
    assert "Cancelled" in json.dumps(card["blocks"]) and not _actions(card["blocks"])
    # Allowed by policy at once: nobody needs to see a card for it.
    _, read = await slack.api.ask(action="warehouse.read")
    assert read["status"] == "approved"
    await slack.run_jobs()
    assert all(c["metadata"]["event_payload"]["request_id"] != read["id"] for c in slack.cards())


async def test_decision_from_app_home_republishes_the_home_tab(slack):
    _, req = await slack.api.ask()
    await slack.click("U0ALICE", req["id"], "approve", home=True)
    view = await slack.opened_view()
    await slack.submit("U0ALICE", view, "ok from home")
    await eventually(lambda: _final(slack, req["id"]))

    async def published():
        return slack.fake.calls_of("views.publish")

    (home,) = await eventually(published)
    assert home["user_id"] == "U0ALICE" and req["id"] not in json.dumps(home["view"])
    # No channel to answer in: the confirmation goes to the app's DM with the user.
    dm = await eventually(lambda: _dm_texts(slack, "D0ALICE"))
    assert "approved" in dm[0]


async def _dm_texts(slack, channel):
    return [m["text"] for m in slack.fake.top_level(channel)] or None


async def test_slack_trouble_identifying_the_clicker_decides_nothing(slack):
    _, req = await slack.api.ask()
    slack.fake.fail("users.info", times=1, status=500)
    await slack.click("U0ALICE", req["id"], "approve")
    (note,) = await slack.ephemerals_to("U0ALICE")
    assert "could not check who you are" in note["text"]
    assert slack.fake.calls_of("views.open") == []
    await slack.click("U0ALICE", req["id"], "approve")  # Slack is fine again: the modal opens
    await slack.opened_view()


async def test_a_decision_the_replicas_do_not_confirm_asks_to_try_again(slack):
    """APPROVALBOT_MIN_REPLICAS not met in time (the API's 503 not_replicated): the person is told
    plainly to try again, not left with an error; a retry then finds the decision stored."""
    _, req = await slack.api.ask()
    await slack.click("U0ALICE", req["id"], "approve")
    view = await slack.opened_view()
    replication.configure(1, 50)  # the test Redis has no replica: WAIT never confirms
    try:
        status, _ = await slack.submit("U0ALICE", view, "fine")
        assert status == 200
        (note,) = await slack.ephemerals_to("U0ALICE")
    finally:
        replication.configure(0, 500)
    assert "could not confirm that this was stored safely" in note["text"] and "try again" in note["text"]
    assert "You approved" not in note["text"]
    # It reached the primary before the barrier gave up: retrying says so instead of deciding twice.
    assert (await slack.service.get(req["id"])).status == "approved"
    await slack.submit("U0ALICE", view, "fine")
    notes = await eventually(lambda: _notes_beyond(slack, "U0ALICE", 1))
    assert notes[-1]["text"] == f"`{req['id']}` was already decided: it is approved."


async def _notes_beyond(slack, user, count):
    notes = [c for c in slack.fake.calls_of("chat.postEphemeral") if c["user"] == user]
    return notes if len(notes) > count else None
