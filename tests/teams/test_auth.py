"""Configuration: Teams off / dev mode / authenticated, and unauthenticated activities rejected."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from approvalbot.app import build_app
from approvalbot.config import Settings
from approvalbot.teams.delivery import subscribers
from approvalbot.teams.mount import mount
from approvalbot.teams.references import ReferenceStore
from approvalbot.teams.settings import TeamsConfigError, status_line, teams_settings
from approvalbot.web.context import SERVICES

from .conftest import OTHER_TENANT, TENANT, new_conversation

APP_ID = "5b1f0a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


async def test_with_an_app_id_unauthenticated_activities_are_rejected(
    rt, redis, redis_url, data_dir, connector, people
):
    settings = Settings(
        REDIS_URL=redis_url,
        APPROVALBOT_DATA_DIR=data_dir,
        MICROSOFT_APP_ID=APP_ID,
        MICROSOFT_APP_PASSWORD="not-a-real-secret",
        APPROVALBOT_TEAMS_TENANTS=TENANT,
    )
    service = rt.service(redis)
    app = build_app(settings, service)
    assert "teams" in app[SERVICES].extras  # build_app mounted Teams
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    channel = new_conversation("approvals")
    _, agent = await service.identities.add_agent("etl-bot", "owner@example.com")
    await service.identities.add_approver("alice@example.com", [])
    try:
        async with aiohttp.ClientSession() as http:
            base = str(server.make_url("")).rstrip("/")
            async with http.post(
                base + "/v1/requests", json={"action": "dataset.export"}, headers={"Authorization": f"Bearer {agent}"}
            ) as resp:
                request_id = (await resp.json())["id"]
            common = {
                "serviceUrl": connector.url,
                "channelId": "msteams",
                "recipient": {"id": "28:approvalbot-bot"},
                "from": {"id": "29:alice", "aadObjectId": "aad-alice"},
                "conversation": {"id": channel, "conversationType": "channel"},
                "channelData": {"team": {"id": channel}, "tenant": {"id": TENANT}},
            }
            # The same from another tenant: the token is checked first, so it is a 401 too, not a 403 that
            # an unauthenticated sender could use to write `identity.refused` records.
            foreign = {**common, "channelData": {"team": {"id": channel}, "tenant": {"id": OTHER_TENANT}}}
            install = {"type": "conversationUpdate", "membersAdded": [{"id": "28:approvalbot-bot"}], **common}
            click = {
                "type": "invoke",
                "name": "adaptiveCard/action",
                **common,
                "value": {"action": {"type": "Action.Execute", "verb": "approve", "data": {"request_id": request_id}}},
            }
            foreign_install = {**install, **foreign}
            for activity in (install, click, foreign_install):
                async with http.post(base + "/api/messages", json=activity) as resp:
                    assert resp.status == 401
    finally:
        await server.close()
    assert await ReferenceStore(redis).all() == []
    assert connector.calls == []
    assert (await service.get(request_id)).status.value == "pending"
    assert [r.as_dict()["type"] for r in await service.audit.for_request(request_id)] == ["request.created"]
    assert not [r async for r in service.audit.records() if r.as_dict()["type"] == "identity.refused"]


def test_without_app_id_or_dev_mode_teams_is_off(redis_url, data_dir):
    settings = Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir)
    assert teams_settings(settings).mode == "off"
    assert status_line(settings).startswith("Teams: off")
    assert subscribers(settings) == []

    class Ctx:
        pass

    ctx = Ctx()
    ctx.settings = settings
    from aiohttp import web

    app = web.Application()
    assert mount(app, teams_settings(settings)) is False
    assert not [r for r in app.router.routes() if r.resource and r.resource.canonical == "/api/messages"]


def test_dev_mode_says_so_loudly(redis_url, data_dir, caplog):
    settings = Settings(
        REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, APPROVALBOT_TEAMS_DEV=True, APPROVALBOT_TEAMS_TENANTS=TENANT
    )
    with caplog.at_level(logging.WARNING, logger="approvalbot.teams"):
        line = status_line(settings)
    assert line.startswith("Teams: DEV MODE")
    assert any("UNAUTHENTICATED" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert [s.name for s in subscribers(settings)] == ["teams"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"MICROSOFT_APP_TYPE": "SingleTenant", "MICROSOFT_APP_PASSWORD": "x"}, "MICROSOFT_APP_TENANT_ID"),
        ({}, "MICROSOFT_APP_PASSWORD"),
        ({"MICROSOFT_APP_PASSWORD": "x"}, "MICROSOFT_APP_TENANT_ID or APPROVALBOT_TEAMS_TENANTS"),
        ({"MICROSOFT_APP_TYPE": "Sideways", "MICROSOFT_APP_PASSWORD": "x"}, "MICROSOFT_APP_TYPE"),
    ],
)
def test_incomplete_registration_fails_at_start_up(redis_url, data_dir, extra, message):
    settings = Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, MICROSOFT_APP_ID=APP_ID, **extra)
    with pytest.raises(TeamsConfigError, match=message):
        teams_settings(settings).validate()
    with pytest.raises(TeamsConfigError, match=message):
        status_line(settings)  # the start-up line validates too, before any traffic
    complete = Settings(
        REDIS_URL=redis_url, MICROSOFT_APP_ID=APP_ID, MICROSOFT_APP_PASSWORD="x", APPROVALBOT_TEAMS_TENANTS=TENANT
    )
    assert status_line(complete).startswith("Teams: on")


def test_stray_teams_settings_without_an_app_id_are_an_error(redis_url, data_dir):
    from approvalbot.runtime import ConfigError

    settings = Settings(REDIS_URL=redis_url, APPROVALBOT_DATA_DIR=data_dir, MICROSOFT_APP_PASSWORD="x")
    with pytest.raises(ConfigError, match="MICROSOFT_APP_PASSWORD set but MICROSOFT_APP_ID is not"):
        status_line(settings)
