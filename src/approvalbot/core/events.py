"""Domain events: the one stream every observer (audit, chat mirrors, callbacks) reads.

Each state change produces events here and nowhere else, so a new channel can
subscribe to what happened without touching the rules that made it happen.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from approvalbot.core.models import Actor, ApprovalRequest, Strict


class EventType(StrEnum):
    REQUESTED = "request.created"
    APPROVAL_RECORDED = "approval.recorded"
    APPROVED = "request.approved"
    DENIED = "request.denied"
    EXPIRED = "request.expired"
    CANCELLED = "request.cancelled"
    SELF_APPROVAL_BLOCKED = "self_approval.blocked"
    GRANT_CONSUMED = "grant.consumed"
    EXECUTED = "executed"
    EXECUTION_FAILED = "execution_failed"
    REMINDER_DUE = "reminder.due"
    ESCALATION_DUE = "escalation.due"
    DELIVERY_FAILED = "delivery.failed"
    CALLBACK_FAILED = "callback.failed"
    PERSON_ADDED = "person.added"
    PERSON_UPDATED = "person.updated"
    PERSON_LINKED = "person.linked"
    PERSON_UNLINKED = "person.unlinked"
    PERSON_REMOVED = "person.removed"
    IDENTITY_REFUSED = "identity.refused"
    IDENTITY_CHANGED = "identity.changed"
    EXECUTOR_ADDED = "executor.added"
    EXECUTOR_REVOKED = "executor.revoked"
    QUOTA_EXCEEDED = "quota.exceeded"  # an agent went over its pending quota or creation rate (once per burst)
    AUDITOR_ADDED = "auditor.added"
    AUDITOR_REVOKED = "auditor.revoked"
    PARAMS_REVEALED = "params.revealed"  # an approver saw masked values on purpose: who, which paths (never values)

    @property
    def final(self) -> bool:
        return self in FINAL_EVENTS


FINAL_EVENTS = frozenset({EventType.APPROVED, EventType.DENIED, EventType.EXPIRED, EventType.CANCELLED})


class Event(Strict):
    """One audit record. Records about people and identities concern no request: they have
    no request_id, action or policy (and subscribers that follow requests skip them)."""

    type: EventType
    at: datetime
    request_id: str | None = None
    action: str | None = None
    resource: str | None = None
    actor: Actor
    reason: str | None = None
    policy: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def event_for(
    request: ApprovalRequest,
    type: EventType,
    actor: Actor,
    at: datetime,
    reason: str | None = None,
    **data: Any,
) -> Event:
    # The record names the resource as people are shown it: a masked part of it never enters the log.
    resource = request.masked.resource if request.masked is not None else request.resource
    return Event(
        type=type,
        at=at,
        request_id=request.id,
        action=request.action,
        resource=resource,
        actor=actor,
        reason=reason,
        policy=request.policy.rule,
        data=data,
    )


def event_about_people(type: EventType, actor: Actor, at: datetime, reason: str | None = None, **data: Any) -> Event:
    """An audit record of a change to persons, identities or executors (no request involved)."""
    return Event(type=type, at=at, actor=actor, reason=reason, data=data)
