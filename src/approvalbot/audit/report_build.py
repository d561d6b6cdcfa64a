"""Building an evidence report from the live log: the one place the CLI and the HTTP endpoint share.

Order matters as in `audit export`: the chain is verified first, then the log is sealed and
its length taken as the report's snapshot (`end_seq`), so the figures cover exactly the
records up to that seq and a later full export recomputes the same figures.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from approvalbot.audit.evidence import Query, ReportError, check_period, iso
from approvalbot.audit.export import export_records, snapshot_end
from approvalbot.audit.report import make_doc, sign_and_render
from approvalbot.audit.signing import Signer
from approvalbot.audit.verify import verify_redis
from approvalbot.store.audit import AuditLog

__all__ = ["ReportError", "build_report"]


async def build_report(
    redis: Redis,
    signer: Signer,
    *,
    since: datetime,
    until: datetime,
    deployment: str,
    control: str | None = None,
    action: str | None = None,
    now: datetime | None = None,
) -> str:
    """The signed HTML report; raises ReportError for a bad period, an unknown control or an empty period."""
    check_period(since, until)
    audit = AuditLog(redis)
    chain = (await verify_redis(redis, signer.keyring)).as_dict()
    end = await snapshot_end(audit)
    records: list[dict[str, Any]] = [r async for r in export_records(audit, end=end)]
    query = Query(since=since, until=until, end_seq=end, control=control, action=action)
    generated = iso(now or datetime.now(UTC))

    def build() -> str:
        doc = make_doc(records, query, deployment=deployment, generated_at=generated, chain=chain, signer=signer)
        if doc["figures"]["records"]["in_period"] == 0:
            raise ReportError(f"no audit records between {iso(since)} and {iso(until)}: nothing to report")
        return sign_and_render(doc, signer)

    # Figures and charts are CPU work (about a second per 100k records): off the event loop.
    return await asyncio.to_thread(build)
