"""The one Protocol every channel implements, and the values it exchanges with the engine.

A channel is built from the settings at start-up (`ChannelFactory`), which is where it
validates them: a half-configured channel stops start-up with a message naming the
variable, and its secrets are kept as `SecretStr` (never in a repr or a log). It then

* mounts its inbound endpoint on the web app (`mount`; shared services come from the app),
* names its delivery job for the outbox (`jobs`); the job runs the one delivery engine in
  `approvalbot.jobs.delivery` with the channel's `DeliveryPrimitives`,
* resolves a chat user to an approver (`approver_for`), so decisions taken in the channel
  go through the same core rules as the API,
* says one start-up line (`status_line`), adds its CLI commands (`add_commands`, on the class) and shapes
  its delivery status for `GET /v1/requests/{id}/deliveries` (`delivery_status`).

Optionally, a channel that can read its threads back offers `witness()` (`CanWitness`): the
audit records it mirrored, for `approvalbot audit verify --witness <channel>`.

A third channel is one new package implementing this, plus one line in `approvalbot.app`.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from redis.asyncio import Redis

from approvalbot.audit.witness import Unread, Witnessed
from approvalbot.config import Settings
from approvalbot.core.models import Actor, ApprovalRequest, Approver
from approvalbot.runtime import Runtime
from approvalbot.store.audit import StoredRecord
from approvalbot.store.deliveries import PostedThread, TargetState

# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A failed call to the chat service, as the channel classifies it.

    `code` is short and safe to record (never a token or a body). `retryable` failures
    are retried with backoff (after `retry_after` seconds when the service said so);
    the others are permanent. `ambiguous` means the call may have taken effect anyway
    (a timeout after sending), so a post must not be assumed absent.
    """

    code: str
    retryable: bool
    retry_after: float | None = None
    ambiguous: bool = False


class RouteError(Exception):
    """The request names no place the channel can post to (recorded once, stage "route")."""

    def __init__(self, code: str, where: str = ""):
        super().__init__(code)
        self.code = code
        self.where = where


class CardError(Exception):
    """A card cannot be built within the platform's limits; the message is a short safe code
    (e.g. `card_too_large_31000_bytes`), recorded as the `delivery.failed` error."""


class StepFailed(Exception):
    """A primitive knows a step failed for good (no SDK error to classify)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.code)
        self.failure = failure


@dataclass(frozen=True)
class Target:
    """One place a request's card goes: `id` is stable and key-safe, `address` is the channel's own."""

    id: str
    display: str
    address: Any = None


@dataclass(frozen=True)
class Card:
    """A rendered card; `digest` changes exactly when what people see changes."""

    payload: Any
    digest: str


@dataclass(frozen=True)
class Posted:
    message_id: str
    where: str


@dataclass(frozen=True)
class JobSpec:
    """A channel's delivery job for the outbox: one job per audit record of a request.

    `func(request_id, seq)` is importable by RQ (a module-level function, may be async).
    """

    name: str
    func: Callable[..., Any]
    job_id: Callable[[int, dict[str, Any]], str]


Commands = dict[str, Callable[[Runtime, argparse.Namespace], int]]


# --- the engine's view of a channel ------------------------------------------------------


class FinalStep(Protocol):
    """What the engine hands a channel's final step: its state, and the guard before each call."""

    state: TargetState

    async def before_call(self) -> None: ...

    async def save(self, **changes: Any) -> None: ...


class DeliveryPrimitives(Protocol):
    """What the delivery engine needs from a channel to post, update and mirror, each once.

    Primitives raise the chat SDK's own errors; `classify` turns them into a `Failure`
    (None: not a delivery failure, e.g. a bug, which propagates). `can_find` says whether
    `find_post` / `find_reply` can look up what an interrupted attempt posted; a channel
    that cannot (Teams) gets at-least-once posting, each re-post counted in its state.
    `sticky_failures`: a permanent failure closes the target for good (else later jobs try again).
    """

    channel: str
    actor: Actor
    can_find: bool
    sticky_failures: bool

    async def targets(self, request: ApprovalRequest) -> list[Target]: ...

    async def render(self, request: ApprovalRequest) -> Card: ...

    async def post(self, target: Target, card: Card, request: ApprovalRequest) -> Posted: ...

    async def update(self, target: Target, state: TargetState, card: Card) -> None: ...

    async def reply(
        self, target: Target, state: TargetState, request: ApprovalRequest, record: StoredRecord
    ) -> None: ...

    async def find_post(self, target: Target, request: ApprovalRequest, since: float) -> Posted | None: ...

    async def find_reply(self, target: Target, state: TargetState, request: ApprovalRequest, seq: int) -> bool: ...

    async def finish(self, request: ApprovalRequest, step: FinalStep) -> bool:
        """The optional last step once the request is final (Slack DMs the owner); False: none."""
        ...

    def classify(self, exc: BaseException) -> Failure | None: ...

    async def close(self) -> None: ...


# --- the channel ---------------------------------------------------------------------------


class Channel(Protocol):
    """One chat channel, built (and its settings validated) by a `ChannelFactory`."""

    name: str

    @property
    def enabled(self) -> bool: ...

    def status_line(self) -> str: ...

    def mount(self, app: web.Application) -> bool:
        """Add the channel's endpoints to the web app (shared services are on the app); False when off."""
        ...

    def jobs(self) -> list[JobSpec]: ...

    def approver_for(self, redis: Redis, chat_user: str) -> Awaitable[Approver | None]:
        """The registered approver a chat user is, from what the channel verified about them."""
        ...

    def delivery_status(self, states: dict[str, TargetState], failures: list[dict[str, Any]]) -> dict[str, Any]:
        """This channel's part of `GET /v1/requests/{id}/deliveries`, from the per-target state."""
        ...


class WitnessUnavailable(Exception):
    """The channel cannot read its threads back as configured; the message says what is needed."""


class Witness(Protocol):
    """Reads back the audit records a channel mirrored into its cards' threads.

    Yields one `Witnessed` per mirrored record found (only the bot's own messages count)
    and one `Unread` per thread it could not read; reads are paginated and bounded.
    """

    def witnessed(self, redis: Redis, threads: Sequence[PostedThread]) -> AsyncIterator[Witnessed | Unread]: ...

    async def close(self) -> None: ...


@runtime_checkable
class CanWitness(Protocol):
    """The optional part of `Channel`: a channel whose threads can serve as audit witnesses."""

    name: str

    def witness(self) -> Witness:
        """Raises `WitnessUnavailable` when the settings do not allow reading threads."""
        ...


class ChannelFactory(Protocol):
    """A channel's class: builds the channel from the settings (validating them), and adds its CLI
    commands, which must work before settings are loaded (so they are not on the instance)."""

    name: str

    def __call__(self, settings: Settings) -> Channel: ...

    def add_commands(self, subparsers: Any) -> Commands: ...
