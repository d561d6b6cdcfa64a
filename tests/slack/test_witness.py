"""`approvalbot audit verify --witness slack`: the card threads in (fake) Slack against the log in (real) Redis."""

from __future__ import annotations

from approvalbot.audit.witness import Logged, LogView, Witnessed, compare
from approvalbot.store import keys
from tests.audit_witness import cut_tail_and_newest_checkpoint, rewrite, run_verify, sign_head
from tests.slack.conftest import CHANNEL


def mirrored(slack) -> dict[int, str]:
    """seq -> request id of every audit reply the fake Slack holds."""
    out = {}
    for message in slack.fake.messages.get(CHANNEL, []):
        meta = message.get("metadata") or {}
        if meta.get("event_type") == "approvalbot_audit":
            out[meta["event_payload"]["seq"]] = meta["event_payload"]["request_id"]
    return out


async def history(slack, rt) -> tuple[int, list[str]]:
    """Three requests in Slack, a checkpoint between them; returns (the first checkpoint's seq, request ids)."""
    ids = []
    for n in range(2):
        _, req = await slack.api.ask(action="dataset.export", resource=f"table-{n}")
        ids.append(req["id"])
    await slack.api.decide(ids[0], slack.api.approver_token, "approve", "looks fine")
    await slack.run_jobs()
    first = await sign_head(rt, slack.service)
    _, req = await slack.api.ask(action="dataset.export", resource="table-late")
    ids.append(req["id"])
    await slack.api.decide(ids[1], slack.api.approver_token, "deny", "not today")
    await slack.run_jobs()
    await sign_head(rt, slack.service)
    return first, ids


async def test_untouched_log_agrees_with_the_threads(slack, rt, capsys):
    await history(slack, rt)
    code, report, err = await run_verify(rt, capsys, "--witness", "slack")
    assert code == 0, err
    assert report["ok"] and report["witness"]["ok"] and report["witness"]["threads"] == 3
    assert report["witness"]["witnessed"] == len(mirrored(slack)) > 5
    assert "slack witness" in err and "agree with the log" in err


async def test_cutting_the_tail_and_the_newest_checkpoint_is_caught_by_the_threads(slack, rt, redis, capsys):
    keep, ids = await history(slack, rt)
    shown = mirrored(slack)
    lost = sorted(s for s in shown if s > keep)
    assert lost and ids[2] in {shown[s] for s in lost}
    await cut_tail_and_newest_checkpoint(redis, keep)

    code, report, err = await run_verify(rt, capsys)
    assert code == 0 and report["ok"], report  # what plain verify cannot see

    code, report, err = await run_verify(rt, capsys, "--witness", "slack")
    assert code == 1 and not report["ok"]
    assert report["problem"]["kind"] == "truncated" and report["problem"]["seq"] == lost[0]
    findings = report["witness"]["findings"]
    assert [f["seq"] for f in findings] == lost and {f["kind"] for f in findings} == {"lost"}
    assert {f["request_id"] for f in findings} == {shown[s] for s in lost}
    assert err.startswith(f"FAILED at seq {lost[0]}: truncated")


async def test_a_rewritten_record_is_reported_as_changed(slack, rt, redis, capsys):
    await history(slack, rt)
    target = max(mirrored(slack))
    await redis.rpop(keys.AUDIT_CHECKPOINTS)  # the rewrite lies after the last checkpoint that remains
    await rewrite(redis, target, {"reason": "nothing to see"})
    code, report, _ = await run_verify(rt, capsys)
    assert code == 0, report  # a recomputed chain after the last checkpoint: plain verify is satisfied

    code, report, _ = await run_verify(rt, capsys, "--witness", "slack")
    assert code == 1
    assert [(f["seq"], f["kind"]) for f in report["witness"]["findings"]] == [(target, "changed")]
    assert "hashes to" in report["witness"]["findings"][0]["detail"]


async def test_only_the_bots_own_replies_witness(slack, rt, redis, capsys):
    """A person posting a look-alike reply with forged metadata in the thread witnesses nothing."""
    _, ids = await history(slack, rt)
    card = slack.card_for(ids[0])
    forged = {
        "type": "message",
        "ts": "9999999999.000001",
        "thread_ts": card["ts"],
        "text": "#999 0123456789ab forged",
        "user": "U0MALLORY",
        "metadata": {"event_type": "approvalbot_audit", "event_payload": {"request_id": ids[0], "seq": 999}},
    }
    slack.fake.messages[CHANNEL].append(forged)
    code, report, _ = await run_verify(rt, capsys, "--witness", "slack")
    assert code == 0 and report["witness"]["ok"], report


async def test_an_unreadable_thread_is_listed_not_a_finding(slack, rt, capsys):
    await history(slack, rt)
    slack.fake.fail("conversations.replies", error="not_in_channel")
    code, report, err = await run_verify(rt, capsys, "--witness", "slack")
    assert code == 0 and report["witness"]["unread"][0]["code"] == "not_in_channel"
    assert "could not be read" in err


def test_compare_is_pure():
    log = LogView(3, {2: Logged("req_a", "ab" * 32), 3: Logged("req_b", "cd" * 32)})
    seen = [
        Witnessed("req_a", 2, "ab" * 6, "x"),  # agrees
        Witnessed("req_a", 3, "cd" * 6, "x"),  # another request's record at that seq
        Witnessed("req_b", 3, "ef" * 6, "x"),  # hash differs
        Witnessed("req_b", 4, "", "x"),  # beyond the end
    ]
    assert [(f.seq, f.kind, f.request_id) for f in compare(seen, log)] == [
        (3, "changed", "req_a"),
        (3, "changed", "req_b"),
        (4, "lost", "req_b"),
    ]
