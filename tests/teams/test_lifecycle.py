"""Where cards may go over a conversation's life: removal, deletion, archiving, and a connector that says "gone".

The payloads replay the shapes Microsoft publishes for these events (written here, not copied):
conversationUpdate with `membersRemoved` naming the bot and `channelData.eventType` teamMemberRemoved,
channelDeleted, teamDeleted, teamArchived (conversation = the team's General channel, `channelData.team`
naming the team, `channelData.channel` the channel), and installationUpdate with `action: remove`:
https://learn.microsoft.com/en-us/microsoftteams/platform/bots/how-to/conversations/subscribe-to-conversation-events
("In team context, the activity's conversation.id is set to the id of the channel selected ... during
app installation": a removal names the team, not each channel), the same shapes botbuilder-python's own
tests drive (https://github.com/microsoft/botbuilder-python, libraries/botbuilder-core/tests/teams/
test_teams_activity_handler.py: channel_data `{"eventType": "teamMemberRemoved", "team": {"id": ...}}`,
`{"eventType": "channelDeleted", "channel": {...}}`, teamDeleted / teamHardDeleted / teamArchived with `team`).
The connector's refusals (403 BotNotInConversationRoster, 404 ConversationNotFound) follow
https://learn.microsoft.com/en-us/azure/bot-service/rest-api/bot-framework-rest-connector-api-reference
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io

import pytest

from approvalbot.teams import cli as teams_cli
from approvalbot.teams.references import ConversationRef, ReferenceStore, conversation_hash

from .conftest import BOT_ID, OTHER_TENANT, TEAM_GROUP_ID, TEAM_ID, new_conversation
from .test_delivery import cards_per_request


def team_event(teams, event: str, **extra):
    """A team-scope event as Teams sends it: in the team's General conversation, naming the team."""
    data = {"eventType": event, "team": {"id": TEAM_ID, "name": "Platform", "aadGroupId": TEAM_GROUP_ID}}
    data.update(extra.pop("channelData", {}))
    return teams.activity("conversationUpdate", None, TEAM_ID, channelData=data, **extra)


async def stored(teams) -> list[str]:
    return sorted(r.id for r in await ReferenceStore(teams.service.redis).all())


async def two_channels_and_a_chat(teams):
    a, b = new_conversation("a-ops"), new_conversation("b-sec")
    await teams.add_bot(a, name="a-ops")
    await teams.add_bot(b, name="b-sec")
    await teams.add_bot("19:chat-incident@thread.v2", name="Incident", kind="groupChat")
    assert len(await stored(teams)) == 3
    return a, b


async def test_bot_removed_from_the_team_forgets_every_channel_of_that_team(teams, people):
    a, b = await two_channels_and_a_chat(teams)
    removed = team_event(teams, "teamMemberRemoved", membersRemoved=[{"id": BOT_ID}])
    removed["from"] = {"id": people["alice"].user_id, "aadObjectId": people["alice"].aad}
    status, _ = await teams.post(removed)
    assert status in (200, 201)
    assert await stored(teams) == ["19:chat-incident@thread.v2"]
    await teams.ask()
    await teams.run_jobs()
    assert teams.fake.cards("create", a) == [] and teams.fake.cards("create", b) == []


async def test_bot_disallowed_in_a_shared_channel_forgets_that_channel_only(teams):
    """Shared channels: the bot is installed in the team and allowed or disallowed per channel; the
    disallow is a membersRemoved in that channel's conversation
    (https://github.com/microsoft/Agents/issues/179, "Support for bots and agents in shared channels")."""
    a, b = await two_channels_and_a_chat(teams)
    disallowed = teams.activity(
        "conversationUpdate",
        None,
        a,
        membersRemoved=[{"id": BOT_ID}],
        channelData={"eventType": "channelMemberRemoved", "channel": {"id": a}},
    )
    await teams.post(disallowed)
    assert await stored(teams) == sorted([b, "19:chat-incident@thread.v2"])


async def test_someone_else_leaving_the_team_forgets_nothing(teams, people):
    await two_channels_and_a_chat(teams)
    left = team_event(teams, "teamMemberRemoved", membersRemoved=[{"id": people["bob"].user_id}])
    await teams.post(left)
    assert len(await stored(teams)) == 3


async def test_app_uninstalled_from_the_team_or_a_chat(teams):
    await two_channels_and_a_chat(teams)
    uninstall = team_event(teams, None, action="remove")
    uninstall["type"] = "installationUpdate"
    del uninstall["channelData"]["eventType"]
    status, _ = await teams.post(uninstall)
    assert status in (200, 201)
    assert await stored(teams) == ["19:chat-incident@thread.v2"]
    from_chat = teams.activity("installationUpdate", None, "19:chat-incident@thread.v2", "groupChat", action="remove")
    await teams.post(from_chat)
    assert await stored(teams) == []


async def test_channel_deleted_forgets_that_channel_only(teams):
    a, b = await two_channels_and_a_chat(teams)
    deleted = team_event(teams, "channelDeleted", channelData={"channel": {"id": a, "name": "a-ops"}})
    await teams.post(deleted)
    assert await stored(teams) == sorted([b, "19:chat-incident@thread.v2"])


@pytest.mark.parametrize("event", ["teamDeleted", "teamArchived", "teamHardDeleted"])
async def test_team_deleted_or_archived_forgets_its_channels(teams, event):
    await two_channels_and_a_chat(teams)
    await teams.post(team_event(teams, event))
    assert await stored(teams) == ["19:chat-incident@thread.v2"]
    if event == "teamArchived":  # unarchived: the team's General channel is a target again
        await teams.post(team_event(teams, "teamUnarchived"))
        assert TEAM_ID in await stored(teams)


async def test_a_restored_channel_is_a_target_again_without_a_welcome(teams):
    a, _b = await two_channels_and_a_chat(teams)
    await teams.post(team_event(teams, "channelDeleted", channelData={"channel": {"id": a, "name": "a-ops"}}))
    assert a not in await stored(teams)
    since = len(teams.fake.calls)
    await teams.post(team_event(teams, "channelRestored", channelData={"channel": {"id": a, "name": "a-ops"}}))
    ref = await ReferenceStore(teams.service.redis).get(conversation_hash(a))
    assert ref is not None and ref.display == "Platform/a-ops" and ref.reference["conversation"]["id"] == a
    assert teams.fake.calls[since:] == []  # no welcome in General for a channel restored elsewhere
    created = await teams.ask()
    await teams.run_jobs()
    assert cards_per_request(teams.fake, a) == {created["id"]: 1}


@pytest.mark.parametrize("status", [403, 404])
async def test_a_gone_conversation_gets_one_delivery_failed_and_nothing_more(teams, people, status, capsys):
    good, bad = new_conversation("a-good"), new_conversation("b-gone")
    await teams.add_bot(good, name="a-good")
    await teams.add_bot(bad, name="b-gone")
    teams.fake.broken[bad] = status
    since = len(teams.fake.calls)  # after the welcome messages
    first, second = await teams.ask(resource="one"), await teams.ask(resource="two")
    await teams.run_jobs()
    third = await teams.ask(resource="three")
    await teams.run_jobs()

    failed = []
    for r in (first, second, third):
        failed += [
            rec.as_dict()["data"]
            for rec in await teams.service.audit.for_request(r["id"])
            if rec.as_dict()["type"] == "delivery.failed"
        ]
    assert failed == [{"channel": "teams", "target": "Platform/b-gone", "stage": "post", "error": f"http_{status}"}]
    assert len([c for c in teams.fake.calls[since:] if c.conversation == bad]) == 1  # one refused post, no more
    assert cards_per_request(teams.fake, good) == {r["id"]: 1 for r in (first, second, third)}
    ref = await ReferenceStore(teams.service.redis).get(conversation_hash(bad))
    assert ref is not None and ref.gone == f"http_{status}"

    # The deliveries API names the target's state, for every request that chose it.
    _, body = await teams.call("GET", f"/v1/requests/{first['id']}/deliveries", teams.agent_token)
    by_target = {t["target"]: t for t in body["teams"]["deliveries"]}
    assert by_target[conversation_hash(bad)]["state"] == "gone"
    assert by_target[conversation_hash(bad)]["last_error"] == f"http_{status}"
    assert by_target[conversation_hash(good)]["state"] == "posted"
    assert by_target[conversation_hash(good)]["message_id"] in {c.result_id for c in teams.fake.ok("create")}

    # `approvalbot teams channels` says which is gone.
    lines = await channels_listing(teams)
    states = {line.split("\t")[1]: line.split("\t")[4] for line in lines}
    assert states["Platform/a-good"] == "active"
    assert states["Platform/b-gone"].startswith(f"gone (http_{status} since ")

    # Added back: active again, and the next request's card goes there.
    del teams.fake.broken[bad]
    await teams.add_bot(bad, name="b-gone")
    fourth = await teams.ask(resource="four")
    await teams.run_jobs()
    assert cards_per_request(teams.fake, bad) == {fourth["id"]: 1}


async def channels_listing(teams) -> list[str]:
    class Rt:
        settings = teams.settings

        def async_redis(self):
            from redis.asyncio import Redis

            return Redis.from_url(teams.settings.redis_url)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(teams_cli.cmd_teams, Rt(), argparse.Namespace(teams_action="channels")) == 0
    return out.getvalue().strip().splitlines()


async def test_teams_channels_does_not_list_other_tenants(teams):
    mine = new_conversation("approvals")
    await teams.add_bot(mine, name="approvals")
    foreign = ConversationRef(
        id="19:foreign@thread.tacv2",
        kind="channel",
        name="theirs",
        service_url=teams.fake.service_url(OTHER_TENANT),
        reference={},
        tenant_id=OTHER_TENANT,
    )
    await ReferenceStore(teams.service.redis).save(foreign)
    lines = await channels_listing(teams)
    assert [line.split("\t")[2] for line in lines] == [mine]


async def test_an_update_refused_with_403_marks_the_conversation_gone(teams, people):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    _, bob = await teams.service.identities.add_approver("bob@example.com", [])
    created = await teams.ask()
    await teams.run_jobs()
    teams.fake.broken[channel] = 403  # removed from the team without us hearing of it
    await teams.call("POST", f"/v1/requests/{created['id']}/decisions", bob, json={"decision": "approve"})
    await teams.run_jobs()
    ref = await ReferenceStore(teams.service.redis).get(conversation_hash(channel))
    assert ref is not None and ref.gone == "http_403"
    failed = [
        r.as_dict()["data"]["stage"]
        for r in await teams.service.audit.for_request(created["id"])
        if r.as_dict()["type"] == "delivery.failed"
    ]
    assert failed == ["update"]
    calls = len(teams.fake.calls)
    await teams.ask(resource="later")
    await teams.run_jobs()
    assert [c for c in teams.fake.calls[calls:] if c.conversation == channel] == []
