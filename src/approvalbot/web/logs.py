"""Log flood control: a crowd of bad requests must not become a crowd of log lines.

Expected failures (a bad token, an exhausted pool, a full server) log one line each, without a
traceback, and `RepeatFilter` lets only the first few lines of one kind through per window. A
line is "of one kind" by its logger, level and message template (not its arguments), so 4,000
bad tokens from 4,000 addresses are one kind. The first line let through after a quiet spell
says how many were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# Loggers the web process writes expected failures to, or that aiohttp writes per-connection errors to.
LIMITED_LOGGERS = ("approvalbot.web", "approvalbot.waiters", "aiohttp.server", "aiohttp.web")


class RepeatFilter(logging.Filter):
    """At most `burst` records of one kind per `window` seconds; the rest are counted and dropped."""

    def __init__(self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._kinds: dict[tuple[str, int, str], list[float | int]] = {}  # kind -> [window start, seen, held]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.window:
            held = int(state[2]) if state else 0
            self._kinds[kind] = [now, 1, 0]
            if len(self._kinds) > 1000:  # templates are few; this only guards against a leak
                self._kinds = {kind: self._kinds[kind]}
            if held:
                record.msg = f"{record.getMessage()} ({held} similar lines held back in the last {self.window:g} s)"
                record.args = ()
            return True
        state[1] = int(state[1]) + 1
        if state[1] <= self.burst:
            return True
        state[2] = int(state[2]) + 1
        return False


def limit_repeats(burst: int = 5, window: float = 60.0) -> None:
    """Install one RepeatFilter on each of LIMITED_LOGGERS (once per process, however many apps are built)."""
    for name in LIMITED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter(burst, window))
