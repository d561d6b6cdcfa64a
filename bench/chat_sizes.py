"""Chat message sizes as sent, and what fitting them costs.

    .venv/bin/python bench/chat_sizes.py

For the largest request the API accepts (every field at its maximum, 49 approvers, 12 decisions
with 4,000-character reasons, 60 auto-refresh ids), filled with ASCII, CJK, our `<` look-alike
and emoji: the Teams card in bytes as botbuilder sends it (its own serializer, `json.dumps`,
non-ASCII escaped), whole and as fitted to APPROVALBOT_TEAMS_MAX_BYTES (28,000); the `approval ID`
trail of 50 records with 300-character reasons, whole and per page; the Slack "Approvers:" line;
and the time to build a fitted card (CPU, one thread). Prints figures, asserts nothing.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.core.factories import AGENT, NOW, policy

from approvalbot.core import machine, masking
from approvalbot.core.ids import new_request_id
from approvalbot.core.models import ApprovalRequest, Channel, Decision, RequestCreate
from approvalbot.slack import blocks
from approvalbot.teams import cards, sdk

REFERENCE = {
    "bot": {"id": "28:" + "b" * 36, "name": "approvalbot"},
    "conversation": {"isGroup": True, "conversationType": "channel", "id": "19:" + "c" * 32 + "@thread.tacv2"},
    "channelId": "msteams",
    "serviceUrl": "https://smba.trafficmanager.net/emea/5b1c7e2a-3f4d-4c6b-9a8e-0d2f6e1a7b3c/",
}
USERS = ["29:" + "u" * 90 + str(i) for i in range(60)]
APPROVERS = [f"approver-{i:02d}-{'x' * 52}@{'long-department-name.' * 4}example.com" for i in range(49)]
FILLS = {"ASCII": "x", "CJK": "\u6f22", "look-alike <": "\uff1c", "emoji": "\U0001f600"}


def sent(card: dict[str, Any]) -> int:
    return sdk.sent_bytes(sdk.outgoing(sdk.card_activity(card, card.get("fallbackText")), REFERENCE))


def largest(fill: str) -> ApprovalRequest:
    body = RequestCreate(
        action="deploy.production",
        resource=fill * 1000,
        justification=fill * 4000,
        context={f"k{i}": fill * 2000 for i in range(50)},
        params={f"p{i}": fill * 500 for i in range(40)},
    )
    applied = policy(APPROVERS, min_approvals=13)
    masked = masking.masked_view(
        params=body.params, context=body.context, justification=body.justification, resource=body.resource,
        policy=applied, key=b"k" * 32,
    )  # fmt: skip
    request = machine.create(new_request_id(), body, AGENT, applied, NOW, [], masked).request
    decisions = [
        Decision(approver=f"a{i}@example.com", decision="approve", reason=fill * 4000, at=NOW, channel=Channel.TEAMS)
        for i in range(12)
    ]
    return request.model_copy(update={"decisions": decisions, "expires_at": NOW + timedelta(hours=1)})


def trail(request: ApprovalRequest, fill: str) -> list[dict[str, Any]]:
    return [
        {
            "seq": i + 1,
            "type": "approval.recorded",
            "at": NOW.isoformat(),
            "hash": "ab" * 32,
            "actor": {"kind": "human", "email": f"a{i}@example.com"},
            "reason": fill * 300,
        }
        for i in range(50)
    ]


def main() -> None:
    print(f"Teams budget {cards.DEFAULT_MAX_BYTES} bytes as sent; sizes in bytes as botbuilder sends them")
    print(
        f"{'text':<14}{'card whole':>12}{'fitted':>9}{'summary':>9}{'trail whole':>13}{'pages':>7}{'largest page':>14}"
    )
    for name, fill in FILLS.items():
        request = largest(fill)
        whole = cards.request_card(request, refresh_user_ids=USERS)
        fitted = cards.fit_request_card(request, refresh_user_ids=USERS)
        records = trail(request, fill)
        all_in_one = cards.card(
            [cards.rich(cards.run(r["reason"], 300)) for r in records]
        )  # one card with the whole trail, as before paging
        pages = cards.audit_pages(records)
        biggest = max(sent(cards.audit_page_card(request, records, p + 1)) for p in range(len(pages)))
        print(
            f"{name:<14}{sent(whole):>12}{sent(fitted):>9}{sent(cards.summary_card(request)):>9}"
            f"{sent(all_in_one):>13}{len(pages):>7}{biggest:>14}"
        )
    request = largest("x")
    line = next(
        b["text"]["text"]
        for b in blocks.card(request).blocks
        if b["type"] == "section" and b.get("text", {}).get("text", "").startswith("*Approvers:*")
    )
    print(f"Slack: 49 approvers ({sum(len(a) for a in APPROVERS)} characters) -> an Approvers line of {len(line)}")
    for name, fill in FILLS.items():
        request = largest(fill)
        n = 20
        started = time.process_time()
        for _ in range(n):
            cards.fit_request_card(request, refresh_user_ids=USERS)
        per = (time.process_time() - started) / n * 1000
        print(f"fit_request_card, {name}: {per:.1f} ms CPU per card")


if __name__ == "__main__":
    main()
