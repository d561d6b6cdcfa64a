"""Audit benchmark: verification throughput on 100,000 records, and what the audit adds to intake.

    .venv/bin/python bench/audit_bench.py [--records 100000] [--intake 400] [--rounds 5]

Uses REDIS_URL (which must name an EMPTY database: it is flushed at the end) or
starts a throwaway embedded Valkey. Prints figures; asserts nothing.

1. A 100,000-record log is appended in batches of realistic event bodies, then
   sealed by the real AuditLog.seal() and checkpointed.
2. Server-side verification (verify_redis) and offline verification of a JSONL
   export (verify_file: parse, re-serialise canonically, hash) are timed, best of 3.
3. Intake: service.create as shipped (commit with its audit record + sealing)
   against the same steps minus sealing, and minus the audit record altogether
   (the commit plan carries no audit bodies). The modes run interleaved, in the
   same process against the same Redis, so drift hits them alike.
4. Grant signing/verification and checkpoint signing, per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, redis_server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from approvalbot.audit import grants
from approvalbot.audit.checkpoints import checkpoint, read_checkpoints
from approvalbot.audit.export import export_records, render
from approvalbot.audit.signing import Signer
from approvalbot.audit.verify import verify_file, verify_redis
from approvalbot.core import machine as sm
from approvalbot.core.events import EventType, event_for
from approvalbot.core.models import Actor, Agent, RequestCreate
from approvalbot.core.policy import Policy
from approvalbot.service import ApprovalService, new_request_id
from approvalbot.store import keys
from approvalbot.store.requests import audit_body

BODY = RequestCreate(
    action="dataset.export",
    resource="s3://warehouse/customers",
    params={"rows": 120000, "format": "parquet", "pii": False},
    justification="quarterly churn analysis",
    context={"code_path": "pipelines/export.py:88"},
)


def best(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


async def abest(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def sample_bodies(n: int) -> list[str]:
    """Realistic audit bodies: a request's created/approval/approved/denied events, varied ids and times."""
    agent = Agent(id="agt_0123456789abcdef", name="etl-bot", owner="owner@example.com", created_at=datetime.now(UTC))
    human = Actor(kind="human", id="apr_fedcba9876543210", email="alice@example.com")
    policy = Policy.default().evaluate(BODY.action, BODY.resource, agent.name, BODY.params)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[str] = []
    i = 0
    while len(out) < n:
        now = start + timedelta(milliseconds=37 * i)
        request = sm.create(new_request_id(), BODY, agent, policy, now).request
        actor = Actor(kind="agent", id=agent.id, email=agent.owner)
        out.append(audit_body(event_for(request, EventType.REQUESTED, actor, now, BODY.justification)))
        if i % 3 == 0:
            out.append(
                audit_body(
                    event_for(
                        request, EventType.DENIED, human, now, "not in the freeze", status="denied", callback=False
                    )
                )
            )
        else:
            out.append(
                audit_body(event_for(request, EventType.APPROVAL_RECORDED, human, now, None, approvals=1, required=1))
            )
            out.append(
                audit_body(event_for(request, EventType.APPROVED, human, now, None, status="approved", callback=False))
            )
        i += 1
    return out[:n]


async def build_log(redis: Redis, service: ApprovalService, signer: Signer, n: int) -> dict[str, float]:
    bodies = sample_bodies(n)
    started = time.perf_counter()
    for k in range(0, n, 5000):
        await redis.rpush(keys.AUDIT_LOG, *bodies[k : k + 5000])
    appended = time.perf_counter() - started
    started = time.perf_counter()
    await service.audit.seal()
    sealed = time.perf_counter() - started
    started = time.perf_counter()
    await checkpoint(service.audit, signer)
    signed = time.perf_counter() - started
    return {"append": appended, "seal": sealed, "checkpoint": signed, "bytes": sum(len(b) for b in bodies) / n}


async def intake(redis: Redis, signer: Signer, per_round: int, rounds: int, concurrency: int) -> dict:
    service = ApprovalService(redis, Policy.default())
    grants.install(service, signer)
    agent, _ = await service.identities.add_agent("bench-bot", "owner@example.com")

    async def full() -> None:
        await service.create(agent, BODY)

    def steps(with_records: bool, seal: bool):
        async def run() -> None:  # service.create's own steps, so only the audit part differs
            applied = service.policy.evaluate(BODY.action, BODY.resource, agent.name, BODY.params)
            transition = sm.create(new_request_id(), BODY, agent, applied, service.clock())
            transition = service._finish(transition)
            if not with_records:
                transition.events = []
            done = await service.requests.commit(transition, 0, None)
            if seal:
                await service.audit.seal(done.last_seq)

        return run

    modes = {
        "service.create (record + seal)": full,
        "same steps, record + seal": steps(True, True),
        "same steps, record, no seal": steps(True, False),
        "same steps, no audit record": steps(False, False),
    }

    async def timed(fn, parallel: int) -> float:
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                await fn()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(per_round)))
        return per_round / (time.perf_counter() - started)

    results: dict[str, dict[int, list[float]]] = {m: {1: [], concurrency: []} for m in modes}
    for fn in modes.values():  # warm-up (script loading, connections)
        await timed(fn, concurrency)
    for _ in range(rounds):
        for parallel in (1, concurrency):
            for name, fn in modes.items():
                results[name][parallel].append(await timed(fn, parallel))
        await service.audit.seal()  # the no-seal mode leaves records for the next sealer
    return {name: {p: statistics.median(v) for p, v in by.items()} for name, by in results.items()}


def grant_costs(signer: Signer, n: int = 2000) -> tuple[float, float]:
    from approvalbot.core.models import ApprovalRequest, Decision, Status

    agent = Agent(id="agt_x", name="etl-bot", owner="o@example.com", created_at=datetime.now(UTC))
    policy = Policy.default().evaluate(BODY.action, BODY.resource, agent.name, BODY.params)
    now = datetime.now(UTC)
    request: ApprovalRequest = sm.create("req_bench", BODY, agent, policy, now).request
    request = request.model_copy(
        update={
            "status": Status.APPROVED,
            "decided_at": now,
            "decisions": [Decision(approver="alice@example.com", decision="approve", at=now)],
        }
    )
    started = time.perf_counter()
    for _ in range(n):
        token = grants.issue(request, signer).grant
    issue = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(n):
        grants.verify_grant(token, signer.public_key, BODY.action, BODY.resource, BODY.params)
    verify = n / (time.perf_counter() - started)
    return issue, verify


async def main(args) -> None:
    with redis_server() as url:
        redis = Redis.from_url(url, max_connections=200)
        if os.environ.get("REDIS_URL") and await redis.dbsize():
            print(
                "REDIS_URL names a database that is not empty; this benchmark writes and then flushes "
                "it. Point it at an empty one (e.g. redis://127.0.0.1:6379/15) or unset REDIS_URL.",
                file=sys.stderr,
            )
            await redis.aclose()
            raise SystemExit(2)
        try:
            signer = Signer(Ed25519PrivateKey.generate())
            service = ApprovalService(redis, Policy.default())
            n = args.records
            built = await build_log(redis, service, signer, n)

            server_s, report = await abest(lambda: verify_redis(redis, signer.keyring))
            assert report.ok, report.problem  # a broken benchmark, not a measurement

            tmp = Path(tempfile.mkdtemp(prefix="ab-audit-bench-"))
            export, cps = tmp / "audit.jsonl", tmp / "checkpoints.jsonl"
            started = time.perf_counter()
            with open(export, "wb") as out:  # noqa: ASYNC230 (nothing else runs)
                async for chunk in render(export_records(service.audit), "jsonl"):
                    out.write(chunk)
            export_s = time.perf_counter() - started
            cps.write_bytes(b"".join(c.to_json() + b"\n" for c in await read_checkpoints(redis)))
            offline_s, offline = best(lambda: verify_file(export, cps, signer.public_pem()))
            assert offline.ok and offline.count == n, offline.problem

            await redis.flushdb()
            speeds = await intake(redis, signer, args.intake, args.rounds, args.concurrency)
            issue, verify = grant_costs(signer)
        finally:
            await redis.flushdb()
            await redis.aclose()

    print(f"machine: {machine()}; Redis: {'REDIS_URL' if os.environ.get('REDIS_URL') else 'embedded Valkey'}")
    print(f"\nlog of {n:,} records (~{built['bytes']:.0f} bytes each)")
    print(f"  append (pipelined RPUSH)          {n / built['append']:>10,.0f} records/s")
    print(f"  seal (AuditLog.seal)              {n / built['seal']:>10,.0f} records/s")
    print(f"  checkpoint (seal check + sign)    {built['checkpoint'] * 1000:>10.2f} ms")
    print(
        f"  export jsonl                      {n / export_s:>10,.0f} records/s ({export.stat().st_size / 1e6:.1f} MB)"
    )
    print(f"  verify server-side (Redis)        {n / server_s:>10,.0f} records/s  ({server_s:.2f} s, best of 3)")
    print(f"  verify offline (jsonl export)     {n / offline_s:>10,.0f} records/s  ({offline_s:.2f} s, best of 3)")
    print(f"\nintake: {args.rounds} interleaved rounds of {args.intake} creates per mode; medians")
    base = speeds["same steps, no audit record"]
    print(f"  {'mode':<34} {'1 at a time':>12} {args.concurrency:>4} at a time")
    for name, by in speeds.items():
        print(f"  {name:<34} {by[1]:>9,.0f}/s {by[args.concurrency]:>9,.0f}/s")
    full = speeds["service.create (record + seal)"]
    print(
        f"  audit cost (no-audit / full), sequential: {base[1] / full[1]:.2f}x; "
        f"concurrent: {base[args.concurrency] / full[args.concurrency]:.2f}x"
    )
    print(f"\ngrants: issue {issue:,.0f}/s, verify_grant {verify:,.0f}/s (one core)")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--intake", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=32)
    asyncio.run(main(p.parse_args()))
