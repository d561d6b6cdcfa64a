"""Slash commands (/pending, /approval) and the App Home tab."""

from __future__ import annotations

import json
import time
from datetime import datetime

from tests.helpers import eventually


async def _responses(slack, key, n=1):
    async def check():
        found = [r for r in slack.fake.responses if r["key"] == key]
        return found if len(found) >= n else None

    return await eventually(check)


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


def _request_ids(blocks):
    return [e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "approve"]


async def test_pending_lists_what_the_caller_may_decide_oldest_first_with_paging(slack):
    created = []
    for i in range(7):
        _, req = await slack.api.ask(resource=f"s3://bucket/{i}")
        created.append(req)
    # Oldest first means by creation time in milliseconds (the queue's score), then by id: requests
    # made within one millisecond (intake is that fast) are listed in id order.
    ids = [r["id"] for r in sorted(created, key=lambda r: (_ms(r["created_at"]), r["id"]))]
    _, own_token = await slack.service.identities.add_agent("alice-bot", "alice@example.com")
    _, own = await slack.api.ask(token=own_token)  # alice's own agent: not hers to decide

    status, body = await slack.command("/pending", "", "U0ALICE")
    assert status == 200 and not body  # acknowledged at once; the list arrives through response_url
    (first,) = await _responses(slack, "pending")
    assert first["response_type"] == "ephemeral"
    assert _request_ids(first["blocks"]) == ids[:5]
    (more,) = [
        e for b in first["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "pending_more"
    ]

    payload = slack.click_payload("U0ALICE", "", "approve")
    payload["actions"] = [
        {
            "type": "button",
            "action_id": "pending_more",
            "block_id": "more",
            "value": more["value"],
            "action_ts": str(time.time()),
        }
    ]
    payload["container"]["is_ephemeral"] = True
    payload["response_url"] = slack.fake.response_url("more")
    status, _ = await slack.interact(payload)
    assert status == 200
    (second,) = await _responses(slack, "more")
    assert second["replace_original"] is True
    assert _request_ids(second["blocks"]) == ids[5:]
    assert own["id"] not in _request_ids(first["blocks"]) + _request_ids(second["blocks"])
    assert not [
        e for b in second["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "pending_more"
    ]

    # The buttons in the list work like the card's.
    await slack.click("U0ALICE", ids[0], "approve")
    view = await slack.opened_view()
    assert json.loads(view["private_metadata"])["r"] == ids[0]


async def test_pending_for_someone_who_is_not_an_approver(slack):
    await slack.command("/pending", "", "U0MALLORY")  # in our workspace, but no person has her address
    (answer,) = await _responses(slack, "pending")
    assert "does not know which person you are" in answer["text"]
    assert "approvalbot people link EMAIL --slack T0FAKE/U0MALLORY" in answer["text"]
    await slack.service.people.ensure_owner("mallory@example.com")  # a person now, but not an approver
    await slack.command("/pending", "", "U0MALLORY")
    await _responses(slack, "pending", 2)
    await slack.command("/pending", "", "U0ALICE")
    answers = await _responses(slack, "pending", 3)
    assert "not a registered approver" in answers[1]["text"]
    assert "Nothing is waiting" in answers[2]["text"]


async def test_approval_shows_one_request_and_its_audit_records(slack):
    _, req = await slack.api.ask(resource="s3://exports/customers", justification="*urgent* <!here>")
    await slack.api.decide(req["id"], slack.api.approver_token, "approve", "ok <@U0BOB>")
    await slack.command("/approval", req["id"], "U0BOB")
    (answer,) = await _responses(slack, "approval")
    text = json.dumps(answer["blocks"])
    records = await slack.service.audit.for_request(req["id"])
    assert len(records) == 3
    for record in records:
        assert f"`#{record.seq}` `{record.hash[:12]}`" in text
    assert "s3://exports/customers" in text and "Approved" in text
    assert "<!here>" not in text and "<@U0BOB>" not in text  # shown as data

    # One at a time: listeners answer after their ack, so answers to commands sent together may cross.
    for n, (text, user) in enumerate(
        ((req["id"], "U0MALLORY"), ("req_doesnotexist2345", "U0BOB"), ("../../etc", "U0BOB")), start=2
    ):
        await slack.command("/approval", text, user)
        answers = await _responses(slack, "approval", n)
    assert "does not know which person you are" in answers[1]["text"] and req["id"] not in answers[1]["text"]
    assert "No request" in answers[2]["text"]
    assert "Usage" in answers[3]["text"]


async def test_requester_may_look_at_their_own_request(slack):
    _, token = await slack.service.identities.add_agent("mallory-bot", "mallory@example.com")
    _, req = await slack.api.ask(token=token)
    await slack.command("/approval", req["id"], "U0MALLORY")  # not an approver, but the owner
    (answer,) = await _responses(slack, "approval")
    assert req["id"] in json.dumps(answer["blocks"])


async def test_app_home_shows_the_callers_queue(slack):
    _, first = await slack.api.ask(resource="one")
    _, second = await slack.api.ask(resource="two")
    status, _ = await slack.event(
        {"type": "app_home_opened", "user": "U0BOB", "channel": "D0BOB", "tab": "home", "event_ts": str(time.time())}
    )
    assert status == 200

    async def published():
        return slack.fake.calls_of("views.publish")

    (call,) = await eventually(published)
    assert call["user_id"] == "U0BOB" and call["view"]["type"] == "home"
    assert _request_ids(call["view"]["blocks"]) == [first["id"], second["id"]]

    await slack.event(
        {
            "type": "app_home_opened",
            "user": "U0MALLORY",
            "channel": "D0MALLORY",
            "tab": "home",
            "event_ts": str(time.time()),
        }
    )

    async def two():
        found = slack.fake.calls_of("views.publish")
        return found if len(found) == 2 else None

    stranger = (await eventually(two))[1]
    assert "not a registered approver" in json.dumps(stranger["view"]) and not _request_ids(stranger["view"]["blocks"])
