"""Fixtures and helpers shared by the audit and grant tests.

`server` builds the real app and adds the audit routes, the signer and the grant
hook itself (what the lead wires into build_app/runtime), so these tests do not
depend on that wiring being in place and keep working once it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from approvalbot.app import build_app
from approvalbot.audit import grants
from approvalbot.audit.signing import Signer, signer_for
from approvalbot.config import Settings
from approvalbot.web import audit_api
from approvalbot.web.context import SERVICES
from tests.helpers import Api


@dataclass
class Client(Api):
    """The API client plus the signer these tests check signatures with, and grant consumption."""

    signer: Signer | None = None

    async def consume(self, grant: str, token: str | None = None, **extra):
        return await self.call("POST", "/v1/grants/consume", token or self.agent_token, json={"grant": grant, **extra})


def wire(app, signer: Signer) -> None:
    """The app wiring the lead adds to build_app; skipped where it is already there."""
    app[SERVICES].extras.setdefault("signer", signer)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    if "/v1/keys" not in paths:
        app.add_routes(audit_api.routes)


@pytest.fixture
def signer(settings: Settings) -> Signer:
    return signer_for(settings)


@pytest.fixture
async def server(rt, redis, signer):
    service = rt.service(redis)
    grants.install(service, signer)
    app = build_app(rt.settings, service)
    wire(app, signer)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    async with aiohttp.ClientSession() as http:
        client = Client(str(srv.make_url("")).rstrip("/"), http)
        client.service, client.signer = service, signer
        _, client.agent_token = await service.identities.add_agent("etl-bot", "owner@example.com")
        _, client.approver_token = await service.identities.add_approver("alice@example.com", ["security"])
        yield client
    await srv.close()
