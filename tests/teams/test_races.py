"""Two clickers at once, in Teams and through the API: exactly one outcome."""

from __future__ import annotations

import asyncio

from .conftest import new_conversation
from .test_flow import texts


async def test_two_clickers_at_once_one_outcome(teams, people):
    channel = new_conversation("approvals")
    await teams.add_bot(channel, name="approvals")
    await teams.service.identities.add_approver("alice@example.com", [])
    await teams.service.identities.add_approver("bob@example.com", [])
    _, carol_token = await teams.service.identities.add_approver("carol@example.com", [])
    for _ in range(5):
        created = await teams.ask()
        await teams.run_jobs()  # the card is in the channel before the race
        results = await asyncio.gather(
            teams.click(people["alice"], channel, "approve", created["id"], reason="go"),
            teams.click(people["bob"], channel, "deny", created["id"], deny_reason="stop"),
            teams.call(
                "POST",
                f"/v1/requests/{created['id']}/decisions",
                carol_token,
                json={"decision": "deny", "reason": "api says no"},
            ),
        )
        (s1, alice), (s2, bob), (s3, carol) = results
        assert (s1, s2) == (200, 200)
        _, final = await teams.call("GET", f"/v1/requests/{created['id']}", teams.agent_token)
        assert final["status"] in ("approved", "denied") and len(final["decisions"]) == 1
        winners = [
            t
            for t in (texts(alice["value"]), texts(bob["value"]))
            if any(x.startswith("You ") and ("approved" in x or "denied" in x) for x in t)
        ] + ([carol] if s3 == 200 else [])
        assert len(winners) == 1
        losers = [t for t in (texts(alice["value"]), texts(bob["value"])) if any("no longer pending" in x for x in t)]
        assert len(losers) == (2 if s3 == 200 else 1)
        types = [r.as_dict()["type"] for r in await teams.service.audit.for_request(created["id"])]
        assert sum(t in ("request.approved", "request.denied") for t in types) == 1
    await teams.run_jobs()
    # Every channel card ends in its final state, updated once.
    assert len(teams.fake.cards("update", channel)) == 5
    assert all(any(t.startswith("Outcome: ") for t in texts(c)) for c in teams.fake.cards("update", channel))
