"""Who may see and decide a request, what a decision needs, and how approvals count.

These rules live here and only here. Every channel (API, Slack, Teams) resolves
its user to a person first and then asks this module, so one human is one person
everywhere and no channel can be more lenient than another. Persons are compared
by id; addresses (canonical form only) are a fallback for records made before
persons existed, and only ever make the rules stricter.
"""

from __future__ import annotations

from typing import TypeGuard

from approvalbot.core.addresses import canonical_or_none
from approvalbot.core.errors import ReasonRequired, Refusal
from approvalbot.core.models import Actor, ApprovalRequest, Decision, Person

__all__ = [
    "ANY_APPROVER",
    "Refusal",
    "approval_progress",
    "approvals_given",
    "check_reason",
    "clean_reason",
    "decider_key",
    "has_decided",
    "is_active_approver",
    "is_named_approver",
    "is_requester",
    "may_decide",
    "may_reveal",
    "may_view",
    "pending_targets",
    "pending_targets_of",
    "reason_missing",
    "refusal_for",
    "reveal_refusal",
]

ANY_APPROVER = "*"
APPROVE, DENY = "approve", "deny"


def _address(email: str | None) -> str | None:
    """An address as the rules compare it; one that cannot be canonical is kept lower-cased, so it
    still matches itself (never another person)."""
    if email is None:
        return None
    return canonical_or_none(email) or email.strip().lower()


def is_active_approver(approver: Person | None) -> TypeGuard[Person]:
    """A registered person who may approve and whose access has not been revoked."""
    return approver is not None and not approver.revoked and approver.may_approve


def is_requester(request: ApprovalRequest, person: Person | None = None, email: str | None = None) -> bool:
    """Whether this person (or, for someone known only by an address, this address) stands behind the
    request: the agent's owner or the person it acts for, under any of their addresses."""
    requesters = {_address(e) for e in request.requesters}
    if person is not None and (person.id in request.requester_ids or person.addresses() & requesters):
        return True
    return email is not None and _address(email) in requesters


def is_named_approver(request: ApprovalRequest, approver: Person) -> bool:
    targets = set(request.policy.approvers)
    if ANY_APPROVER in targets or approver.addresses() & targets:
        return True
    return any(group in targets for group in approver.groups)


def decider_key(decision: Decision) -> str:
    """Who a decision counts for: the person, or for older decisions the address."""
    return decision.person_id or f"email:{_address(decision.approver)}"


def has_decided(request: ApprovalRequest, person: Person) -> bool:
    addresses = person.addresses()
    return any(d.person_id == person.id or _address(d.approver) in addresses for d in request.decisions)


def _is_actor(actor: Actor, person: Person) -> bool:
    """The person record really is this actor's (by id; by address for actors without one)."""
    if actor.person_id is not None:
        return actor.person_id == person.id
    return _address(actor.email) in person.addresses()


def may_view(
    request: ApprovalRequest,
    *,
    agent_id: str | None = None,
    approver: Person | None = None,
    email: str | None = None,
) -> bool:
    """Whether a viewer may read a request and its audit trail (least visibility).

    An agent sees only its own requests (to it, others do not exist). A person sees
    a request they stand behind (owner, on_behalf_of), one they have decided, or one
    they are eligible to decide; nobody else does, registered approver or not.
    Someone known only by an address (`email`) sees what they stand behind.
    """
    if agent_id is not None:
        return request.agent_id == agent_id
    if approver is not None:
        if is_requester(request, approver) or has_decided(request, approver):
            return True
        if is_active_approver(approver) and is_named_approver(request, approver):
            return True
    return is_requester(request, email=email)


def refusal_for(request: ApprovalRequest, actor: Actor, approver: Person | None) -> Refusal | None:
    """The first reason this actor may not decide now, or None if they may.

    Order matters: a request that is no longer pending is refused first, before
    anything about the actor is looked at, so a decision on a settled request is
    one cheap 409 and never an audit record (30 clicks on a cancelled request must
    not write 30 records). Self-approval is reported before eligibility so that an
    owner who is also in the approver group learns the real reason, and the attempt
    is recorded as such. A person record that is not the actor's is ignored.
    """
    if request.status.final:
        return Refusal.NOT_PENDING
    if actor.kind != "human":
        return Refusal.NOT_HUMAN
    person = approver if approver is not None and _is_actor(actor, approver) else None
    if is_requester(request, person, actor.email):
        return Refusal.SELF_APPROVAL
    if not is_active_approver(person):
        return Refusal.UNKNOWN_APPROVER
    if not is_named_approver(request, person):
        return Refusal.NOT_ELIGIBLE
    if has_decided(request, person):
        return Refusal.ALREADY_DECIDED
    return None


def may_decide(request: ApprovalRequest, approver: Person) -> bool:
    """For listing: would this approver be allowed to decide this pending request?"""
    actor = Actor(kind="human", id=approver.id, email=approver.email, person_id=approver.id)
    return refusal_for(request, actor, approver) is None


def reveal_refusal(request: ApprovalRequest, actor: Actor, approver: Person | None) -> Refusal | None:
    """Why this actor may not see the exact values behind a request's masks, or None if they may.

    Revealing is for the people who judge the request: an active approver the policy names (who
    may decide it, or could have while it was pending) or one who has decided it. Requesters are
    refused even when they are approvers too (the agent reads its own values; its owner has no
    reason to pull them through the approval path). A rule with `reveal: false` refuses everyone.
    Unlike deciding, a final request may still be revealed by those people: a reviewer looking
    back at what was approved.
    """
    if actor.kind != "human":
        return Refusal.NOT_HUMAN
    if not request.policy.reveal:
        return Refusal.REVEAL_FORBIDDEN
    person = approver if approver is not None and _is_actor(actor, approver) else None
    if not is_active_approver(person):
        return Refusal.UNKNOWN_APPROVER
    if is_requester(request, person, actor.email):
        return Refusal.NOT_ELIGIBLE
    if has_decided(request, person) or is_named_approver(request, person):
        return None
    return Refusal.NOT_ELIGIBLE


def may_reveal(request: ApprovalRequest, actor: Actor, approver: Person | None) -> bool:
    """For a Reveal button: would this actor be allowed to reveal this request's masked values?"""
    return reveal_refusal(request, actor, approver) is None


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
    """Approvals by distinct persons: one human behind two identities counts once."""
    return len({decider_key(d) for d in request.decisions if d.decision == APPROVE})


def approval_progress(request: ApprovalRequest) -> tuple[int, int]:
    """(approvals so far, approvals the policy requires), for "1 of 2 approvals" lines."""
    approvals = approvals_given(request)
    return approvals, max(request.policy.min_approvals, approvals)


def pending_targets(approver: Person) -> list[str]:
    """Index names under which requests this approver may decide are filed."""
    return [ANY_APPROVER, approver.email, *sorted(set(approver.aliases)), *approver.groups]


def pending_targets_of(request: ApprovalRequest) -> list[str]:
    """Index names a pending request is filed under: its policy's approvers, or anyone."""
    return list(dict.fromkeys(request.policy.approvers)) or [ANY_APPROVER]
