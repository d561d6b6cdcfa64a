"""Slack as an `approvalbot.channels.Channel`: what the composition root needs to wire it in."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from approvalbot.channels import Commands, JobSpec
from approvalbot.config import Settings
from approvalbot.core.models import Approver
from approvalbot.slack import app as slack_app
from approvalbot.slack.client import make_client
from approvalbot.slack.delivery import JOB
from approvalbot.slack.identity import SlackDirectory
from approvalbot.slack.resolve import SlackIdentities, Who
from approvalbot.slack.settings import SlackConfig, status_line
from approvalbot.slack.witness import SlackWitness
from approvalbot.slack.witness import build as build_witness
from approvalbot.slack.workspaces import ActingUser
from approvalbot.store.deliveries import REQUEST_TARGET, TargetState
from approvalbot.store.people import PersonStore


class SlackChannel:
    """Built at start-up; `SlackConfig.from_settings` raises ConfigError on incomplete settings."""

    name = "slack"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.config = SlackConfig.from_settings(settings)

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def status_line(self) -> str:
        return status_line(self.settings)

    def mount(self, app: web.Application) -> bool:
        return slack_app.mount(app, self.config) if self.config is not None else False

    def jobs(self) -> list[JobSpec]:
        return [JOB] if self.enabled else []

    @staticmethod
    def add_commands(subparsers: Any) -> Commands:
        return {}  # Slack's commands are slash commands, inside Slack

    async def approver_for(self, redis: Redis, chat_user: str) -> Approver | None:
        """The person a Slack user id is, resolved as a click is (`slack.resolve`): a member of a served
        workspace, by its linked identity or a first-use link. None for anyone else; callers
        still check `rules.is_active_approver`."""
        if self.config is None:
            return None
        directory = SlackDirectory(make_client(self.config, timeout=5), redis)
        found = await SlackIdentities(directory, PersonStore(redis), self.config.allowed_teams).resolve(
            ActingUser(chat_user, None, None)
        )
        return found.approver if isinstance(found, Who) else None

    def witness(self) -> SlackWitness:
        """The card threads read back, for `audit verify --witness slack` (WitnessUnavailable when Slack is off)."""
        return build_witness(self.config)

    def delivery_status(self, states: dict[str, TargetState], failures: list[dict[str, Any]]) -> dict[str, Any]:
        """Where the card is (one Slack channel per request), what failed, whether the owner was told."""
        request_state = states.get(REQUEST_TARGET, TargetState())
        cards = [s for t, s in states.items() if t != REQUEST_TARGET]
        card = next((s for s in cards if s.message_id), cards[0] if cards else TargetState())
        return {
            "channel": card.where or None,
            "ts": card.message_id or None,
            "mirrored_seq": card.mirrored_seq,
            "owner_notified": request_state.final == "sent",
            "errors": {**request_state.errors, **card.errors},
            "failures": failures,
        }
