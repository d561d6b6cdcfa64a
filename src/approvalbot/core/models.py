"""The data every adapter speaks: requests, decisions, actors.

These models are the wire format of the HTTP API and the stored form in Redis,
so that a request read back from the store is exactly what an agent was shown.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

MAX_TEXT = 4000

ACTION_RE = r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)*$"
EMAIL_RE = re.compile(r"^[^@\s<>|]+@[^@\s<>|]+\.[^@\s<>|]+$")


def normalize_email(value: str) -> str:
    value = value.strip().lower()
    if not EMAIL_RE.match(value) or len(value) > 254:
        raise ValueError("must be an email address")
    return value


Email = Annotated[str, AfterValidator(normalize_email)]
ActionName = Annotated[str, StringConstraints(pattern=ACTION_RE, max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not Status.PENDING


class Channel(StrEnum):
    API = "api"
    SLACK = "slack"
    TEAMS = "teams"
    SYSTEM = "system"


class Strict(BaseModel):
    """Rejects unknown fields: a typo in a payload must not be silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Actor(Strict):
    """Who did something, as proven by credentials (never as claimed by a payload)."""

    kind: Literal["agent", "human", "system"]
    id: str
    email: str | None = None
    channel: Channel = Channel.API
    channel_user: str | None = None  # e.g. the Slack user id or Teams AAD object id


class RequestCreate(Strict):
    """What an agent may send to ask for approval of one action."""

    action: ActionName
    resource: Annotated[str, StringConstraints(max_length=1000)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    justification: ShortText | None = None
    context: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=100)],
        Annotated[str, StringConstraints(max_length=2000)],
    ] = Field(default_factory=dict, max_length=50)
    on_behalf_of: Email | None = None
    callback_url: AnyHttpUrl | None = None
    expires_in: int | None = Field(default=None, ge=10, le=30 * 24 * 3600)


class DecisionIn(Strict):
    decision: Literal["approve", "deny"]
    reason: ShortText | None = None


class Decision(Strict):
    approver: str  # email
    decision: Literal["approve", "deny"]
    reason: str | None = None
    at: datetime
    channel: Channel = Channel.API


class AppliedPolicy(Strict):
    """The rule that decided, frozen into the request so later policy edits don't rewrite history."""

    rule: str
    effect: Literal["allow", "deny", "require_approval"]
    approvers: list[str] = Field(default_factory=list)
    min_approvals: int = 0
    expires_in: int = 3600
    remind_after: int | None = None
    escalate_after: int | None = None
    escalate_to: str | None = None
    channel: str | None = None
    grant_ttl: int = 300


class ApprovalRequest(Strict):
    id: str
    status: Status
    action: str
    resource: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    justification: str | None = None
    context: dict[str, str] = Field(default_factory=dict)
    agent_id: str
    agent_name: str
    owner: str
    on_behalf_of: str | None = None
    callback_url: str | None = None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    policy: AppliedPolicy
    approvals_needed: int
    decisions: list[Decision] = Field(default_factory=list)
    outcome_reason: str | None = None
    grant: str | None = None
    receipt: str | None = None
    version: int = 0

    @property
    def requesters(self) -> set[str]:
        """Humans who stand behind the request and therefore may not approve it."""
        people = {self.owner}
        if self.on_behalf_of:
            people.add(self.on_behalf_of)
        return people


class Page(BaseModel):
    items: list[ApprovalRequest]
    next_cursor: str | None = None


class Agent(Strict):
    id: str
    name: str
    owner: str
    created_at: datetime
    revoked: bool = False


class Approver(Strict):
    id: str
    email: str
    groups: list[str] = Field(default_factory=list)
    created_at: datetime
    revoked: bool = False
