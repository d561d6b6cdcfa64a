"""Per-target delivery progress: what a channel has (maybe) posted for one request, in one place.

One Redis hash per (request, channel, target) under `keys.delivery(request_id,
"<channel>:<target>")`, with a TTL refreshed on every write, so the state of long
finished requests goes away by itself. A per-request index set lists the targets,
so the deliveries API can show every channel's progress without knowing them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from approvalbot.store import keys

STATE_TTL = 90 * 24 * 3600
# The target name of a channel's per-request state (routing errors, the final step).
REQUEST_TARGET = "_request"
# The `failed` code of a target the channel knows is gone for good (the bot was removed, the
# conversation deleted), set without another delivery.failed when a later request meets it.
GONE = "conversation_gone"


def state_key(request_id: str, channel: str, target: str) -> str:
    return keys.delivery(request_id, f"{channel}:{target}")


def index_key(request_id: str) -> str:
    return keys.delivery(request_id, "_index")


@dataclass
class TargetState:
    """Delivery progress of one request to one target (a Slack channel, a Teams conversation, ...).

    `posting_since` and `mirroring` are intent markers, written before a post or a
    reply: finding one set without its result means an earlier attempt may have posted.
    """

    message_id: str = ""  # the card's id where it was posted (Slack ts, Teams activity id)
    where: str = ""  # where the card was posted, as the channel names it (e.g. a Slack channel id)
    posting_since: float = 0.0
    digest: str = ""  # of the card as last shown
    mirrored_seq: int = 0
    mirroring: int = 0
    reposts: int = 0  # posts made again after an unknown outcome (channels that cannot look messages up)
    failures: int = 0  # consecutive retryable failures
    last_error: str = ""
    failed: str = ""  # a permanent failure code: this target gets nothing more
    final: str = ""  # the channel's final step: "", "sending", "sent" or "failed"
    final_ref: str = ""  # where the final step goes (e.g. a DM channel id)
    errors: dict[str, str] = field(default_factory=dict)  # stage -> error code already recorded

    @classmethod
    def parse(cls, raw: Mapping[bytes | str, bytes | str]) -> TargetState:
        data = {_str(k): _str(v) for k, v in raw.items()}
        state = cls(errors={k[4:]: v for k, v in data.items() if k.startswith("err:")})
        for f in dataclasses.fields(cls):
            if f.name == "errors" or f.name not in data:
                continue
            kind = type(getattr(state, f.name))
            value = data[f.name]
            setattr(state, f.name, kind(value) if value else kind())
        return state


class DeliveryStore:
    """Reads and writes TargetState; every write refreshes the TTL."""

    def __init__(self, redis: Redis):
        self.redis = redis

    async def load(self, request_id: str, channel: str, target: str) -> TargetState:
        return TargetState.parse(await self.redis.hgetall(state_key(request_id, channel, target)))

    async def save(self, request_id: str, channel: str, target: str, state: TargetState, **changes: Any) -> None:
        """Apply `changes` to `state` and to Redis. An error is set with `errors={stage: code or None}`."""
        errors: dict[str, str | None] = changes.pop("errors", {})
        for name, value in changes.items():
            setattr(state, name, value)
        mapping: dict[FieldT, EncodableT] = {k: _text(v) for k, v in changes.items()}
        drop = []
        for stage, code in errors.items():
            if code is None:
                state.errors.pop(stage, None)
                drop.append(f"err:{stage}")
            else:
                state.errors[stage] = code
                mapping[f"err:{stage}"] = code
        key = state_key(request_id, channel, target)
        pipe = self.redis.pipeline(transaction=True)
        if mapping:
            pipe.hset(key, mapping=mapping)
        if drop:
            pipe.hdel(key, *drop)
        pipe.expire(key, STATE_TTL)
        pipe.sadd(index_key(request_id), f"{channel}:{target}")
        pipe.expire(index_key(request_id), STATE_TTL)
        await pipe.execute()

    async def all(self, request_id: str) -> dict[tuple[str, str], TargetState]:
        """Every (channel, target) with state for this request."""
        names = sorted(_str(m) for m in await self.redis.smembers(index_key(request_id)))
        found: dict[tuple[str, str], TargetState] = {}
        for name in names:
            channel, _, target = name.partition(":")
            found[(channel, target)] = await self.load(request_id, channel, target)
        return found


@dataclass(frozen=True)
class PostedThread:
    """A card a channel posted for a request, and its delivery state (`where`, `message_id`)."""

    request_id: str
    target: str
    state: TargetState


async def posted(redis: Redis, channel: str, scan_count: int = 1000) -> AsyncIterator[PostedThread]:
    """Every card of `channel` the delivery state says was posted (a message id is known).

    Found through the per-request target indexes, so it needs no list of requests: the
    audit witness must find threads of requests whose records are gone from the log.
    """
    head, tail = index_key("\0").split("\0")
    async for raw in redis.scan_iter(match=index_key("*"), count=scan_count):
        name = _str(raw)
        request_id = name[len(head) : -len(tail)] if name.startswith(head) and name.endswith(tail) else ""
        if not request_id:
            continue
        members = sorted(_str(m) for m in await redis.smembers(name))
        for member in members:
            owner, _, target = member.partition(":")
            if owner != channel or target == REQUEST_TARGET:
                continue
            state = TargetState.parse(await redis.hgetall(state_key(request_id, channel, target)))
            if state.message_id:
                yield PostedThread(request_id, target, state)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if value else ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(value or "")
