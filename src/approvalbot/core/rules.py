"""Who may see and decide a request, what a decision needs, and how approvals count.

These rules live here and only here. Every channel (API, Slack, Teams) resolves
its user to an authenticated email first and then asks this module, so one person
is one identity everywhere and no channel can be more lenient than another.
"""

from __future__ import annotations

from typing import TypeGuard

from approvalbot.core.errors import ReasonRequired, Refusal
from approvalbot.core.models import Actor, ApprovalRequest, Approver

__all__ = [
    "ANY_APPROVER",
    "Refusal",
    "approval_progress",
    "approvals_given",
    "check_reason",
    "clean_reason",
    "is_active_approver",
    "is_named_approver",
    "is_requester",
    "may_decide",
    "may_view",
    "pending_targets",
    "pending_targets_of",
    "reason_missing",
    "refusal_for",
]

ANY_APPROVER = "*"
APPROVE, DENY = "approve", "deny"


def is_active_approver(approver: Approver | None) -> TypeGuard[Approver]:
    """A registered approver whose access has not been revoked."""
    return approver is not None and not approver.revoked


def is_requester(request: ApprovalRequest, email: str | None) -> bool:
    """The agent's owner and the person it acts for stand behind the request."""
    return email is not None and email.lower() in request.requesters


def is_named_approver(request: ApprovalRequest, approver: Approver) -> bool:
    targets = set(request.policy.approvers)
    if ANY_APPROVER in targets or approver.email in targets:
        return True
    return any(group in targets for group in approver.groups)


def may_view(
    request: ApprovalRequest,
    *,
    agent_id: str | None = None,
    approver: Approver | None = None,
    email: str | None = None,
) -> bool:
    """Whether a viewer may read a request and its audit trail.

    An agent sees only its own requests (to it, others do not exist). A registered
    approver sees every request, since any of them may be asked to decide one. The
    people behind a request see it even when they are not approvers.
    """
    if agent_id is not None:
        return request.agent_id == agent_id
    if is_active_approver(approver):
        return True
    return is_requester(request, email)


def refusal_for(request: ApprovalRequest, actor: Actor, approver: Approver | None) -> Refusal | None:
    """The first reason this actor may not decide now, or None if they may.

    Order matters: self-approval is reported before eligibility so that an owner
    who is also in the approver group learns the real reason, and the attempt is
    recorded as such.
    """
    if actor.kind != "human":
        return Refusal.NOT_HUMAN
    if is_requester(request, actor.email):
        return Refusal.SELF_APPROVAL
    if not is_active_approver(approver) or approver.email != actor.email:
        return Refusal.UNKNOWN_APPROVER
    if not is_named_approver(request, approver):
        return Refusal.NOT_ELIGIBLE
    if request.status.final:
        return Refusal.NOT_PENDING
    if any(d.approver == approver.email for d in request.decisions):
        return Refusal.ALREADY_DECIDED
    return None


def may_decide(request: ApprovalRequest, approver: Approver) -> bool:
    """For listing: would this approver be allowed to decide this pending request?"""
    actor = Actor(kind="human", id=approver.id, email=approver.email)
    return refusal_for(request, actor, approver) is None


def clean_reason(raw: object) -> str | None:
    """A typed reason as the rules see it: surrounding space dropped, blank means none."""
    return (raw.strip() or None) if isinstance(raw, str) else None


def reason_missing(decision: str, reason: str | None) -> bool:
    """A deny must say why (approving may); whitespace is no reason."""
    return decision == DENY and clean_reason(reason) is None


def check_reason(decision: str, reason: str | None) -> None:
    if reason_missing(decision, reason):
        raise ReasonRequired()


def approvals_given(request: ApprovalRequest) -> int:
    return sum(1 for d in request.decisions if d.decision == APPROVE)


def approval_progress(request: ApprovalRequest) -> tuple[int, int]:
    """(approvals so far, approvals the policy requires), for "1 of 2 approvals" lines."""
    approvals = approvals_given(request)
    return approvals, max(request.policy.min_approvals, approvals)


def pending_targets(approver: Approver) -> list[str]:
    """Index names under which requests this approver may decide are filed."""
    return [ANY_APPROVER, approver.email, *approver.groups]


def pending_targets_of(request: ApprovalRequest) -> list[str]:
    """Index names a pending request is filed under: its policy's approvers, or anyone."""
    return list(dict.fromkeys(request.policy.approvers)) or [ANY_APPROVER]
