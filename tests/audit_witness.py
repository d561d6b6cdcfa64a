"""Shared by the Slack and Teams witness tests: the attacks on the log, and running `audit verify` as the CLI does."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from redis.asyncio import Redis

from approvalbot.audit.checkpoints import checkpoint
from approvalbot.cli import audit as audit_cli
from approvalbot.core.chain import link
from approvalbot.runtime import Runtime
from approvalbot.store import codec, keys


async def run_verify(rt: Runtime, capsys: Any, *extra: str) -> tuple[int, dict[str, Any], str]:
    """`approvalbot audit verify ...` through the CLI's own command table: (exit code, JSON report, stderr)."""
    args: argparse.Namespace = audit_cli.parser().parse_args(["audit", "verify", *extra])
    capsys.readouterr()
    code = await asyncio.get_running_loop().run_in_executor(None, audit_cli.COMMANDS["audit"], rt, args)
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else {}), out.err


async def sign_head(rt: Runtime, service: Any) -> int:
    made = await checkpoint(service.audit, rt.signer())
    assert made is not None
    return made.seq


async def cut_tail_and_newest_checkpoint(redis: Redis, keep: int) -> None:
    """The issue's attack, done thoroughly: the log and its chain back to seq `keep`, the newest checkpoint
    gone, and every request's audit index trimmed to match, so nothing left in Redis points past the end."""
    pipe = redis.pipeline(transaction=True)
    pipe.ltrim(keys.AUDIT_LOG, 0, keep - 1)
    pipe.ltrim(keys.AUDIT_CHAIN, 0, keep - 1)
    pipe.rpop(keys.AUDIT_CHECKPOINTS)
    await pipe.execute()
    async for name in redis.scan_iter(match=keys.request_audit("*")):
        seqs = [int(s) for s in await redis.lrange(name, 0, -1)]
        kept = [s for s in seqs if s <= keep]
        await redis.delete(name)
        if kept:
            await redis.rpush(name, *kept)


async def rewrite(redis: Redis, seq: int, change: dict[str, Any]) -> None:
    """Change record `seq`'s body and recompute the chain from there on, as someone who can write Redis would."""
    body = json.loads(codec.blob(await redis.lindex(keys.AUDIT_LOG, seq - 1)))
    body.update(change)
    new = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    await redis.lset(keys.AUDIT_LOG, seq - 1, new)
    prev = codec.text(await redis.lindex(keys.AUDIT_CHAIN, seq - 2)) if seq > 1 else "0" * 64
    bodies = await redis.lrange(keys.AUDIT_LOG, seq - 1, -1)
    for i, raw in enumerate(bodies):
        prev = link(prev, seq + i, codec.blob(raw))
        await redis.lset(keys.AUDIT_CHAIN, seq + i - 1, prev)
