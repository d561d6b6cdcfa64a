"""Server-side verification when the log shrinks while it is being read."""

from __future__ import annotations

from redis.asyncio import Redis

from approvalbot.audit.verify import _explain_redis
from approvalbot.core.chain import GENESIS
from approvalbot.core.models import RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.service import ApprovalService
from approvalbot.store import keys


async def test_a_record_gone_before_it_is_explained_is_truncation_not_a_crash(redis: Redis) -> None:
    """The explanation re-reads the failing position; it used to hand the missing record to link()."""
    service = ApprovalService(redis, Policy.default())
    agent, _ = await service.identities.add_agent("bot", "o@example.com")
    await service.create(agent, RequestCreate(action="x.y"))
    await service.audit.seal()
    n = int(await redis.llen(keys.AUDIT_LOG))
    # As if the batch reader had seen n + 1 records and the last vanished before the explanation.
    problem = await _explain_redis(redis, n + 1, GENESIS, GENESIS, n + 1, n + 1, 100, [])
    assert problem.kind == "truncated" and problem.seq == n + 1
