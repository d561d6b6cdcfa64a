"""What the listeners and Socket Mode need from the Slack adapter, as types below it.

`slack.app` builds the adapter from the listeners and Socket Mode, so those modules
name the adapter through this Protocol rather than importing `slack.app` (a cycle).
"""

from __future__ import annotations

from typing import Protocol

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.service import ApprovalService
from approvalbot.slack.identity import SlackDirectory
from approvalbot.slack.resolve import Unrecognised, Who
from approvalbot.slack.settings import SlackConfig
from approvalbot.slack.workspaces import ActingUser

__all__ = ["SlackHost", "Unrecognised", "Who"]


class SlackHost(Protocol):
    config: SlackConfig
    service: ApprovalService
    client: AsyncWebClient
    bolt: AsyncApp
    socket_mode: AsyncSocketModeHandler | None
    people: SlackDirectory

    async def identify(self, acting: ActingUser) -> Who | Unrecognised: ...

    async def refused(self, unrecognised: Unrecognised) -> None: ...

    async def notify(self, client: AsyncWebClient, user: str, channel: str | None, text: str) -> None: ...
