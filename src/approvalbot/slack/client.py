"""The Slack Web API client, pointed at SLACK_API_URL, with rate-limit handling.

slack_sdk retries only connection errors by default. We add its rate-limit
handler so a 429 is retried after `Retry-After`, but only while the wait is
short: a worker must not sleep for a minute holding a job. A longer wait is
left to the caller (delivery jobs reschedule themselves for `Retry-After`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryState
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.slack.settings import SlackConfig

log = logging.getLogger("approvalbot.slack")

# Slack answers these when the fault is on its side; trying again later can help.
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"})


_HISTORY = ("channels:history", "groups:history", "im:history", "metadata.message:read")

# Every Web API method approvalbot calls, and the bot scopes it needs; the manifest must grant them.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "views.open": (),
    "views.publish": (),
    "users.info": ("users:read", "users:read.email"),
    "users.lookupByEmail": ("users:read.email",),
    "conversations.open": ("im:write",),
    "conversations.list": ("channels:read", "groups:read"),
    # Looking up a message an interrupted job may have posted, by its metadata.
    "conversations.history": _HISTORY,
    "conversations.replies": _HISTORY,
}
# Slash commands need their own scope.
BOT_SCOPES = frozenset({"commands", *(s for scopes in METHOD_SCOPES.values() for s in scopes)})


class ShortRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleeps Retry-After), for waits of at most `max_wait` seconds."""

    def __init__(self, max_retry_count: int = 2, max_wait: float = 3):
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not await super()._can_retry_async(state=state, request=request, response=response, error=error):
            return False
        return retry_after(response.headers if response else {}) <= self.max_wait


def retry_after(headers: Mapping[str, str | list[str]] | None) -> int:
    """Seconds from a Retry-After header (Slack sends whole seconds); 30 when absent or odd."""
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            first = value[0] if isinstance(value, list) else value
            try:
                return max(int(float(first)), 0)
            except (TypeError, ValueError):
                return 30
    return 30


def make_client(config: SlackConfig, timeout: int = 10, max_wait: float = 3) -> AsyncWebClient:
    return AsyncWebClient(
        token=config.bot_token.get_secret_value(),
        base_url=config.api_url,
        timeout=timeout,
        logger=logging.getLogger("approvalbot.slack.client"),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            ShortRateLimitRetryHandler(max_retry_count=2, max_wait=max_wait),
        ],
    )


def error_code(exc: SlackApiError) -> str:
    """Slack's short error code, safe to store (a code, never a token or a body)."""
    data = getattr(exc.response, "data", None)
    code = str(data.get("error") or "") if isinstance(data, dict) else ""
    if not code:
        code = f"http_{getattr(exc.response, 'status_code', 0)}"
    cleaned = "".join(c for c in code.lower() if c.isalnum() or c in "_.")[:64]
    return cleaned or "unknown_error"


def is_rate_limited(exc: SlackApiError) -> bool:
    return getattr(exc.response, "status_code", 0) == 429 or error_code(exc) == "ratelimited"


def is_transient(exc: SlackApiError) -> bool:
    status = getattr(exc.response, "status_code", 0) or 0
    return status >= 500 or error_code(exc) in TRANSIENT_ERRORS
