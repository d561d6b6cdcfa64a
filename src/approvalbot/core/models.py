"""The data every adapter speaks: requests, decisions, actors.

These models are the wire format of the HTTP API and the stored form in Redis,
so that a request read back from the store is exactly what an agent was shown.
"""

from __future__ import annotations

import math
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
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from approvalbot.core.addresses import InvalidAddress, canonical_email
from approvalbot.core.callback_urls import NO_ALLOW, AllowList, describe, url_problem

MAX_TEXT = 4000

ACTION_RE = r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)*$"

# A cheap shape check for chat profiles; identity decisions use canonical_email, never this.
EMAIL_RE = re.compile(r"^[^@\s<>|]+@[^@\s<>|]+\.[^@\s<>|]+$")

# Kept for the callers that predate persons; it IS the one canonical form.
normalize_email = canonical_email


def _email_field(value: str) -> str:
    """Pydantic wrapper: the error type names the rule, so the API can answer `invalid_address`."""
    try:
        return canonical_email(value)
    except InvalidAddress as exc:
        raise PydanticCustomError("invalid_address", exc.message) from None


NON_FINITE = "non_finite_number"


def non_finite_path(value: Any, path: str = "") -> str | None:
    """Where the first NaN or Infinity sits in a JSON-like value (None: every number is finite).

    Python's JSON parsers (the standard library's and pydantic's) accept `NaN`,
    `Infinity` and overflowing literals such as `1e999` although JSON has no such
    numbers. An approver would see `null` while the grant's params hash covers the
    real value, and `-Infinity` passes every `<` condition of a policy, so such a
    value must never get past intake.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "$")
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    where = non_finite_path(value)
    if where is not None:
        raise PydanticCustomError(
            NON_FINITE,
            "numbers must be finite: NaN, Infinity and -Infinity are not JSON (at {where})",
            {"where": where},
        )
    return value


Email = Annotated[str, AfterValidator(_email_field)]
# Free-form JSON an agent sends (params): any shape, but only finite numbers.
FiniteParams = Annotated[dict[str, Any], AfterValidator(_finite_json)]
ActionName = Annotated[str, StringConstraints(pattern=ACTION_RE, max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


# The validation-context key under which the API hands RequestCreate the operator's callback allow list,
# and the error type (and API code) of a refused callback URL.
CALLBACK_ALLOW = "callback_allow"
CALLBACK_URL_FORBIDDEN = "callback_url_forbidden"


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

    kind: Literal["agent", "human", "system", "executor"]
    id: str
    email: str | None = None
    channel: Channel = Channel.API
    channel_user: str | None = None  # the Slack user id, Teams AAD object id, or API token id
    person_id: str | None = None  # the person behind a human actor (None: not a registered person)
    workspace: str | None = None  # Slack team id or Teams tenant id the identity belongs to


class RequestCreate(Strict):
    """What an agent may send to ask for approval of one action."""

    action: ActionName
    resource: Annotated[str, StringConstraints(max_length=1000)] | None = None
    params: FiniteParams = Field(default_factory=dict)
    justification: ShortText | None = None
    context: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=100)],
        Annotated[str, StringConstraints(max_length=2000)],
    ] = Field(default_factory=dict, max_length=50)
    on_behalf_of: Email | None = None
    callback_url: AnyHttpUrl | None = None
    expires_in: int | None = Field(default=None, ge=10, le=30 * 24 * 3600)

    @field_validator("callback_url")
    @classmethod
    def _callback_destination(cls, url: AnyHttpUrl | None, info: ValidationInfo) -> AnyHttpUrl | None:
        """Refuse plain http and forbidden literals at once (no DNS: the sender checks resolved addresses).

        The web layer passes the operator's allow list as validation context (`CALLBACK_ALLOW`);
        without one, nothing is allowed beyond the default rules.
        """
        if url is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        allow = context.get(CALLBACK_ALLOW, NO_ALLOW)
        problem = url_problem(url.scheme, url.host or "", allow if isinstance(allow, AllowList) else NO_ALLOW)
        if problem is not None:
            raise PydanticCustomError(
                CALLBACK_URL_FORBIDDEN, "{words} ({problem})", {"words": describe(problem), "problem": problem}
            )
        return url


class DecisionIn(Strict):
    decision: Literal["approve", "deny"]
    reason: ShortText | None = None


class Decision(Strict):
    approver: str  # the person's primary email when decided (display; older records: the identity)
    person_id: str | None = None  # who decided; counts and "already decided" go by this
    decision: Literal["approve", "deny"]
    reason: str | None = None
    at: datetime
    channel: Channel = Channel.API


PiiKind = Literal["email", "card", "iban", "phone"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "card", "iban", "phone")


class Detect(Strict):
    """Which detectors mask values nobody marked as sensitive (core/masking.py); all on by default."""

    secrets: bool = True
    pii: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS))


class AppliedPolicy(Strict):
    """The rule that decided, frozen into the request so later policy edits don't rewrite history.

    The masking fields (`sensitive`, `detect`, `reveal`) have defaults so requests stored before
    masking existed still load, and are then masked with every detector on.
    """

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
    sensitive: list[str] = Field(default_factory=list)  # param paths (globs); `context.<key>` for context
    detect: Detect = Field(default_factory=Detect)
    reveal: bool = True  # may an eligible approver see a masked value on purpose


class MaskedValue(Strict):
    """One value a reader is not shown: where it was, what kind, and how to compare it, never what."""

    path: str  # "params.a.0.b", "context.k", "justification" or "resource"
    category: Literal["secret", "personal", "sensitive"]
    kind: str | None = None  # "aws key", "email", …; None when the policy marked the path
    length: int
    fingerprint: str  # a short keyed hash: equal values in two requests have equal fingerprints
    whole: bool  # the entire value (else only parts of a text)


class MaskedView(Strict):
    """The copy of a request's agent-supplied content that people are shown (chat, approver API, audit).

    Computed once at intake; the raw values stay on the request for the agent, its callback and
    the grant's params hash, and may be deleted after the retention period while this stays.
    """

    params: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, str] = Field(default_factory=dict)
    justification: str | None = None
    resource: str | None = None
    items: list[MaskedValue] = Field(default_factory=list)
    params_sha256: str = ""  # of the raw params (canonical JSON), what the grant binds


WITHHELD = "[withheld · stored before masking]"


def withheld_view(request: ApprovalRequest) -> MaskedView:
    """The reader's copy of a request that has no masked view: every value hidden, the shape kept.

    Top-level param and context keys stay (a reviewer sees what was asked about), their values do
    not; a justification or resource, when there is one, is withheld whole. No fingerprints: there
    is no key here, and nothing is revealed from this copy (it lists no masked items).
    """
    return MaskedView(
        params=dict.fromkeys(request.params, WITHHELD),
        context=dict.fromkeys(request.context, WITHHELD),
        justification=WITHHELD if request.justification else request.justification,
        resource=WITHHELD if request.resource else request.resource,
    )


class Execution(Strict):
    """What the executor reported after acting on an approval: it ran (`executed`) or it failed.

    Kept on the request (besides the audit record) so cards can show it and a second
    report is refused by the same compare-and-set commit as every other change."""

    status: Literal["executed", "failed"]
    at: datetime
    detail: str | None = None
    result_sha256: str | None = None
    by: str  # "agent:<id>" or "executor:<id>"


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
    requester_ids: list[str] = Field(default_factory=list)  # persons behind owner and on_behalf_of
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
    execution: Execution | None = None
    # Blocked self-approval attempts while pending, per person ("email:<address>" for someone who is not
    # a registered person): the first is an audit record, later ones only count here, so repeated clicks
    # cannot flood the log or the card's thread. The final record repeats the counts.
    self_approval_attempts: dict[str, int] = Field(default_factory=dict)
    masked: MaskedView | None = None  # what people are shown; None for requests made before masking
    # The raw params, context, justification and resource were deleted after the retention period
    # (APPROVALBOT_PARAMS_RETENTION): those fields now hold the masked copy, for everyone.
    params_deleted: bool = False
    version: int = 0

    def shown(self) -> ApprovalRequest:
        """The request as a person may see it: masked params, context, justification and resource.

        Every channel and every approver-facing answer renders this, never the request itself;
        only the agent's own reads, its callback and the grant use the exact values. The grant and
        receipt are left out: they are JWTs whose claims name the exact resource, readable by anyone
        who decodes them, and they are the agent's (and its executor's) to use, not a reviewer's.

        A request stored before masking existed has no masked view; the service fills one in when it
        reads the request (and a one-time upgrade stores it), and a reader that still meets one gets
        every free-form value withheld rather than shown.
        """
        view = self.masked if self.masked is not None else withheld_view(self)
        return self.model_copy(
            update={
                "params": view.params,
                "context": view.context,
                "justification": view.justification,
                "resource": view.resource,
                "grant": None,
                "receipt": None,
            }
        )

    @property
    def requesters(self) -> set[str]:
        """Addresses of the humans behind the request; `requester_ids` names them as persons."""
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
    owner_id: str | None = None  # the owner person; older agents resolve it by `owner`
    created_at: datetime
    revoked: bool = False


class ChatIdentity(Strict):
    """One concrete identity a person uses: an API token, a Slack user in a team, a Teams user in a tenant.

    Identities are bound to a person by id, never by their current email, so a
    profile change cannot move an identity from one person to another.
    """

    channel: Literal["api", "slack", "teams"]
    workspace: str | None = None  # Slack team id (T…/E…) or Teams tenant id; None for api
    user_id: str  # Slack user id, Teams AAD object id, or the API token id

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.workspace or '-'}:{self.user_id}"


class Person(Strict):
    """One human, whatever identity they use: the unit self-approval and N-of-M count.

    A person created only because an agent names them as owner has
    `may_approve=False`: owning an agent must not make anyone an approver.
    Migrated approvers keep their old `apr_` id, so their tokens keep working.
    """

    id: str
    email: str
    name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    identities: list[ChatIdentity] = Field(default_factory=list)
    created_at: datetime
    revoked: bool = False
    may_approve: bool = True

    def addresses(self) -> set[str]:
        return {self.email, *self.aliases}


# An approver token authenticates a person; the old name stays for the code that speaks of approvers.
Approver = Person


class Executor(Strict):
    """A machine that carries out approved actions for one agent and may consume that agent's grants."""

    id: str
    name: str
    agent_id: str
    agent_name: str
    created_at: datetime
    revoked: bool = False
