"""Who acts in Slack: served workspaces only, one person behind a (team, user) identity (issue 11).

Each attack from the issue that concerns Slack, replayed over real HTTP with signed
requests against the fake Slack Web API. Before issue 11 the clicker was whoever
`users.info` said by email, from any team; each of these tests failed then.
"""

from __future__ import annotations

import json
import time

import pytest

from approvalbot.config import Settings
from approvalbot.core.models import ChatIdentity
from approvalbot.slack.channel import SlackChannel
from approvalbot.slack.identity import user_key
from tests.helpers import eventually
from tests.slack.conftest import CHANNEL, OTHER_TEAM, TEAM


async def records(slack, type_: str) -> list[dict]:
    return [r.as_dict() async for r in slack.service.audit.records() if r.as_dict()["type"] == type_]


async def refusals(slack, n: int) -> list[dict]:
    async def check():
        found = await records(slack, "identity.refused")
        return found if len(found) >= n else None

    return await eventually(check)


async def _responses(slack, key, n=1):
    async def check():
        found = [r for r in slack.fake.responses if r["key"] == key]
        return found if len(found) >= n else None

    return await eventually(check)


async def _final(slack, request_id):
    found = await slack.service.get(request_id)
    return found if found.status != "pending" else None


def _foreign(slack, user: str = "U0EVE", email: str = "alice@example.com") -> None:
    """A user of another workspace whose profile claims one of our approvers' addresses."""
    slack.fake.users[user] = email
    slack.fake.user_teams[user] = OTHER_TEAM


# --- workspaces ---------------------------------------------------------------------------------


async def test_user_from_another_team_with_alices_email_is_refused(slack):
    _foreign(slack)
    _, req = await slack.api.ask()
    status, _ = await slack.click("U0EVE", req["id"], "approve", team=OTHER_TEAM)
    assert status == 200
    (note,) = await slack.ephemerals_to("U0EVE")
    assert "from another workspace" in note["text"] and note["channel"] == CHANNEL
    assert slack.fake.calls_of("views.open") == []
    (refused,) = await refusals(slack, 1)
    assert refused["data"]["code"] == "foreign_workspace"
    assert refused["data"]["identity"] == f"slack:{OTHER_TEAM}:U0EVE"
    assert refused["actor"]["workspace"] == OTHER_TEAM and refused["actor"]["channel_user"] == "U0EVE"
    # Turned away on the payload's team alone: Slack was not even asked who they are.
    assert slack.fake.calls_of("users.info") == []

    # Clicking again is refused again, but audited once (no flood of records).
    await slack.click("U0EVE", req["id"], "approve", team=OTHER_TEAM)
    await slack.ephemerals_to("U0EVE", 2)
    assert len(await records(slack, "identity.refused")) == 1
    found = await slack.service.get(req["id"])
    assert found.status == "pending" and found.decisions == []


async def test_view_submission_from_a_connected_workspace_decides_nothing(slack):
    """A modal submitted across Slack Connect. The shape is slack-bolt's `connect_channel_payload`
    (slackapi/bolt-python tests/scenario_tests_async/test_view_submission.py): `team.id` and
    `user.team_id` are the other side's, `view.app_installed_team_id` is ours."""
    _foreign(slack)
    _, req = await slack.api.ask()
    await slack.click("U0ALICE", req["id"], "approve")
    view = await slack.opened_view()
    payload = slack.submission("U0EVE", view, "sure", team=OTHER_TEAM)
    payload["team"]["enterprise_id"] = "E0OTHERORG"
    payload["enterprise"] = {"id": "E0OTHERORG", "name": "Other Org"}
    payload["view"]["team_id"] = OTHER_TEAM
    payload["view"]["app_installed_team_id"] = TEAM
    status, _ = await slack.interact(payload)
    assert status == 200
    (note,) = await slack.ephemerals_to("U0EVE")
    assert "from another workspace" in note["text"]
    (refused,) = await refusals(slack, 1)
    assert refused["data"]["code"] == "foreign_workspace"
    assert (await slack.service.get(req["id"])).decisions == []


async def test_slash_commands_from_another_team_show_nothing(slack):
    """Slash commands carry `team_id`, `user_id` and, in an Enterprise Grid org, `enterprise_id`
    (the form of slackapi/bolt-python tests/scenario_tests_async/test_slash_command.py)."""
    _foreign(slack)
    _, req = await slack.api.ask(resource="s3://secret/bucket")
    await slack.command("/approval", req["id"], "U0EVE", team=OTHER_TEAM, enterprise_id="E0OTHERORG")
    (answer,) = await _responses(slack, "approval")
    assert answer["response_type"] == "ephemeral" and "from another workspace" in answer["text"]
    assert "s3://secret/bucket" not in json.dumps(answer)
    await slack.command("/pending", "", "U0EVE", team=OTHER_TEAM)
    (answer,) = await _responses(slack, "pending")
    assert "from another workspace" in answer["text"] and req["id"] not in json.dumps(answer)
    (refused,) = await refusals(slack, 1)  # one identity, one reason: one record
    assert refused["data"]["code"] == "foreign_workspace"


async def test_app_home_for_another_team_shows_nothing_and_is_audited(slack):
    """Events name the source team in the envelope's `team_id` (slackapi/bolt-python
    tests/scenario_tests_async/test_events_shared_channels.py)."""
    _foreign(slack)
    await slack.api.ask()
    status, _ = await slack.event(
        {"type": "app_home_opened", "user": "U0EVE", "channel": "D0EVE", "tab": "home", "event_ts": str(time.time())},
        team=OTHER_TEAM,
    )
    assert status == 200
    (refused,) = await refusals(slack, 1)
    assert refused["data"]["identity"] == f"slack:{OTHER_TEAM}:U0EVE"
    assert slack.fake.calls_of("views.publish") == []


async def test_slack_connect_stranger_is_refused_even_when_the_payload_says_our_team(slack):
    slack.fake.users["U0STRANGE"] = "alice@example.com"
    slack.fake.strangers.add("U0STRANGE")
    _, req = await slack.api.ask()
    await slack.click("U0STRANGE", req["id"], "approve")  # the payload claims our team
    (note,) = await slack.ephemerals_to("U0STRANGE")
    assert "Slack Connect" in note["text"]
    (refused,) = await refusals(slack, 1)
    assert refused["data"]["code"] == "foreign_workspace" and "stranger" in refused["reason"]
    # users.info puts a user in another team than the payload says: refused as well.
    _foreign(slack, "U0MOVED")
    await slack.click("U0MOVED", req["id"], "approve")
    await slack.ephemerals_to("U0MOVED")
    assert (await refusals(slack, 2))[1]["data"]["identity"] == f"slack:{OTHER_TEAM}:U0MOVED"
    assert slack.fake.calls_of("views.open") == []
    assert (await slack.service.get(req["id"])).decisions == []


# --- persons ------------------------------------------------------------------------------------


async def test_unknown_identity_is_refused_with_the_admin_command_and_audited(slack):
    _, req = await slack.api.ask()
    await slack.click("U0MALLORY", req["id"], "approve")
    (note,) = await slack.ephemerals_to("U0MALLORY")
    assert f"`approvalbot people link EMAIL --slack {TEAM}/U0MALLORY`" in note["text"]
    (refused,) = await refusals(slack, 1)
    assert refused["data"]["code"] == "identity_unknown" and refused["actor"]["email"] == "mallory@example.com"
    # Once an admin links her (to a person with another address), she acts as that person.
    await slack.service.people.add("m.smith@example.com", groups=["security"])
    await slack.service.people.link(
        "m.smith@example.com", ChatIdentity(channel="slack", workspace=TEAM, user_id="U0MALLORY")
    )
    await slack.click("U0MALLORY", req["id"], "approve")
    view = await slack.opened_view()
    await slack.submit("U0MALLORY", view, "ok")
    decided = await eventually(lambda: _final(slack, req["id"]))
    assert decided.decisions[0].approver == "m.smith@example.com"


async def test_owner_whose_slack_address_is_her_alias_cannot_approve_her_agents_request(slack):
    owner = await slack.service.people.add("owner@example.com", aliases=["olga@example.com"])
    slack.fake.users["U0OLGA"] = "olga@example.com"
    _, req = await slack.api.ask()  # etl-bot belongs to owner@example.com
    await slack.click("U0OLGA", req["id"], "approve")
    (note,) = await slack.ephemerals_to("U0OLGA")
    assert "cannot approve your own request" in note["text"]
    (blocked,) = await records(slack, "self_approval.blocked")
    actor = blocked["actor"]
    assert (actor["person_id"], actor["workspace"], actor["channel_user"]) == (owner.id, TEAM, "U0OLGA")
    assert (await slack.service.get(req["id"])).decisions == []


async def test_email_change_never_moves_a_linked_identity(slack):
    bob = await slack.service.people.by_email("bob@example.com")
    _, first = await slack.api.ask(resource="one")
    await slack.click("U0BOB", first["id"], "approve")  # links U0BOB to Bob on first use
    await slack.opened_view()
    assert 0 < await slack.service.redis.ttl(user_key("U0BOB")) <= 60  # users.info answers live a minute at most

    # Bob's Slack address becomes the owner's; Slack tells us with user_change.
    slack.fake.users["U0BOB"] = "owner@example.com"
    asked = len(slack.fake.calls_of("users.info"))
    status, _ = await slack.event({"type": "user_change", "user": slack.fake.user_object("U0BOB")})
    assert status == 200
    await eventually(lambda: _gone(slack, user_key("U0BOB")))

    _, second = await slack.api.ask(resource="two")  # owner@example.com's agent
    await slack.click("U0BOB", second["id"], "approve")
    view = await slack.opened_view(2)  # not self-approval: this is still Bob
    await slack.submit("U0BOB", view, "fine")
    decided = await eventually(lambda: _final(slack, second["id"]))
    assert decided.decisions[0].approver == "bob@example.com" and decided.decisions[0].person_id == bob.id
    assert len(slack.fake.calls_of("users.info")) == asked + 1  # the cache was dropped, Slack asked again
    (changed,) = await records(slack, "identity.changed")
    assert changed["data"]["address"] == "owner@example.com" and changed["data"]["person_id"] == bob.id
    approved = [r for r in await records(slack, "approval.recorded") if r["request_id"] == second["id"]]
    assert approved[0]["actor"]["person_id"] == bob.id


async def _gone(slack, key):
    return await slack.service.redis.get(key) is None or None


async def test_one_person_through_slack_and_the_api_counts_once(slack):
    _, req = await slack.api.ask(action="iam.role.attach", resource="arn:aws:iam::1:role/admin")  # 2 needed
    status, body = await slack.api.decide(req["id"], slack.api.approver_token)  # Alice, by API
    assert status == 200 and body["status"] == "pending"
    await slack.click("U0ALICE", req["id"], "approve")  # Alice again, by Slack
    (note,) = await slack.ephemerals_to("U0ALICE")
    assert "already decided" in note["text"]
    assert slack.fake.calls_of("views.open") == []
    found = await slack.service.get(req["id"])
    assert found.status == "pending" and len(found.decisions) == 1
    await slack.click("U0BOB", req["id"], "approve")
    await slack.submit("U0BOB", await slack.opened_view(), None)
    decided = await eventually(lambda: _final(slack, req["id"]))
    assert decided.status == "approved"
    assert len({d.person_id for d in decided.decisions}) == 2


async def test_approval_command_shows_only_what_the_person_may_view(slack):
    _, req = await slack.api.ask(resource="s3://exports/customers")  # policy: security, dana
    await slack.command("/approval", req["id"], "U0CAROL")  # finance: neither named nor involved
    (answer,) = await _responses(slack, "approval")
    assert answer["text"] == f"No request `{req['id']}`."  # the same answer as for an unknown id
    await slack.command("/approval", req["id"], "U0ALICE")
    answers = await _responses(slack, "approval", 2)
    assert "s3://exports/customers" in json.dumps(answers[1]["blocks"])


async def test_slack_channel_resolves_identities_the_same_way(slack, rt, redis):
    channel = SlackChannel(rt.settings)
    alice = await channel.approver_for(redis, "U0ALICE")
    assert alice is not None and alice.email == "alice@example.com"
    assert any(i.key == f"slack:{TEAM}:U0ALICE" for i in alice.identities)
    _foreign(slack)
    slack.fake.users["U0STRANGE"] = "bob@example.com"
    slack.fake.strangers.add("U0STRANGE")
    assert await channel.approver_for(redis, "U0EVE") is None
    assert await channel.approver_for(redis, "U0STRANGE") is None
    assert await channel.approver_for(redis, "U0MALLORY") is None


@pytest.fixture
def grid(monkeypatch, slack_env):
    """SLACK_ALLOWED_TEAMS names the other workspace (set before the server reads its settings)."""
    monkeypatch.setenv("SLACK_ALLOWED_TEAMS", OTHER_TEAM)


async def test_a_workspace_in_slack_allowed_teams_is_served(grid, slack):
    assert SlackChannel(Settings()).config.allowed_teams == {OTHER_TEAM}
    slack.fake.users["U0DANA2"] = "dana@example.com"  # Dana, in the other workspace of the org
    slack.fake.user_teams["U0DANA2"] = OTHER_TEAM
    await slack.service.identities.add_approver("dana@example.com", [])
    _, req = await slack.api.ask()  # the policy names dana@example.com
    await slack.click("U0DANA2", req["id"], "approve", team=OTHER_TEAM)
    await slack.submit("U0DANA2", await slack.opened_view(), "ok", team=OTHER_TEAM)
    decided = await eventually(lambda: _final(slack, req["id"]))
    assert decided.decisions[0].approver == "dana@example.com"
    recorded = [r for r in await records(slack, "approval.recorded") if r["request_id"] == req["id"]]
    assert recorded[0]["actor"]["workspace"] == OTHER_TEAM
    assert await records(slack, "identity.refused") == []


async def test_a_click_on_a_settled_request_is_answered_before_any_identity_check(slack):
    """Issue 12: a decision on a request that is no longer pending is refused before anyone is
    identified, and writes nothing; a stranger clicking an old card cannot fill the log either."""
    _foreign(slack)
    _, req = await slack.api.ask()
    await slack.api.decide(req["id"], slack.api.approver_token, "deny", reason="not now")
    before = len(await records(slack, "identity.refused"))
    info_calls = len(slack.fake.calls_of("users.info"))
    for _ in range(3):
        status, _ = await slack.click("U0EVE", req["id"], "approve", team=OTHER_TEAM)
        assert status == 200
    notes = await slack.ephemerals_to("U0EVE", 3)
    assert all("already decided: it is denied" in n["text"] for n in notes)
    assert len(await records(slack, "identity.refused")) == before
    assert len(slack.fake.calls_of("users.info")) == info_calls  # nobody was looked up
    assert slack.fake.calls_of("views.open") == []
