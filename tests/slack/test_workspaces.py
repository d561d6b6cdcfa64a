"""Where each Slack payload shape names the acting user and their team (pure functions)."""

from __future__ import annotations

from approvalbot.slack.workspaces import ActingUser, acting_user, serves


def test_block_actions_uses_the_users_own_team():
    # As Slack sends a click (slack-bolt's block_actions fixtures): `user.team_id` and `team.id`.
    body = {
        "type": "block_actions",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0OTHER"},
    }
    assert acting_user(body) == ActingUser("U0ALICE", "T0OTHER", None)
    del body["user"]["team_id"]
    assert acting_user(body) == ActingUser("U0ALICE", "T0FAKE", None)


def test_view_submission_across_slack_connect():
    # slackapi/bolt-python tests/scenario_tests_async/test_view_submission.py `connect_channel_payload`,
    # with Slack-shaped ids: the other side's team and org, our app installed elsewhere.
    body = {
        "type": "view_submission",
        "team": {"id": "T0SIDE", "domain": "other-side", "enterprise_id": "E0SIDE", "enterprise_name": "Org"},
        "user": {"id": "W0KAZ", "username": "kaz", "name": "kaz", "team_id": "T0SIDE"},
        "view": {"id": "V0", "team_id": "T0SIDE", "app_installed_team_id": "T0INSTALLED"},
        "enterprise": {"id": "E0SIDE", "name": "Org"},
    }
    assert acting_user(body) == ActingUser("W0KAZ", "T0SIDE", "E0SIDE")


def test_slash_command_and_events():
    # slackapi/bolt-python tests/scenario_tests_async/test_slash_command.py `slash_command_body`.
    command = {"command": "/pending", "team_id": "T111", "user_id": "W111", "enterprise_id": "E111"}
    assert acting_user(command) == ActingUser("W111", "T111", "E111")
    # slackapi/bolt-python tests/scenario_tests_async/test_events_shared_channels.py: the source team.
    event = {
        "type": "event_callback",
        "team_id": "T0SOURCE",
        "enterprise_id": "E0SOURCE",
        "event": {"type": "app_home_opened", "user": "U0EVE", "tab": "home"},
    }
    assert acting_user(event) == ActingUser("U0EVE", "T0SOURCE", "E0SOURCE")
    change = {"type": "event_callback", "team_id": "T0FAKE", "event": {"type": "user_change", "user": {"id": "U0BOB"}}}
    assert acting_user(change) == ActingUser("U0BOB", "T0FAKE", None)


def test_unusable_ids_name_nobody_or_no_team():
    assert acting_user({"type": "block_actions", "user": {"id": "alice@example.com"}}) is None
    assert acting_user({"command": "/pending", "user_id": "U0A", "team_id": "not a team"}) == ActingUser(
        "U0A", None, None
    )
    assert acting_user({}) is None


def test_serves_a_team_or_its_organisation():
    allowed = frozenset({"T0FAKE", "E0ORG"})
    assert serves(allowed, "T0FAKE") and serves(allowed, "T0GRID", "E0ORG")
    assert not serves(allowed, "T0OTHER") and not serves(allowed, None) and not serves(allowed, "T0OTHER", "E0ELSE")
