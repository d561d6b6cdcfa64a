"""What every `approvalbot` command shares: messages on stderr, and running against the store.

Commands print only their result on stdout (a token, a report), so `TOKEN=$(approvalbot ...)`
captures exactly that; everything said to the person goes to stderr through `say`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from approvalbot.runtime import Runtime
from approvalbot.service import ApprovalService

ServiceCommand = Callable[[ApprovalService, argparse.Namespace], Awaitable[int]]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def with_service(fn: ServiceCommand) -> Callable[[Runtime, argparse.Namespace], int]:
    """Run an async command against the store, closing the connection after."""

    def run(rt: Runtime, args: argparse.Namespace) -> int:
        async def main() -> int:
            redis = rt.async_redis()
            try:
                return await fn(rt.service(redis), args)
            finally:
                await redis.aclose()

        return asyncio.run(main())

    return run
