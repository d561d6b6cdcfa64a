"""Slack settings validated at start-up, Slack off without a token, and the app manifest."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.runtime import ConfigError
from approvalbot.slack import status_line, subscribers
from approvalbot.slack.client import BOT_SCOPES, METHOD_SCOPES
from approvalbot.slack.listeners import COMMANDS, EVENTS
from approvalbot.slack.settings import EVENTS_PATH, SlackConfig
from approvalbot.web.context import SERVICES
from tests.slack.conftest import SIGNING_SECRET

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "slack.yaml"
SLACK_VARS = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_CHANNEL",
    "SLACK_API_URL",
    "SLACK_ALLOWED_TEAMS",
)


def make(monkeypatch, **env) -> Settings:
    for key in SLACK_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_no_token_means_slack_is_off(monkeypatch):
    settings = make(monkeypatch)
    assert SlackConfig.from_settings(settings) is None
    assert subscribers(settings) == []
    assert status_line(settings) == "Slack: off (SLACK_BOT_TOKEN not set)"


async def test_mount_without_token_adds_nothing(monkeypatch, rt, redis):
    settings = make(monkeypatch, REDIS_URL=rt.redis_url)
    app = build_app(settings, rt.service(redis))
    assert "slack" not in app[SERVICES].extras  # build_app left Slack off
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.post(str(server.make_url(EVENTS_PATH)), data="x") as resp:
            assert resp.status == 404
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_CHANNEL": "#a"}, "SLACK_SIGNING_SECRET is required"),
        (
            {"SLACK_BOT_TOKEN": "xoxp-user", "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_CHANNEL": "#a"},
            "must be a bot token",
        ),
        ({"SLACK_SIGNING_SECRET": SIGNING_SECRET}, "SLACK_BOT_TOKEN is not"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": SIGNING_SECRET}, "SLACK_CHANNEL is required"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_CHANNEL": "general chat"},
            "neither a channel ID",
        ),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2", "SLACK_CHANNEL": "#a"}, "must be an app-level"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "short", "SLACK_CHANNEL": "#a"}, "does not look like"),
        (
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_CHANNEL": "#a",
                "SLACK_API_URL": "ftp://x",
            },
            "SLACK_API_URL",
        ),
        (
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_CHANNEL": "#a",
                "SLACK_ALLOWED_TEAMS": "T0GRID1, acme.slack.com",
            },
            "SLACK_ALLOWED_TEAMS: 'acme.slack.com' is neither",
        ),
    ],
)
def test_incomplete_settings_fail_at_start_up_with_a_clear_message(monkeypatch, env, message):
    settings = make(monkeypatch, **env)
    with pytest.raises(ConfigError, match=message) as caught:
        SlackConfig.from_settings(settings)
    assert "xoxb-1" not in str(caught.value) and SIGNING_SECRET not in str(caught.value)
    with pytest.raises(ConfigError):
        subscribers(settings)  # the worker refuses to start with them too


def test_valid_settings_and_what_they_say(monkeypatch):
    settings = make(
        monkeypatch,
        SLACK_BOT_TOKEN="xoxb-123",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_CHANNEL="C0APPROVALS",
        SLACK_API_URL="http://127.0.0.1:9/api",
    )
    config = SlackConfig.from_settings(settings)
    assert config.api_url == "http://127.0.0.1:9/api/" and config.http_events and not config.socket_mode
    assert "xoxb-123" not in repr(config) and SIGNING_SECRET not in repr(config)
    assert status_line(settings) == "Slack: on (HTTP events at /slack/events; cards to C0APPROVALS)"
    assert [s.name for s in subscribers(settings)] == ["slack"]
    assert config.allowed_teams == frozenset()
    grid = make(
        monkeypatch,
        SLACK_BOT_TOKEN="xoxb-123",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_CHANNEL="#ops",
        SLACK_ALLOWED_TEAMS=" T0GRID1,E0ORG ,, ",
    )
    assert SlackConfig.from_settings(grid).allowed_teams == {"T0GRID1", "E0ORG"}
    socket_only = make(monkeypatch, SLACK_BOT_TOKEN="xoxb-123", SLACK_APP_TOKEN="xapp-1", SLACK_CHANNEL="#ops")
    assert status_line(socket_only) == "Slack: on (Socket Mode; cards to #ops)"


def test_subscriber_makes_one_deterministic_job_per_record(monkeypatch):
    settings = make(monkeypatch, SLACK_BOT_TOKEN="xoxb-123", SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_CHANNEL="#a")
    (sub,) = subscribers(settings)
    record = {"type": "request.created", "request_id": "req_abc"}
    assert sub.wants(record) and not sub.wants({"type": "audit.checkpoint"})
    assert sub.job_id(7, record) == "slack-7" and sub.args(7, record) == ("req_abc", 7)
    assert sub.retry is not None


def test_manifest_installs_what_the_code_uses():
    manifest = yaml.safe_load(MANIFEST.read_text())
    features, settings = manifest["features"], manifest["settings"]
    url = "https://YOUR-HOST" + EVENTS_PATH
    assert manifest["_metadata"]["major_version"] == 1
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["bot_user"]["display_name"]
    commands = {c["command"]: c for c in features["slash_commands"]}
    assert set(commands) == set(COMMANDS)
    assert all(c["url"] == url and c["description"] for c in commands.values())
    assert settings["interactivity"] == {"is_enabled": True, "request_url": url}
    assert settings["event_subscriptions"]["request_url"] == url
    assert set(settings["event_subscriptions"]["bot_events"]) == set(EVENTS)
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == set(BOT_SCOPES)
    assert settings["socket_mode_enabled"] is False
    assert len(manifest["display_information"]["long_description"]) >= 175  # Slack's minimum
    assert "chat.postMessage" in METHOD_SCOPES
