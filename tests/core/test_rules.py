"""The rules every channel shares, table by table: who may decide, who may see, what a decision needs."""

from __future__ import annotations

import base64

import pytest

from approvalbot.core import ids
from approvalbot.core.errors import (
    REFUSAL_MESSAGES,
    DomainError,
    IdempotencyMismatch,
    NotDue,
    NotFound,
    ReasonRequired,
    Refusal,
    Refused,
    sentence,
)
from approvalbot.core.models import Actor, Approver, Status
from approvalbot.core.rules import (
    ANY_APPROVER,
    approval_progress,
    approvals_given,
    check_reason,
    clean_reason,
    is_active_approver,
    may_decide,
    may_view,
    pending_targets,
    pending_targets_of,
    reason_missing,
    refusal_for,
)
from tests.core.factories import AGENT, approver, request

ALICE = approver("alice@example.com", ("ops",))
ALICE_BY_ALIAS = approver("alice@example.com", ("ops",), aliases=("alice.smith@example.com",))
OWNER_BY_ALIAS = approver("o.wner@example.com", ("ops",), aliases=("owner@example.com",))
OWNER_BY_ID = approver("olga@example.com", ("ops",), person_id="per_owner")
DAVE = approver("dave@example.com", may_approve=False)
OWNER_AS_APPROVER = approver("owner@example.com", ("ops",))
HELPER_AS_APPROVER = approver("helper@example.com", ("ops",))


def human(who: Approver | str) -> Actor:
    email = who if isinstance(who, str) else who.email
    return Actor(kind="human", id=f"h:{email}", email=email)


# --- who may decide ----------------------------------------------------------------------------

REFUSALS = [
    # (case, request kwargs, actor, approver record, expected refusal)
    ("eligible", {}, human(ALICE), ALICE, None),
    ("named by email", {"approvers": ["alice@example.com"]}, human(ALICE), ALICE, None),
    ("named by group", {"approvers": ["ops"]}, human(ALICE), ALICE, None),
    ("an agent", {}, Actor(kind="agent", id="ag_1", email="owner@example.com"), ALICE, Refusal.NOT_HUMAN),
    ("the system", {}, Actor(kind="system", id="x"), ALICE, Refusal.NOT_HUMAN),
    ("the owner", {}, human(OWNER_AS_APPROVER), OWNER_AS_APPROVER, Refusal.SELF_APPROVAL),
    ("owner, email case", {}, human("Owner@Example.com"), None, Refusal.SELF_APPROVAL),
    (
        "on behalf of",
        {"on_behalf_of": "helper@example.com"},
        human(HELPER_AS_APPROVER),
        HELPER_AS_APPROVER,
        Refusal.SELF_APPROVAL,
    ),
    # An owner who is not named still learns the real reason (and the attempt is recorded as such).
    (
        "owner, not named",
        {"approvers": ["finance"]},
        human(OWNER_AS_APPROVER),
        OWNER_AS_APPROVER,
        Refusal.SELF_APPROVAL,
    ),
    ("unregistered", {}, human("mallory@example.com"), None, Refusal.UNKNOWN_APPROVER),
    ("revoked", {}, human(ALICE), approver("alice@example.com", revoked=True), Refusal.UNKNOWN_APPROVER),
    ("someone else's record", {}, human("mallory@example.com"), ALICE, Refusal.UNKNOWN_APPROVER),
    ("not named", {"approvers": ["finance"]}, human(ALICE), ALICE, Refusal.NOT_ELIGIBLE),
    # A settled request is refused before anything about the actor (issue 12): one 409, no audit record.
    (
        "not named, already final",
        {"approvers": ["finance"], "status": Status.DENIED},
        human(ALICE),
        ALICE,
        Refusal.NOT_PENDING,
    ),
    (
        "owner, already final",
        {"status": Status.CANCELLED},
        human(OWNER_AS_APPROVER),
        OWNER_AS_APPROVER,
        Refusal.NOT_PENDING,
    ),
    ("the system, already final", {"status": Status.EXPIRED}, Actor(kind="system", id="x"), ALICE, Refusal.NOT_PENDING),
    ("final", {"status": Status.APPROVED}, human(ALICE), ALICE, Refusal.NOT_PENDING),
    (
        "already decided",
        {"decisions": (("alice@example.com", "approve"),), "min_approvals": 2},
        human(ALICE),
        ALICE,
        Refusal.ALREADY_DECIDED,
    ),
    (
        "another's decision",
        {"decisions": (("bob@example.com", "approve"),), "min_approvals": 2},
        human(ALICE),
        ALICE,
        None,
    ),
]


@pytest.mark.parametrize(("case", "fields", "actor", "record", "expected"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_for(
    case: str, fields: dict[str, object], actor: Actor, record: Approver | None, expected: Refusal | None
) -> None:
    assert refusal_for(request(**fields), actor, record) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "who", "expected"),
    [
        ({}, ALICE, True),
        ({"approvers": ["finance"]}, ALICE, False),
        ({}, OWNER_AS_APPROVER, False),
        ({"decisions": (("alice@example.com", "approve"),), "min_approvals": 2}, ALICE, False),
    ],
)
def test_may_decide_is_refusal_for_without_a_refusal(fields: dict[str, object], who: Approver, expected: bool) -> None:
    assert may_decide(request(**fields), who) is expected  # type: ignore[arg-type]


# --- who may see -------------------------------------------------------------------------------

VIEWS = [
    ("its agent", {"agent_id": AGENT.id}, True),
    ("another agent", {"agent_id": "ag_other"}, False),
    # An agent token never borrows a person's rights, even with the owner's email alongside.
    ("another agent, owner email", {"agent_id": "ag_other", "email": "owner@example.com"}, False),
    ("an approver", {"approver": ALICE}, True),
    # Least visibility: registered is not enough, the approver must be one who may decide it.
    ("an approver not named", {"approver": approver("carol@example.com", ("finance",))}, False),
    ("the owner as a person, by alias", {"approver": OWNER_BY_ALIAS}, True),
    ("the owner as a person, by id", {"approver": OWNER_BY_ID}, True),
    ("a person who is not an approver", {"approver": approver("dave@example.com", may_approve=False)}, False),
    ("a revoked approver", {"approver": approver("alice@example.com", revoked=True)}, False),
    ("the owner", {"email": "owner@example.com"}, True),
    ("the owner, email case", {"email": "OWNER@example.com"}, True),
    ("on behalf of", {"email": "helper@example.com"}, True),
    ("a stranger", {"email": "mallory@example.com"}, False),
    ("nobody known", {}, False),
]


@pytest.mark.parametrize(("case", "viewer", "expected"), VIEWS, ids=[v[0] for v in VIEWS])
def test_may_view(case: str, viewer: dict[str, object], expected: bool) -> None:
    seen = request(approvers=["ops"], on_behalf_of="helper@example.com", requester_ids=[OWNER_BY_ID.id])
    assert may_view(seen, **viewer) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "viewer", "expected"),
    [
        # An approver who decided keeps seeing it, even when the policy no longer names them.
        ({"approvers": ["finance"], "decisions": (("alice@example.com", "deny"),)}, ALICE, True),
        ({"approvers": ["finance"], "person_decisions": ((ALICE.id, "approve"),)}, ALICE_BY_ALIAS, True),
        ({"approvers": ["alice@example.com"]}, ALICE, True),
        ({"approvers": ["alice.smith@example.com"]}, ALICE_BY_ALIAS, True),  # named by an alias
        ({"approvers": ["ops"], "status": Status.APPROVED}, ALICE, True),  # eligible: sees the history
        ({"approvers": ["finance"], "status": Status.APPROVED}, ALICE, False),  # another team's request
    ],
)
def test_may_view_what_one_decided_or_may_decide(fields: dict[str, object], viewer: Approver, expected: bool) -> None:
    assert may_view(request(**fields), approver=viewer) is expected  # type: ignore[arg-type]


# --- persons, not strings ----------------------------------------------------------------------


def as_actor(person: Approver, email: str | None = None) -> Actor:
    return Actor(kind="human", id=person.id, email=email or person.email, person_id=person.id)


PERSON_REFUSALS = [
    # (case, request kwargs, actor, person, expected)
    ("owner approving under an alias", {}, as_actor(OWNER_BY_ALIAS), OWNER_BY_ALIAS, Refusal.SELF_APPROVAL),
    ("owner by person id", {"requester_ids": ["per_owner"]}, as_actor(OWNER_BY_ID), OWNER_BY_ID, Refusal.SELF_APPROVAL),
    (
        "on_behalf_of names an alias",
        {"on_behalf_of": "alice.smith@example.com"},
        as_actor(ALICE_BY_ALIAS),
        ALICE_BY_ALIAS,
        Refusal.SELF_APPROVAL,
    ),
    (
        "on_behalf_of spelled with a trailing dot",
        {"on_behalf_of": "alice@example.com."},
        as_actor(ALICE),
        ALICE,
        Refusal.SELF_APPROVAL,
    ),
    (
        "already decided under another address",
        {"decisions": (("alice.smith@example.com", "approve"),), "min_approvals": 2},
        as_actor(ALICE_BY_ALIAS),
        ALICE_BY_ALIAS,
        Refusal.ALREADY_DECIDED,
    ),
    (
        "already decided with another token",
        {"person_decisions": ((ALICE.id, "approve"),), "min_approvals": 2},
        as_actor(ALICE),
        ALICE,
        Refusal.ALREADY_DECIDED,
    ),
    ("named by an alias", {"approvers": ["alice.smith@example.com"]}, as_actor(ALICE_BY_ALIAS), ALICE_BY_ALIAS, None),
    ("a person record of someone else", {}, as_actor(ALICE), HELPER_AS_APPROVER, Refusal.UNKNOWN_APPROVER),
    ("an owner who is not an approver", {"approvers": ["*"]}, as_actor(DAVE), DAVE, Refusal.UNKNOWN_APPROVER),
]


@pytest.mark.parametrize(
    ("case", "fields", "actor", "record", "expected"), PERSON_REFUSALS, ids=[r[0] for r in PERSON_REFUSALS]
)
def test_refusal_for_compares_persons(
    case: str, fields: dict[str, object], actor: Actor, record: Approver, expected: Refusal | None
) -> None:
    assert refusal_for(request(**fields), actor, record) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("decisions", "expected"),
    [
        ((("per_a", "approve"), ("per_a", "approve")), 1),  # one person, two identities: counts once
        ((("per_a", "approve"), ("per_b", "approve")), 2),
        ((("per_a", "approve"), ("per_b", "deny")), 1),
    ],
)
def test_approvals_count_persons(decisions: tuple[tuple[str, str], ...], expected: int) -> None:
    assert approvals_given(request(person_decisions=decisions, min_approvals=2)) == expected


# --- what a decision needs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("   \n\t", None), (" why ", "why"), ("a\nb", "a\nb"), (5, None), (["x"], None)],
)
def test_clean_reason(raw: object, expected: str | None) -> None:
    assert clean_reason(raw) == expected


@pytest.mark.parametrize(
    ("decision", "reason", "missing"),
    [
        ("deny", None, True),
        ("deny", "", True),
        ("deny", "   ", True),
        ("deny", "freeze", False),
        ("approve", None, False),
        ("approve", "  ", False),
        ("approve", "fine", False),
    ],
)
def test_deny_needs_a_reason(decision: str, reason: str | None, missing: bool) -> None:
    assert reason_missing(decision, reason) is missing
    if missing:
        with pytest.raises(ReasonRequired) as raised:
            check_reason(decision, reason)
        assert raised.value.code == "reason_required" and raised.value.refusal is Refusal.REASON_REQUIRED
    else:
        check_reason(decision, reason)


# --- approval counts and queues ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_approvals", "decisions", "expected"),
    [
        (0, (), (0, 0)),
        (1, (), (0, 1)),
        (2, (("a@example.com", "approve"),), (1, 2)),
        (2, (("a@example.com", "approve"), ("b@example.com", "approve")), (2, 2)),
        (2, (("a@example.com", "approve"), ("b@example.com", "deny")), (1, 2)),
        (1, (("a@example.com", "approve"), ("b@example.com", "approve")), (2, 2)),  # never "2 of 1"
    ],
)
def test_approval_progress(
    min_approvals: int, decisions: tuple[tuple[str, str], ...], expected: tuple[int, int]
) -> None:
    assert approval_progress(request(min_approvals=min_approvals, decisions=decisions)) == expected


@pytest.mark.parametrize(
    ("approvers", "expected"),
    [([], [ANY_APPROVER]), (["*"], ["*"]), (["ops", "a@example.com", "ops"], ["ops", "a@example.com"])],
)
def test_a_request_is_filed_under_its_approvers(approvers: list[str], expected: list[str]) -> None:
    assert pending_targets_of(request(approvers=approvers)) == expected


def test_an_approver_looks_where_their_requests_are_filed() -> None:
    assert pending_targets(ALICE) == [ANY_APPROVER, "alice@example.com", "ops"]
    for approvers in (["*"], ["alice@example.com"], ["ops"]):
        assert set(pending_targets_of(request(approvers=approvers))) & set(pending_targets(ALICE))


# --- request ids and cursors -------------------------------------------------------------------


def test_generated_ids_match_the_pattern() -> None:
    made = {ids.new_request_id() for _ in range(200)}
    assert len(made) == 200 and all(ids.is_request_id(rid) for rid in made)
    assert ids.is_request_id(ids.EXAMPLE_REQUEST_ID)


@pytest.mark.parametrize(
    "value",
    [
        "req_abc123",  # the old Teams pattern accepted this; the service never makes it
        "req_abcdefghijklmno",
        "req_abcdefghijklmnopq",
        "req_ABCDEFGHIJKLMNOP",
        "req_abcdefghijklmn01",
        "req_abcdefghijklmno8",
        " req_abcdefghijklmnop",
        "req_abcdefghijklmnop\n",
        "../../etc",
        "",
        None,
        42,
    ],
)
def test_not_request_ids(value: object) -> None:
    assert not ids.is_request_id(value)


@pytest.mark.parametrize("cursor", [(0, "req_abcdefghijklmnop"), (1735732800000, ids.EXAMPLE_REQUEST_ID)])
def test_cursor_round_trip(cursor: ids.Cursor) -> None:
    encoded = ids.encode_cursor(cursor)
    assert encoded is not None and "=" not in encoded
    assert ids.decode_cursor(encoded) == cursor


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "%%%",
        "not-a-cursor",
        _b64("12:"),
        _b64("x:req_abcdefghijklmnop"),
        _b64("-1:req_abcdefghijklmnop"),
        _b64("12:req_abc123"),
        _b64("12:req_abcdefghijklmnop:x"),
        _b64("1" * 17 + ":req_abcdefghijklmnop"),
        "\u00e9\u00e9\u00e9\u00e9",
        base64.urlsafe_b64encode(b"\xff\xfe:").decode(),
    ],
)
def test_foreign_cursors_are_refused(raw: str) -> None:
    assert ids.decode_cursor(raw) is None


def test_no_cursor_encodes_to_none() -> None:
    assert ids.encode_cursor(None) is None


# --- the error catalogue -----------------------------------------------------------------------


def test_every_refusal_has_a_message_and_a_distinct_code() -> None:
    assert set(REFUSAL_MESSAGES) == set(Refusal)
    assert len({r.value for r in Refusal}) == len(Refusal)
    assert all(r.message and r.message == r.message.strip() for r in Refusal)


@pytest.mark.parametrize(
    ("error", "code", "also"),
    [
        (Refused(Refusal.SELF_APPROVAL), "self_approval", Refused),
        (Refused(Refusal.NOT_HUMAN, "only the requesting agent can cancel its request"), "forbidden", Refused),
        (ReasonRequired(), "reason_required", Refused),
        (NotDue("request has not expired yet"), "not_due", DomainError),
        (NotFound("req_abcdefghijklmnop"), "not_found", LookupError),
        (IdempotencyMismatch("reused"), "idempotency_key_reused", ValueError),
    ],
)
def test_domain_errors_carry_stable_codes(error: DomainError, code: str, also: type[Exception]) -> None:
    assert isinstance(error, DomainError) and isinstance(error, also)
    assert error.code == code and str(error) == error.message


def test_refused_defaults_to_the_catalogue_message() -> None:
    assert Refused(Refusal.NOT_PENDING).message == REFUSAL_MESSAGES[Refusal.NOT_PENDING]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a reason is required to deny", "A reason is required to deny."), ("Done.", "Done."), ("why?", "Why?")],
)
def test_sentence(text: str, expected: str) -> None:
    assert sentence(text) == expected


@pytest.mark.parametrize(
    ("record", "active"),
    [(None, False), (ALICE, True), (approver("alice@example.com", revoked=True), False)],
)
def test_is_active_approver(record: Approver | None, active: bool) -> None:
    assert is_active_approver(record) is active
