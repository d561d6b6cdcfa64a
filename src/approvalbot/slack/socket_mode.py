"""Socket Mode: the same bolt app, fed over a WebSocket instead of a public URL.

Useful for a self-hosted install behind a firewall: approvalbot dials out to
Slack (`apps.connections.open` with the xapp- token, then the WebSocket URL it
returns), so Slack never has to reach in. Envelopes are acknowledged on the
socket the way HTTP requests are answered, by the listener's `ack()`.
"""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError

from approvalbot.runtime import ConfigError
from approvalbot.slack.client import error_code
from approvalbot.slack.host import SlackHost as SlackAdapter

log = logging.getLogger("approvalbot.slack.socket_mode")

AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "account_inactive", "not_allowed_token_type"})


async def connect(adapter: SlackAdapter, ping_interval: float = 10) -> AsyncSocketModeHandler:
    """Open the socket; a bad app token stops start-up, an unreachable Slack is retried in the background."""
    handler = AsyncSocketModeHandler(
        adapter.bolt,
        app_token=adapter.config.app_token.get_secret_value() if adapter.config.app_token else None,
        web_client=adapter.client,
        logger=logging.getLogger("approvalbot.slack.socket_mode.client"),
        ping_interval=ping_interval,
    )
    try:
        handler.client.wss_uri = await handler.client.issue_new_wss_url()
    except SlackApiError as exc:
        await handler.close_async()  # type: ignore[no-untyped-call]  # unannotated in slack_bolt
        code = error_code(exc)
        if code in AUTH_ERRORS:
            raise ConfigError(
                f"SLACK_APP_TOKEN was refused by Slack ({code}): create an app-level "
                "token with the connections:write scope"
            ) from None
        raise ConfigError(f"Socket Mode could not start: Slack answered {code}") from None
    except Exception as exc:
        log.warning("Socket Mode: Slack unreachable (%s); retrying in the background", exc.__class__.__name__)
        asyncio.get_running_loop().create_task(
            handler.connect_async()  # type: ignore[no-untyped-call]  # unannotated in slack_bolt
        )
        return handler
    await handler.connect_async()  # type: ignore[no-untyped-call]  # unannotated in slack_bolt
    log.info("Socket Mode connected")
    return handler
