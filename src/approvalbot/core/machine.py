"""The request state machine: pure functions from (state, input, now) to (state, events).

Nothing here touches Redis or the clock, so every rule can be tested directly and
the store can apply a transition atomically with compare-and-set on `version`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from approvalbot.core.errors import NotDue, Refusal, Refused
from approvalbot.core.events import Event, EventType, event_for
from approvalbot.core.models import (
    Actor,
    Agent,
    AppliedPolicy,
    ApprovalRequest,
    Approver,
    Decision,
    Execution,
    MaskedView,
    RequestCreate,
    Status,
    withheld_view,
)
from approvalbot.core.rules import approvals_given, check_reason, refusal_for

__all__ = [
    "REVOKED_REASON",
    "SYSTEM",
    "Refused",
    "Transition",
    "attempt_key",
    "cancel",
    "count_blocked",
    "create",
    "decide",
    "expire",
    "forget_params",
    "report_outcome",
    "revoke_cancel",
]

REVOKED_REASON = "agent revoked"

SYSTEM = Actor(kind="system", id="approvalbot", channel="system")


@dataclass
class Transition:
    request: ApprovalRequest
    events: list[Event] = field(default_factory=list)


def create(
    request_id: str,
    body: RequestCreate,
    agent: Agent,
    policy: AppliedPolicy,
    now: datetime,
    requester_ids: list[str] | None = None,
    masked: MaskedView | None = None,
) -> Transition:
    """A new request; `allow` and `deny` policies settle it at once.

    `requester_ids` are the persons behind it (owner, on_behalf_of), resolved by the
    service, so self-approval is judged by person and not by how an address is spelled.
    `masked` is the reader's copy (core.masking.masked_view, computed by the service with the
    masking key): it is stored with the request, and the `request.created` record carries it and
    the params hash instead of any raw value (justification and resource included).
    """
    # An agent may ask for less time than the policy gives, never more.
    expires_in = min(body.expires_in or policy.expires_in, policy.expires_in)
    request = ApprovalRequest(
        id=request_id,
        status=Status.PENDING,
        action=body.action,
        resource=body.resource,
        params=body.params,
        justification=body.justification,
        context=body.context,
        agent_id=agent.id,
        agent_name=agent.name,
        owner=agent.owner,
        on_behalf_of=body.on_behalf_of,
        requester_ids=list(dict.fromkeys(requester_ids or [])),
        callback_url=str(body.callback_url) if body.callback_url else None,
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in),
        policy=policy,
        approvals_needed=policy.min_approvals if policy.effect == "require_approval" else 0,
        masked=masked,
    )
    actor = Actor(kind="agent", id=agent.id, email=agent.owner, person_id=agent.owner_id)  # owner: accountable
    if masked is None:
        events = [event_for(request, EventType.REQUESTED, actor, now, body.justification)]
    else:
        shown = {
            "params": masked.params,
            "context": masked.context,
            "items": [item.model_dump(mode="json") for item in masked.items],
        }
        events = [
            event_for(
                request,
                EventType.REQUESTED,
                actor,
                now,
                masked.justification,
                masked=shown,
                params_sha256=masked.params_sha256,
            )
        ]
    if policy.effect == "allow":
        request = _settle(request, Status.APPROVED, now, f"allowed by policy rule {policy.rule}")
        events.append(_final(request, EventType.APPROVED, SYSTEM, now, request.outcome_reason))
    elif policy.effect == "deny":
        request = _settle(request, Status.DENIED, now, f"denied by policy rule {policy.rule}")
        events.append(_final(request, EventType.DENIED, SYSTEM, now, request.outcome_reason))
    return Transition(request, events)


def decide(
    request: ApprovalRequest,
    actor: Actor,
    approver: Approver | None,
    decision: str,
    reason: str | None,
    now: datetime,
) -> Transition:
    """One human's approve or deny; raises Refused when the rules say no.

    A settled request is refused before anything else (no audit event: nothing happened).
    """
    if request.status.final:
        raise Refused(Refusal.NOT_PENDING)
    if now >= request.expires_at:
        return expire(request, now)
    refusal = refusal_for(request, actor, approver)
    if refusal is not None:
        blocked = None
        if refusal is Refusal.SELF_APPROVAL:
            blocked = event_for(request, EventType.SELF_APPROVAL_BLOCKED, actor, now, reason, attempted=decision)
        raise Refused(refusal, event=blocked)
    check_reason(decision, reason)
    assert approver is not None  # refusal_for refuses an unknown approver
    entry = Decision(
        approver=approver.email, person_id=approver.id, decision=decision, reason=reason, at=now, channel=actor.channel
    )
    updated = request.model_copy(update={"decisions": [*request.decisions, entry]})
    if decision == "deny":
        updated = _settle(updated, Status.DENIED, now, reason)
        return Transition(updated, [_final(updated, EventType.DENIED, actor, now, reason)])
    approvals = approvals_given(updated)
    remaining = max(request.policy.min_approvals - approvals, 0)
    updated = updated.model_copy(update={"approvals_needed": remaining})
    events = [
        event_for(
            updated,
            EventType.APPROVAL_RECORDED,
            actor,
            now,
            reason,
            approvals=approvals,
            required=request.policy.min_approvals,
        )
    ]
    if remaining == 0:
        updated = _settle(updated, Status.APPROVED, now, reason)
        events.append(_final(updated, EventType.APPROVED, actor, now, reason))
    return Transition(updated, events)


def cancel(request: ApprovalRequest, agent_id: str, actor: Actor, now: datetime) -> Transition:
    if request.agent_id != agent_id:
        raise Refused(Refusal.NOT_HUMAN, "only the requesting agent can cancel its request")
    if request.status is not Status.PENDING:
        raise Refused(Refusal.NOT_PENDING)
    updated = _settle(request, Status.CANCELLED, now, "cancelled by the agent")
    return Transition(updated, [_final(updated, EventType.CANCELLED, actor, now)])


def report_outcome(
    request: ApprovalRequest,
    actor: Actor,
    status: str,
    detail: str | None,
    result_sha256: str | None,
    now: datetime,
) -> Transition:
    """The executor says whether the approved action ran: once, and only after an approval
    (or a policy allow), so the audit closes the loop from decision to effect without anyone
    being able to rewrite it afterwards. The request's status stays `approved`."""
    if request.status is not Status.APPROVED:
        raise Refused(Refusal.NOT_APPROVED)
    if request.execution is not None:
        raise Refused(Refusal.OUTCOME_REPORTED)
    if status not in ("executed", "failed"):
        raise ValueError(f"unknown outcome {status!r}")
    execution = Execution(
        status="executed" if status == "executed" else "failed",
        at=now,
        detail=detail,
        result_sha256=result_sha256,
        by=f"{actor.kind}:{actor.id}",
    )
    updated = request.model_copy(update={"execution": execution})
    type = EventType.EXECUTED if status == "executed" else EventType.EXECUTION_FAILED
    extra = {"result_sha256": result_sha256} if result_sha256 else {}
    return Transition(updated, [event_for(updated, type, actor, now, detail, status=status, **extra)])


def attempt_key(actor: Actor) -> str:
    """Whose attempts a count is about: the person, else the address, else the concrete identity."""
    if actor.person_id:
        return actor.person_id
    if actor.email:
        return f"email:{actor.email}"
    return f"{actor.channel}:{actor.channel_user or actor.id}"


def count_blocked(request: ApprovalRequest, blocked: Event) -> Transition:
    """A blocked self-approval on a pending request: the first by this person is recorded (the
    event), every later one only increments the person's count kept with the request."""
    if request.status.final:
        raise Refused(Refusal.NOT_PENDING)
    key = attempt_key(blocked.actor)
    seen = request.self_approval_attempts.get(key, 0)
    counts = {**request.self_approval_attempts, key: seen + 1}
    updated = request.model_copy(update={"self_approval_attempts": counts})
    return Transition(updated, [blocked] if seen == 0 else [])


def revoke_cancel(request: ApprovalRequest, actor: Actor, now: datetime) -> Transition:
    """The agent was revoked: its pending request ends as cancelled, by whoever revoked it.

    Like a cancel by the agent (the same final event, receipt and card update), but
    the actor is the admin or the system, and the reason says why.
    """
    if request.status is not Status.PENDING:
        raise Refused(Refusal.NOT_PENDING)
    updated = _settle(request, Status.CANCELLED, now, REVOKED_REASON)
    return Transition(updated, [_final(updated, EventType.CANCELLED, actor, now, REVOKED_REASON)])


def expire(request: ApprovalRequest, now: datetime) -> Transition:
    """Fail closed: nobody decided in time, so the action does not happen."""
    if request.status is not Status.PENDING:
        raise Refused(Refusal.NOT_PENDING)
    if now < request.expires_at:
        raise NotDue("request has not expired yet")
    updated = _settle(request, Status.EXPIRED, now, "nobody decided before the request expired")
    return Transition(updated, [_final(updated, EventType.EXPIRED, SYSTEM, now, updated.outcome_reason)])


def forget_params(request: ApprovalRequest) -> Transition:
    """Retention: a final request's raw params, context, justification and resource are replaced by
    the masked copy (and its grant or receipt dropped), for everyone (data minimisation). No audit
    record: the chain already holds the masked form and the params hash, which stay, so it verifies
    as before."""
    if not request.status.final:
        raise Refused(Refusal.NOT_PENDING, "only a final request's params can be deleted")
    if request.params_deleted:
        return Transition(request)
    # Made before masking (the service fills a view in when it reads one, so only a caller that
    # did not): nothing safe to keep, so every free-form value is withheld.
    view = request.masked if request.masked is not None else withheld_view(request)
    update: dict[str, Any] = {
        "params": view.params,
        "context": view.context,
        "justification": view.justification,
        "resource": view.resource,
        # The grant and receipt go too: their claims name the exact resource. The executor that
        # holds a grant still verifies it offline; a consumed grant's digest stays in the audit log.
        "grant": None,
        "receipt": None,
        "params_deleted": True,
    }
    return Transition(request.model_copy(update=update))


def _settle(request: ApprovalRequest, status: Status, now: datetime, reason: str | None) -> ApprovalRequest:
    return request.model_copy(update={"status": status, "decided_at": now, "outcome_reason": reason})


def _final(request: ApprovalRequest, type: EventType, actor: Actor, now: datetime, reason: str | None = None) -> Event:
    """Final events say whether a callback is owed, so the outbox needs no extra read; they also carry
    the blocked self-approval counts, so the audit export shows how often each person tried."""
    extra = {"self_approval_attempts": request.self_approval_attempts} if request.self_approval_attempts else {}
    return event_for(
        request, type, actor, now, reason, status=request.status.value, callback=bool(request.callback_url), **extra
    )
