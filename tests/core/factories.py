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


def approver(email: str, groups: tuple[str, ...] = (), revoked: bool = False) -> Approver:
    return Approver(id=f"ap_{email.split('@')[0]}", email=email, groups=list(groups), created_at=NOW, revoked=revoked)


def request(
    *,
    status: Status = Status.PENDING,
    approvers: list[str] | None = None,
    min_approvals: int = 1,
    on_behalf_of: str | None = None,
    decisions: tuple[tuple[str, str], ...] = (),
    callback_url: str | None = None,
) -> ApprovalRequest:
    """A request as the store would hand it back; `decisions` are (email, "approve"|"deny")."""
    return ApprovalRequest(
        id="req_abcdefghijklmnop",
        status=status,
        action="db.migrate",
        agent_id=AGENT.id,
        agent_name=AGENT.name,
        owner=AGENT.owner,
        on_behalf_of=on_behalf_of,
        callback_url=callback_url,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        policy=policy(approvers, min_approvals),
        approvals_needed=min_approvals,
        decisions=[Decision(approver=e, decision=d, reason="r", at=NOW) for e, d in decisions],  # type: ignore[arg-type]
    )


def ask(**fields: Any) -> RequestCreate:
    return RequestCreate(action="db.migrate", **fields)
