"""What the listeners and Socket Mode need from the Slack adapter, as types below it.

`slack.app` builds the adapter from the listeners and Socket Mode, so those modules
name the adapter through this Protocol rather than importing `slack.app` (a cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.core.models import Actor, Approver
from approvalbot.service import ApprovalService
from approvalbot.slack.settings import SlackConfig


@dataclass(frozen=True)
class Who:
    """The clicker as the core sees them: an Actor, and their Approver record if registered."""

    user_id: str
    email: str | None
    actor: Actor
    approver: Approver | None


class SlackHost(Protocol):
    config: SlackConfig
    service: ApprovalService
    client: AsyncWebClient
    bolt: AsyncApp
    socket_mode: AsyncSocketModeHandler | None

    async def who(self, user_id: str) -> Who: ...

    async def notify(self, client: AsyncWebClient, user: str, channel: str | None, text: str) -> None: ...
