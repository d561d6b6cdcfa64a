"""The state machine as a table: (state, input, now) -> (state, events) or a typed refusal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from approvalbot.core import machine
from approvalbot.core.errors import NotDue, ReasonRequired, Refusal, Refused
from approvalbot.core.events import EventType
from approvalbot.core.models import Actor, ApprovalRequest, Approver, Status
from tests.core.factories import AGENT, NOW, approver, ask, policy, request

ALICE = approver("alice@example.com", ("ops",))
BOB = approver("bob@example.com", ("ops",))
OWNER = approver("owner@example.com", ("ops",))
PEOPLE = {a.email.split("@")[0]: a for a in (ALICE, BOB, OWNER)}
LATER = NOW + timedelta(minutes=5)


def actor(who: Approver) -> Actor:
    return Actor(kind="human", id=who.id, email=who.email)


# --- create --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effect", "status", "events", "needed"),
    [
        ("require_approval", Status.PENDING, [EventType.REQUESTED], 2),
        ("allow", Status.APPROVED, [EventType.REQUESTED, EventType.APPROVED], 0),
        ("deny", Status.DENIED, [EventType.REQUESTED, EventType.DENIED], 0),
    ],
)
def test_create_settles_allow_and_deny_at_once(
    effect: str, status: Status, events: list[EventType], needed: int
) -> None:
    applied = policy(min_approvals=2).model_copy(update={"effect": effect})
    done = machine.create("req_abcdefghijklmnop", ask(justification="why"), AGENT, applied, NOW)
    assert done.request.status is status and done.request.approvals_needed == needed
    assert [e.type for e in done.events] == events
    assert done.events[0].actor.kind == "agent" and done.events[0].reason == "why"
    if status.final:
        assert done.request.decided_at == NOW and done.events[-1].actor == machine.SYSTEM
        assert (
            done.request.outcome_reason
            == f"{'allowed' if effect == 'allow' else 'denied'} by policy rule needs-approval"
        )


@pytest.mark.parametrize(
    ("asked", "policy_gives", "expected"),
    [(None, 3600, 3600), (60, 3600, 60), (7200, 3600, 3600), (3600, 3600, 3600)],
)
def test_an_agent_may_ask_for_less_time_never_more(asked: int | None, policy_gives: int, expected: int) -> None:
    done = machine.create("req_abcdefghijklmnop", ask(expires_in=asked), AGENT, policy(expires_in=policy_gives), NOW)
    assert done.request.expires_at - NOW == timedelta(seconds=expected)


# --- decide ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    who: str
    decision: str
    reason: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    status: Status | None = None  # after the last step, when it succeeds
    needed: int | None = None
    events: tuple[EventType, ...] = ()  # of the last step
    refused: Refusal | None = None  # the last step's refusal
    min_approvals: int = 1
    fields: tuple[tuple[str, Any], ...] = ()


APPROVE_1 = Step("alice", "approve")
DECISIONS = [
    Case(
        "one approval settles it", (APPROVE_1,), Status.APPROVED, 0, (EventType.APPROVAL_RECORDED, EventType.APPROVED)
    ),
    Case("first of two", (APPROVE_1,), Status.PENDING, 1, (EventType.APPROVAL_RECORDED,), min_approvals=2),
    Case(
        "second of two",
        (APPROVE_1, Step("bob", "approve")),
        Status.APPROVED,
        0,
        (EventType.APPROVAL_RECORDED, EventType.APPROVED),
        min_approvals=2,
    ),
    Case("deny with a reason", (Step("alice", "deny", "freeze"),), Status.DENIED, None, (EventType.DENIED,)),
    Case(
        "one deny ends a quorum",
        (APPROVE_1, Step("bob", "deny", "no")),
        Status.DENIED,
        None,
        (EventType.DENIED,),
        min_approvals=2,
    ),
    Case(
        "approve with a reason",
        (Step("alice", "approve", "ok"),),
        Status.APPROVED,
        0,
        (EventType.APPROVAL_RECORDED, EventType.APPROVED),
    ),
    Case("deny without a reason", (Step("alice", "deny"),), refused=Refusal.REASON_REQUIRED),
    Case("deny with whitespace", (Step("alice", "deny", "  \n"),), refused=Refusal.REASON_REQUIRED),
    Case("twice by one approver", (APPROVE_1, APPROVE_1), refused=Refusal.ALREADY_DECIDED, min_approvals=2),
    Case("after the outcome", (APPROVE_1, Step("bob", "approve")), refused=Refusal.NOT_PENDING),
    Case("by the owner", (Step("owner", "approve"),), refused=Refusal.SELF_APPROVAL),
    Case("not named", (APPROVE_1,), refused=Refusal.NOT_ELIGIBLE, fields=(("approvers", ["finance"]),)),
    # Eligibility before the reason: an outsider learns they may not decide, not that they forgot why.
    Case(
        "not named, no reason",
        (Step("alice", "deny"),),
        refused=Refusal.NOT_ELIGIBLE,
        fields=(("approvers", ["finance"]),),
    ),
]


@pytest.mark.parametrize("case", DECISIONS, ids=[c.name for c in DECISIONS])
def test_decide(case: Case) -> None:
    current = request(min_approvals=case.min_approvals, **dict(case.fields))
    *before, last = case.steps
    for step in before:
        current = machine.decide(
            current, actor(PEOPLE[step.who]), PEOPLE[step.who], step.decision, step.reason, LATER
        ).request
    who = PEOPLE[last.who]
    if case.refused is not None:
        with pytest.raises(Refused) as raised:
            machine.decide(current, actor(who), who, last.decision, last.reason, LATER)
        assert raised.value.refusal is case.refused and raised.value.code == case.refused.value
        assert raised.value.message == case.refused.message
        return
    done = machine.decide(current, actor(who), who, last.decision, last.reason, LATER)
    assert done.request.status is case.status
    assert [e.type for e in done.events] == list(case.events)
    assert done.request.decisions[-1].approver == who.email and done.request.decisions[-1].reason == last.reason
    if case.needed is not None:
        assert done.request.approvals_needed == case.needed
    if done.request.status.final:
        assert done.request.decided_at == LATER and done.request.outcome_reason == last.reason


def test_deny_without_reason_is_a_typed_refusal() -> None:
    with pytest.raises(ReasonRequired):
        machine.decide(request(), actor(ALICE), ALICE, "deny", None, LATER)


def test_a_blocked_self_approval_is_an_event_worth_recording() -> None:
    with pytest.raises(Refused) as raised:
        machine.decide(request(), actor(OWNER), OWNER, "approve", "mine", LATER)
    event = raised.value.event
    assert event is not None and event.type is EventType.SELF_APPROVAL_BLOCKED
    assert event.data == {"attempted": "approve"} and event.reason == "mine" and event.actor.email == OWNER.email


@pytest.mark.parametrize("refusal_case", ["unregistered", "not named", "agent"])
def test_other_refusals_record_nothing(refusal_case: str) -> None:
    current = request(approvers=["finance"] if refusal_case == "not named" else None)
    who: Actor = actor(ALICE)
    record: Approver | None = ALICE
    if refusal_case == "unregistered":
        record = None
    elif refusal_case == "agent":
        who = Actor(kind="agent", id=AGENT.id, email=AGENT.owner)
    with pytest.raises(Refused) as raised:
        machine.decide(current, who, record, "approve", None, LATER)
    assert raised.value.event is None


def test_progress_is_recorded_on_the_approval_event() -> None:
    done = machine.decide(request(min_approvals=2), actor(ALICE), ALICE, "approve", None, LATER)
    assert done.events[0].data == {"approvals": 1, "required": 2}


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_decision_after_the_deadline_expires_the_request(decision: str) -> None:
    current = request()
    done = machine.decide(current, actor(ALICE), ALICE, decision, "late", current.expires_at)
    assert done.request.status is Status.EXPIRED and done.request.decisions == []
    assert [e.type for e in done.events] == [EventType.EXPIRED]


def test_transitions_never_mutate_their_input() -> None:
    current = request(min_approvals=2)
    snapshot = current.model_dump()
    machine.decide(current, actor(ALICE), ALICE, "approve", None, LATER)
    machine.cancel(current, AGENT.id, Actor(kind="agent", id=AGENT.id), LATER)
    machine.expire(current, current.expires_at)
    assert current.model_dump() == snapshot


# --- cancel and expire -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "agent_id", "expected"),
    [
        (Status.PENDING, AGENT.id, Status.CANCELLED),
        (Status.PENDING, "ag_other", Refusal.NOT_HUMAN),  # code "forbidden", with its own wording
        (Status.APPROVED, AGENT.id, Refusal.NOT_PENDING),
        (Status.CANCELLED, AGENT.id, Refusal.NOT_PENDING),
    ],
)
def test_cancel(status: Status, agent_id: str, expected: Status | Refusal) -> None:
    current = request(status=status)
    who = Actor(kind="agent", id=agent_id)
    if isinstance(expected, Refusal):
        with pytest.raises(Refused) as raised:
            machine.cancel(current, agent_id, who, LATER)
        assert raised.value.refusal is expected
        return
    done = machine.cancel(current, agent_id, who, LATER)
    assert done.request.status is expected and [e.type for e in done.events] == [EventType.CANCELLED]
    assert done.request.outcome_reason == "cancelled by the agent"


def _expire(current: ApprovalRequest, offset: timedelta) -> Status:
    return machine.expire(current, current.expires_at + offset).request.status


@pytest.mark.parametrize(
    ("status", "offset", "expected"),
    [
        (Status.PENDING, timedelta(0), Status.EXPIRED),
        (Status.PENDING, timedelta(days=1), Status.EXPIRED),
        (Status.PENDING, -timedelta(milliseconds=1), NotDue),
        (Status.APPROVED, timedelta(days=1), Refused),
        (Status.EXPIRED, timedelta(days=1), Refused),
    ],
)
def test_expire(status: Status, offset: timedelta, expected: Status | type[Exception]) -> None:
    current = request(status=status)
    if isinstance(expected, Status):
        assert _expire(current, offset) is expected
        return
    with pytest.raises(expected):
        _expire(current, offset)


@pytest.mark.parametrize("callback_url", [None, "https://agent.example.com/done"])
def test_final_events_say_whether_a_callback_is_owed(callback_url: str | None) -> None:
    current = request(callback_url=callback_url)
    done = machine.expire(current, current.expires_at)
    assert done.events[-1].data == {"status": "expired", "callback": callback_url is not None}
    assert done.events[-1].actor == machine.SYSTEM
