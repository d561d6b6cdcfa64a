"""Schemathesis fuzzes every operation of our OpenAPI document against the real web process.

No input may cause a 5xx, and a refused call (4xx) must leave the audit log,
and therefore the state, exactly as it was.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from approvalbot.web.openapi import document
from tests.reliability.conftest import make_tokens

schema = schemathesis.openapi.from_dict(document())

APPROVER_OPERATIONS = {("GET", "/v1/requests"), ("POST", "/v1/requests/{id}/decisions")}


@pytest.fixture
def live(redis_url, spawn):
    server = spawn(redis_url, "web", web=True)
    agent, approvers = asyncio.run(make_tokens(redis_url))
    client = redis.Redis.from_url(redis_url)
    yield server, agent, approvers[0], client
    client.close()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api(case, live):
    server, agent, approver, client = live
    token = approver if (case.method.upper(), case.path) in APPROVER_OPERATIONS else agent
    before = client.llen("ab:audit:log")
    response = case.call(base_url=server.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        assert client.llen("ab:audit:log") == before, (case.method, case.path, response.status_code)
