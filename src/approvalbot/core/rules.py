"""Who may decide a request. The rule against self-approval lives here and only here.

Every channel (API, Slack, Teams) resolves its user to an authenticated email
first and then asks this module, so one person is one identity everywhere.
"""

from __future__ import annotations

from enum import StrEnum

from approvalbot.core.models import Actor, ApprovalRequest, Approver

ANY_APPROVER = "*"


class Refusal(StrEnum):
    """Why a would-be decider was turned away; values double as API error codes."""

    NOT_HUMAN = "forbidden"
    UNKNOWN_APPROVER = "not_an_approver"
    SELF_APPROVAL = "self_approval"
    NOT_ELIGIBLE = "not_eligible"
    ALREADY_DECIDED = "already_decided"
    NOT_PENDING = "not_pending"


def is_requester(request: ApprovalRequest, email: str | None) -> bool:
    """The agent's owner and the person it acts for stand behind the request."""
    return email is not None and email.lower() in request.requesters


def is_named_approver(request: ApprovalRequest, approver: Approver) -> bool:
    targets = set(request.policy.approvers)
    if ANY_APPROVER in targets or approver.email in targets:
        return True
    return any(group in targets for group in approver.groups)


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
    if approver is None or approver.revoked or approver.email != actor.email:
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


def pending_targets(approver: Approver) -> list[str]:
    """Index names under which requests this approver may decide are filed."""
    return [ANY_APPROVER, approver.email, *approver.groups]
