"""The examples in examples/ work as documented, against the real server."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from tests.helpers import approve_when_asked

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def agent_env(api, monkeypatch):
    monkeypatch.setenv("APPROVALBOT_URL", api.base)
    monkeypatch.setenv("APPROVALBOT_TOKEN", api.agent_token)
    agent = await api.service.identities.get_agent_by_name("etl-bot")
    monkeypatch.setenv("APPROVALBOT_AGENT_ID", agent.id)


async def test_agent_export_then_executor_verifies_and_redeems_once(api, agent_env, capsys):
    agent = load("agent_export")
    executor = load("executor_verify_grant")
    decider = asyncio.create_task(approve_when_asked(api))
    await asyncio.to_thread(agent.export, "customers", "s3://analytics-drop/customers.parquet")
    approved = await decider
    assert "exporting customers" in capsys.readouterr().out

    _, keys = await api.call("GET", "/v1/keys")
    pem = keys["keys"][0]["pem"]
    await asyncio.to_thread(
        executor.perform_export, approved["grant"], pem, "customers", "s3://analytics-drop/customers.parquet"
    )
    assert "approved by alice@example.com" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="grant_used"):
        await asyncio.to_thread(
            executor.perform_export, approved["grant"], pem, "customers", "s3://analytics-drop/customers.parquet"
        )
    with pytest.raises(SystemExit, match="resource_mismatch"):
        await asyncio.to_thread(
            executor.perform_export, approved["grant"], pem, "payroll", "s3://analytics-drop/customers.parquet"
        )


async def test_executor_refuses_a_grant_issued_to_another_agent(api, agent_env, monkeypatch, capsys):
    agent = load("agent_export")
    executor = load("executor_verify_grant")
    decider = asyncio.create_task(approve_when_asked(api))
    await asyncio.to_thread(agent.export, "customers", "s3://analytics-drop/customers.parquet")
    approved = await decider
    _, keys = await api.call("GET", "/v1/keys")
    monkeypatch.setenv("APPROVALBOT_AGENT_ID", "agt_someoneelse")
    with pytest.raises(SystemExit, match="another agent"):
        await asyncio.to_thread(
            executor.perform_export,
            approved["grant"],
            keys["keys"][0]["pem"],
            "customers",
            "s3://analytics-drop/customers.parquet",
        )


async def test_agent_export_denied_raises_with_reason_and_never_exports(api, agent_env, capsys):
    agent = load("agent_export")
    decider = asyncio.create_task(approve_when_asked(api, "deny", "payroll never leaves"))
    with pytest.raises(agent.Denied) as denied:
        await asyncio.to_thread(agent.export, "payroll", "s3://x")
    await decider
    assert denied.value.reason == "payroll never leaves"
    assert "exporting" not in capsys.readouterr().out
