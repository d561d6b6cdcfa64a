"""`approvalbot audit verify --witness teams`: card threads read back through a fake Microsoft Graph."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.audit_witness import cut_tail_and_newest_checkpoint, rewrite, run_verify, sign_head
from tests.teams.conftest import TEAM_GROUP_ID, TENANT, new_conversation
from tests.teams.fake_graph import APP_ID, APP_SECRET, FakeGraph


@pytest.fixture
async def graph(connector):
    fake = FakeGraph(connector, TEAM_GROUP_ID, TENANT, page_size=2)  # small pages: the client must follow them
    await fake.start()
    yield fake
    await fake.close()


def with_graph(rt, graph, **changes) -> None:
    """The CLI's settings: the bot's app registration (as in production) and Graph at the fake."""
    rt.settings = rt.settings.model_copy(
        update={
            "microsoft_app_id": APP_ID,
            "microsoft_app_password": SecretStr(APP_SECRET),
            "teams_graph_url": graph.base + "/v1.0",
            "teams_graph_token_url": graph.base + "/{tenant}/oauth2/v2.0/token",
            **changes,
        }
    )


def mirrored(connector) -> set[int]:
    return {int(card["fallbackText"].split()[0][1:]) for card in connector.cards("reply")}


async def history(teams, rt) -> tuple[int, list[str]]:
    await teams.add_bot(new_conversation("approvals"), name="approvals")
    _, token = await teams.service.identities.add_approver("bob@example.com", [])
    ids = [(await teams.ask(resource=f"table-{n}"))["id"] for n in range(2)]
    await teams.decide(ids[0], token, "approve", "fine")
    await teams.run_jobs()
    first = await sign_head(rt, teams.service)
    ids.append((await teams.ask(resource="table-late"))["id"])
    await teams.decide(ids[1], token, "deny", "no")
    await teams.run_jobs()
    await sign_head(rt, teams.service)
    return first, ids


async def test_untouched_log_agrees_with_the_threads(teams, rt, graph, capsys):
    await history(teams, rt)
    with_graph(rt, graph)
    code, report, err = await run_verify(rt, capsys, "--witness", "teams")
    assert code == 0, err
    witness = report["witness"]
    assert witness["ok"] and witness["threads"] == witness["threads_read"] == 3 and not witness["unread"]
    assert witness["witnessed"] == len(mirrored(teams.fake)) > 5
    assert any("$skiptoken" in r for r in graph.requests)  # pages were followed


async def test_cutting_the_tail_and_the_newest_checkpoint_is_caught_by_the_threads(teams, rt, redis, graph, capsys):
    keep, ids = await history(teams, rt)
    lost = sorted(s for s in mirrored(teams.fake) if s > keep)
    assert lost
    await cut_tail_and_newest_checkpoint(redis, keep)
    with_graph(rt, graph)

    code, report, _ = await run_verify(rt, capsys)
    assert code == 0 and report["ok"]  # what plain verify cannot see

    code, report, err = await run_verify(rt, capsys, "--witness", "teams")
    assert code == 1 and report["problem"]["kind"] == "truncated" and report["problem"]["seq"] == lost[0]
    assert [f["seq"] for f in report["witness"]["findings"]] == lost
    assert ids[2] in {f["request_id"] for f in report["witness"]["findings"]}
    assert err.startswith(f"FAILED at seq {lost[0]}: truncated")


async def test_a_rewritten_record_and_foreign_messages(teams, rt, redis, graph, capsys):
    await history(teams, rt)
    target = max(mirrored(teams.fake))
    await redis.rpop("ab:audit:checkpoints")
    await rewrite(redis, target, {"reason": "nothing to see"})
    # A person's message that copies an audit card witnesses nothing: only our app's replies count.
    forged = {
        "id": "1799999999999",
        "from": {"user": {"id": "aad-mallory", "displayName": "Mallory"}, "application": None, "device": None},
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": '{"body": [{"columns": [{"items": [{"text": "#999"}]}]}, {"text": "hash 0123456789ab"}]}',
            }
        ],
    }
    graph.extra.append(forged)
    with_graph(rt, graph)
    code, report, _ = await run_verify(rt, capsys, "--witness", "teams")
    assert code == 1
    assert [(f["seq"], f["kind"]) for f in report["witness"]["findings"]] == [(target, "changed")]


async def test_missing_graph_credentials_exit_2_and_say_what_is_needed(teams, rt, graph, capsys):
    await history(teams, rt)
    code, _, err = await run_verify(rt, capsys, "--witness", "teams")  # dev mode: no app registration
    assert code == 2
    assert "MICROSOFT_APP_PASSWORD" in err and "ChannelMessage.Read.All" in err
    with_graph(rt, graph, microsoft_app_password=SecretStr("wrong"))
    code, report, err = await run_verify(rt, capsys, "--witness", "teams")
    assert code == 0 and {u["code"] for u in report["witness"]["unread"]} == {"token_http_401"}
    assert APP_SECRET not in err and "wrong" not in err + str(report)
