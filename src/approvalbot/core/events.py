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
    REMINDER_DUE = "reminder.due"
    ESCALATION_DUE = "escalation.due"
    DELIVERY_FAILED = "delivery.failed"

    @property
    def final(self) -> bool:
        return self in FINAL_EVENTS


FINAL_EVENTS = frozenset({EventType.APPROVED, EventType.DENIED, EventType.EXPIRED, EventType.CANCELLED})


class Event(Strict):
    type: EventType
    at: datetime
    request_id: str
    action: str
    resource: str | None = None
    actor: Actor
    reason: str | None = None
    policy: str
    data: dict[str, Any] = Field(default_factory=dict)


def event_for(
    request: ApprovalRequest,
    type: EventType,
    actor: Actor,
    at: datetime,
    reason: str | None = None,
    **data: Any,
) -> Event:
    return Event(
        type=type,
        at=at,
        request_id=request.id,
        action=request.action,
        resource=request.resource,
        actor=actor,
        reason=reason,
        policy=request.policy.rule,
        data=data,
    )
