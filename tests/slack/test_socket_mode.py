"""Socket Mode against a fake Socket Mode server: envelopes in, acks out, same listeners."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.runtime import ConfigError
from approvalbot.web.context import SERVICES
from tests.slack.conftest import SlackHarness
from tests.slack.fake_slack import APP_TOKEN


async def _ack(fake, envelope_id):
    while True:
        message = await asyncio.wait_for(fake.socket_received.get(), timeout=5)
        if message.get("envelope_id") == envelope_id:
            return message


@pytest.fixture
def socket_settings(slack_env, monkeypatch, redis_url, data_dir) -> Settings:
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.delenv("SLACK_SIGNING_SECRET")  # Socket Mode alone: no public URL, no signing secret
    return Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir)


async def test_socket_mode_runs_the_same_app(socket_settings, rt, redis, fake_slack):
    service = rt.service(redis)
    _, agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
    await service.identities.add_approver("alice@example.com", ["security"])
    app = build_app(socket_settings, service)
    assert "slack" in app[SERVICES].extras  # build_app mounted Slack
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()  # connects: apps.connections.open, then the WebSocket
    try:
        await asyncio.wait_for(fake_slack.socket_connected.wait(), timeout=5)
        (_opened,) = fake_slack.calls_of("apps.connections.open")
        assert [c.token for c in fake_slack.calls if c.method == "apps.connections.open"] == [APP_TOKEN]

        async with aiohttp.ClientSession() as http:
            harness = SlackHarness(
                api=None,
                fake=fake_slack,
                base=str(server.make_url("")).rstrip("/"),
                http=http,
                queue=None,
                outbox=None,
                app=app,
            )
            async with http.post(harness.base + "/slack/events", data="payload={}") as resp:
                assert resp.status == 404  # no signing secret: no HTTP endpoint to forge requests to
            async with http.post(
                harness.base + "/v1/requests",
                json={"action": "dataset.export"},
                headers={"Authorization": f"Bearer {agent_token}"},
            ) as resp:
                req = await resp.json()

            await fake_slack.send_envelope(
                {
                    "envelope_id": "env-click-1",
                    "type": "interactive",
                    "accepts_response_payload": False,
                    "payload": harness.click_payload("U0ALICE", req["id"], "approve"),
                }
            )
            ack = await _ack(fake_slack, "env-click-1")
            assert ack == {"envelope_id": "env-click-1"}
            view = await harness.opened_view()
            assert json.loads(view["private_metadata"])["r"] == req["id"]

            await fake_slack.send_envelope(
                {
                    "envelope_id": "env-submit-1",
                    "type": "interactive",
                    "accepts_response_payload": True,
                    "payload": harness.submission("U0ALICE", view, "fine over the socket"),
                }
            )
            await _ack(fake_slack, "env-submit-1")
            await harness.ephemerals_to("U0ALICE")
            decided = await service.get(req["id"])
            assert decided.status == "approved" and decided.decisions[0].channel == "slack"

            await fake_slack.send_envelope(
                {
                    "envelope_id": "env-cmd-1",
                    "type": "slash_commands",
                    "accepts_response_payload": True,
                    "payload": {
                        "command": "/pending",
                        "text": "",
                        "user_id": "U0ALICE",
                        "team_id": "T0FAKE",
                        "channel_id": "C0APPROVALS",
                        "response_url": fake_slack.response_url("sock"),
                        "api_app_id": "A0APP",
                        "trigger_id": "t-1",
                    },
                }
            )
            assert (await _ack(fake_slack, "env-cmd-1"))["envelope_id"] == "env-cmd-1"
    finally:
        await server.close()
    assert not fake_slack.sockets or all(ws.closed for ws in fake_slack.sockets)


async def test_a_refused_app_token_stops_start_up(socket_settings, rt, redis, fake_slack, monkeypatch):
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-revoked")
    settings = Settings(REDIS_URL=rt.redis_url, APPROVALBOT_DATA_DIR=socket_settings.data_dir)
    app = build_app(settings, rt.service(redis))
    assert "slack" in app[SERVICES].extras
    server = TestServer(app, host="127.0.0.1", port=0)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN was refused"):
        await server.start_server()
    await server.close()
