"""Evidence report at scale: build time and HTML size for a year of audit records (issue 18).

    .venv/bin/python bench/report.py [--records 100000]

Appends N realistic records spread over 365 days (requests approved, denied, allowed by
policy, expired; self-approval attempts), seals and checkpoints them, then times
`build_report` for the whole year: chain verification, reading the log, the figures, the
charts and the signature, as `approvalbot audit report` does. Targets: under 10 s and under
5 MB for 100,000 records. Uses REDIS_URL when set (it is flushed: give it an empty database),
else a throwaway embedded Valkey. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, redis_server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from approvalbot.audit.checkpoints import checkpoint
from approvalbot.audit.report_build import build_report
from approvalbot.audit.signing import Signer
from approvalbot.core import machine as sm
from approvalbot.core.events import EventType, event_for
from approvalbot.core.models import Actor, Agent, RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.service import new_request_id
from approvalbot.store import keys
from approvalbot.store.audit import AuditLog
from approvalbot.store.requests import audit_body

START = datetime(2025, 1, 1, tzinfo=UTC)
SYSTEM = Actor(kind="system", id="approvalbot", channel="system")


def bodies(n: int) -> list[str]:
    agent = Agent(id="agt_0123456789abcdef", name="etl-bot", owner="owner@example.com", created_at=START)
    owner = Actor(kind="agent", id=agent.id, email=agent.owner)
    people = [Actor(kind="human", id=f"prs_{k:016x}", email=f"approver{k}@example.com") for k in range(12)]
    policy = Policy.default().evaluate("db.migrate", None, agent.name, {})
    step = timedelta(days=365) / (n / 2.6)
    out: list[str] = []
    i = 0
    while len(out) < n:
        now = START + step * i
        body = RequestCreate(action=f"db.{('migrate', 'drop', 'grant', 'read')[i % 4]}", resource=f"db://t{i % 97}")
        request = sm.create(new_request_id(), body, agent, policy, now).request
        out.append(audit_body(event_for(request, EventType.REQUESTED, owner, now, "nightly <job>")))
        later = now + timedelta(seconds=30 + (i * 7919) % 3600)
        who = people[i % len(people)]
        kind = i % 10
        if kind < 6:
            out.append(audit_body(event_for(request, EventType.APPROVAL_RECORDED, who, later, "ok", approvals=1)))
            out.append(audit_body(event_for(request, EventType.APPROVED, who, later, "ok", status="approved")))
        elif kind < 8:
            out.append(audit_body(event_for(request, EventType.DENIED, who, later, "not now", status="denied")))
        elif kind == 8:
            out.append(audit_body(event_for(request, EventType.APPROVED, SYSTEM, now, "allowed by policy rule r")))
        else:
            out.append(
                audit_body(event_for(request, EventType.SELF_APPROVAL_BLOCKED, owner, now, None, attempted="approve"))
            )
            out.append(
                audit_body(event_for(request, EventType.EXPIRED, SYSTEM, later, "nobody decided", status="expired"))
            )
        i += 1
    return out[:n]


async def main(n: int) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    with redis_server() as url:
        redis = Redis.from_url(url)
        await redis.flushdb()
        audit = AuditLog(redis)
        made = bodies(n)
        for k in range(0, n, 5000):
            await redis.rpush(keys.AUDIT_LOG, *made[k : k + 5000])
        await audit.seal()
        await checkpoint(audit, signer)
        started = time.perf_counter()
        page = await build_report(redis, signer, since=START, until=START + timedelta(days=366), deployment="bench")
        took = time.perf_counter() - started
        await redis.aclose()
    size = len(page.encode())
    print(machine())
    print(f"records: {n}")
    print(f"report build: {took:.2f} s (target < 10 s)")
    print(f"report size: {size / 1e6:.2f} MB (target < 5 MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().records))
