"""Typed domain errors and the one catalogue of refusal codes.

Every rule the core enforces fails with a `DomainError` carrying a stable `code`,
so adapters branch on the type or the code and never on message text. The codes
double as the HTTP API's error codes; Slack and Teams word them for people but
never invent codes of their own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from approvalbot.core.events import Event


class Refusal(StrEnum):
    """Why an action on a request was turned away; values are the API error codes."""

    NOT_HUMAN = "forbidden"
    UNKNOWN_APPROVER = "not_an_approver"
    SELF_APPROVAL = "self_approval"
    NOT_ELIGIBLE = "not_eligible"
    ALREADY_DECIDED = "already_decided"
    NOT_PENDING = "not_pending"
    REASON_REQUIRED = "reason_required"
    IDENTITY_UNKNOWN = "identity_unknown"
    FOREIGN_WORKSPACE = "foreign_workspace"
    NOT_APPROVED = "not_approved"
    OUTCOME_REPORTED = "outcome_already_reported"
    REVEAL_FORBIDDEN = "reveal_forbidden"

    @property
    def message(self) -> str:
        """The default plain-language wording; channels may reword, never recode."""
        return REFUSAL_MESSAGES[self]


REFUSAL_MESSAGES: dict[Refusal, str] = {
    Refusal.NOT_HUMAN: "only a human approver can decide a request",
    Refusal.UNKNOWN_APPROVER: "you are not a registered approver",
    Refusal.SELF_APPROVAL: (
        "you cannot approve or deny your own request: you own the agent that asked, or it acts on your behalf"
    ),
    Refusal.NOT_ELIGIBLE: "you are not among the approvers this request's policy names",
    Refusal.ALREADY_DECIDED: "you have already decided this request",
    Refusal.NOT_PENDING: "this request is no longer pending",
    Refusal.REASON_REQUIRED: "a reason is required to deny",
    Refusal.IDENTITY_UNKNOWN: (
        "this chat identity is not linked to a registered person; an admin can link it with `approvalbot people link`"
    ),
    Refusal.FOREIGN_WORKSPACE: "this workspace or tenant is not one approvalbot serves",
    Refusal.NOT_APPROVED: "only an approved (or policy-allowed) request can have an execution outcome",
    Refusal.OUTCOME_REPORTED: "the outcome of this request was already reported",
    Refusal.REVEAL_FORBIDDEN: "the policy rule for this request does not allow revealing masked values",
}


def sentence(text: str) -> str:
    """A catalogue message as a sentence on its own: capitalised, with a full stop."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


class DomainError(Exception):
    """A rule of the domain said no. `code` is stable; `message` is safe to show."""

    code: str = "domain_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Refused(DomainError):
    """A decision or cancellation that may not happen.

    `event` is still recorded when the attempt is worth auditing (a blocked self-approval).
    """

    def __init__(self, refusal: Refusal, message: str | None = None, event: Event | None = None):
        super().__init__(message or refusal.message)
        self.code = refusal.value
        self.refusal = refusal
        self.event = event


class ReasonRequired(Refused):
    """A deny without a reason: the agent and the audit log must be told why."""

    def __init__(self) -> None:
        super().__init__(Refusal.REASON_REQUIRED)


class NotDue(DomainError):
    """A timer fired early: the request has not expired yet."""

    code = "not_due"


class NotFound(DomainError, LookupError):
    """No such request (or, to an agent, not one of its own)."""

    code = "not_found"


class UnknownPath(DomainError, ValueError):
    """A reveal asked for a path that is not masked in this request (nothing to reveal there)."""

    code = "unknown_path"


class ParamsDeleted(DomainError):
    """The exact values were deleted after the retention period; only the masked copy remains."""

    code = "params_deleted"

    def __init__(self) -> None:
        super().__init__("the exact values of this request were deleted after the retention period")


class IdempotencyMismatch(DomainError, ValueError):
    """The same Idempotency-Key was sent with a different body."""

    code = "idempotency_key_reused"


class QuotaExceeded(DomainError):
    """An agent asked for more than its share: too many pending requests (`quota_exceeded`) or
    too many creations per second (`rate_limited`). Nothing was written for the request.

    `retry_after` is when asking again may succeed (seconds); `first` says this is the first
    refusal of a burst, the one that gets an audit record.
    """

    MESSAGES: ClassVar[dict[str, str]] = {
        "quota_exceeded": "this agent has too many pending requests; wait for some to be decided or to expire",
        "rate_limited": "this agent is creating requests too fast; retry after the time in Retry-After",
    }

    def __init__(self, code: str, retry_after: int, first: bool = False):
        super().__init__(self.MESSAGES[code])
        self.code = code
        self.retry_after = retry_after
        self.first = first
