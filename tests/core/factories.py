"""Small builders for the core's pure tests: requests, policies, approvers at a fixed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from approvalbot.core.models import (
    Agent,
    AppliedPolicy,
    ApprovalRequest,
    Approver,
    Decision,
    RequestCreate,
    Status,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
AGENT = Agent(id="ag_1", name="deploy-bot", owner="owner@example.com", created_at=NOW)


def policy(approvers: list[str] | None = None, min_approvals: int = 1, **extra: Any) -> AppliedPolicy:
    return AppliedPolicy(
        rule="needs-approval",
        effect="require_approval",
        approvers=["*"] if approvers is None else approvers,
        min_approvals=min_approvals,
        **extra,
    )


def approver(
    email: str,
    groups: tuple[str, ...] = (),
    revoked: bool = False,
    *,
    aliases: tuple[str, ...] = (),
    person_id: str | None = None,
    may_approve: bool = True,
) -> Approver:
    return Approver(
        id=person_id or f"ap_{email.split('@')[0]}",
        email=email,
        aliases=list(aliases),
        groups=list(groups),
        created_at=NOW,
        revoked=revoked,
        may_approve=may_approve,
    )


def request(
    *,
    status: Status = Status.PENDING,
    approvers: list[str] | None = None,
    min_approvals: int = 1,
    on_behalf_of: str | None = None,
    decisions: tuple[tuple[str, str], ...] = (),
    person_decisions: tuple[tuple[str, str], ...] = (),
    requester_ids: list[str] | None = None,
    callback_url: str | None = None,
) -> ApprovalRequest:
    """A request as the store would hand it back; `decisions` are (email, "approve"|"deny") made
    before persons, `person_decisions` (person id, "approve"|"deny")."""
    return ApprovalRequest(
        id="req_abcdefghijklmnop",
        status=status,
        action="db.migrate",
        agent_id=AGENT.id,
        agent_name=AGENT.name,
        owner=AGENT.owner,
        on_behalf_of=on_behalf_of,
        requester_ids=requester_ids or [],
        callback_url=callback_url,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        policy=policy(approvers, min_approvals),
        approvals_needed=min_approvals,
        decisions=[
            *(Decision(approver=e, decision=d, reason="r", at=NOW) for e, d in decisions),  # type: ignore[arg-type]
            *(
                Decision(approver=f"{p}@example.com", person_id=p, decision=d, reason="r", at=NOW)  # type: ignore[arg-type]
                for p, d in person_decisions
            ),
        ],
    )


def ask(**fields: Any) -> RequestCreate:
    return RequestCreate(action="db.migrate", **fields)
