"""A test-only channel: implements `approvalbot.channels` and posts to an in-memory board.

It proves the interface: registered by one line in the composition root's list, its
cards go through the one delivery engine (same markers, retries and failure records),
and decisions taken through it go through the same core rules as the API.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from approvalbot.channels import Card, Commands, Failure, FinalStep, JobSpec, Posted, Target
from approvalbot.config import Settings
from approvalbot.core.machine import Refused
from approvalbot.core.models import Actor, ApprovalRequest, Approver, Channel
from approvalbot.jobs import delivery as engine
from approvalbot.service import human_actor
from approvalbot.store.audit import StoredRecord
from approvalbot.store.deliveries import TargetState
from approvalbot.store.identities import IdentityStore
from approvalbot.web.context import SERVICES

NAME = "memory"


class BoardError(Exception):
    def __init__(self, status: int):
        super().__init__(f"board answered {status}")
        self.status = status


@dataclass
class Board:
    """The "chat service": every call lands here, in order."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    failing: dict[str, list[int]] = field(default_factory=dict)  # call kind -> statuses to answer next
    ids: itertools.count[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, **body: Any) -> str:
        with self.lock:
            if self.failing.get(kind):
                raise BoardError(self.failing[kind].pop(0))
            message_id = f"m{next(self.ids)}"
            getattr(self, kind).append({"id": message_id, **body})
            return message_id

    def reset(self) -> None:
        with self.lock:
            self.posts.clear()
            self.updates.clear()
            self.replies.clear()
            self.failing.clear()


BOARD = Board()


class MemoryDelivery:
    channel = NAME
    actor = Actor(kind="system", id="memory-delivery", channel=Channel.SYSTEM)
    can_find = False
    sticky_failures = True

    @classmethod
    def for_job(cls, redis: Redis, settings: Settings, budget: engine.Budget) -> MemoryDelivery:
        return cls()

    async def close(self) -> None:
        return None

    def classify(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, BoardError):
            return Failure(f"http_{exc.status}", retryable=exc.status == 429 or exc.status >= 500)
        return None

    async def targets(self, request: ApprovalRequest) -> list[Target]:
        return [Target("board", "board")]

    async def render(self, request: ApprovalRequest) -> Card:
        shown = {"request_id": request.id, "action": request.action, "status": str(request.status)}
        return Card(shown, hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16])

    async def post(self, target: Target, card: Card, request: ApprovalRequest) -> Posted:
        return Posted(BOARD.call("posts", card=card.payload), target.id)

    async def update(self, target: Target, state: TargetState, card: Card) -> None:
        BOARD.call("updates", message=state.message_id, card=card.payload)

    async def reply(self, target: Target, state: TargetState, request: ApprovalRequest, record: StoredRecord) -> None:
        BOARD.call("replies", thread=state.message_id, seq=record.seq, type=record.as_dict()["type"])

    async def find_post(self, target: Target, request: ApprovalRequest, since: float) -> Posted | None:
        return None

    async def find_reply(self, target: Target, state: TargetState, request: ApprovalRequest, seq: int) -> bool:
        return False

    async def finish(self, request: ApprovalRequest, step: FinalStep) -> bool:
        return False


async def deliver(request_id: str, seq: int = 0) -> Any:
    """The channel's RQ job: the one engine with this channel's primitives."""
    return await engine.run_job(MemoryDelivery.for_job, request_id)


JOB = JobSpec(name=NAME, func=deliver, job_id=lambda seq, record: f"memory-{seq}")


class MemoryChannel:
    name = NAME

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return True

    def status_line(self) -> str:
        return "Memory: on (test channel)"

    def mount(self, app: web.Application) -> bool:
        """`POST /memory/decide {"user", "request_id", "decision"}`: a click in the channel."""

        async def decide(request: web.Request) -> web.Response:
            ctx = request.app[SERVICES]
            body = await request.json()
            approver = await self.approver_for(ctx.redis, body["user"])
            actor = (
                human_actor(approver, Channel.API, body["user"])
                if approver
                else Actor(kind="human", id=f"memory:{body['user']}", channel=Channel.API)
            )
            try:
                decided = await ctx.service.decide(body["request_id"], actor, approver, body["decision"], None)
            except Refused as refused:
                return web.json_response({"refused": str(refused.refusal)}, status=403)
            return web.json_response({"status": str(decided.status)})

        app.router.add_post("/memory/decide", decide)
        return True

    def jobs(self) -> list[JobSpec]:
        return [JOB]

    @staticmethod
    def add_commands(subparsers: Any) -> Commands:
        return {}

    async def approver_for(self, redis: Redis, chat_user: str) -> Approver | None:
        """The board's users are "mem:<email>"; trusted here as a chat service's signed identity would be."""
        return await IdentityStore(redis).get_approver(chat_user.removeprefix("mem:"))

    def delivery_status(self, states: dict[str, TargetState], failures: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "targets": {t: {"message_id": s.message_id, "mirrored_seq": s.mirrored_seq} for t, s in states.items()},
            "failures": failures,
        }
