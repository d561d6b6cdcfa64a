"""Teams as an `approvalbot.channels.Channel`: what the composition root needs to wire it in."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from approvalbot.channels import Commands, JobSpec
from approvalbot.config import Settings
from approvalbot.core.models import Approver, ChatIdentity
from approvalbot.store.deliveries import REQUEST_TARGET, TargetState
from approvalbot.store.people import PersonStore
from approvalbot.teams import cli as teams_cli
from approvalbot.teams import mount as teams_mount
from approvalbot.teams.delivery import JOB
from approvalbot.teams.settings import status_line, teams_settings, tenant_key
from approvalbot.teams.witness import TeamsWitness
from approvalbot.teams.witness import build as build_witness


class TeamsChannel:
    """Built at start-up; raises TeamsConfigError when the Azure registration is incomplete."""

    name = "teams"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ts = teams_settings(settings)
        self.ts.validate()

    @property
    def enabled(self) -> bool:
        return self.ts.enabled

    def status_line(self) -> str:
        return status_line(self.settings)

    def mount(self, app: web.Application) -> bool:
        return teams_mount.mount(app, self.ts)

    def jobs(self) -> list[JobSpec]:
        return [JOB] if self.enabled else []

    @staticmethod
    def add_commands(subparsers: Any) -> Commands:
        teams_cli.add_commands(subparsers)
        return {"teams": teams_cli.cmd_teams}

    async def approver_for(self, redis: Redis, chat_user: str) -> Approver | None:
        """`<tenant>/<AAD object id>` -> the person that Teams identity is linked to, as the bot resolves it.

        None for a tenant that is not allowed or an identity nobody linked (linking on first
        use needs the connector's answer inside a turn, so only the bot does it).
        """
        tenant, _, aad = chat_user.rpartition("/")
        if not (self.ts.allows(tenant) and tenant_key(aad)):
            return None
        identity = ChatIdentity(channel="teams", workspace=tenant_key(tenant), user_id=tenant_key(aad))
        return await PersonStore(redis).by_identity(identity)

    def witness(self) -> TeamsWitness:
        """Card threads read back through Microsoft Graph, for `audit verify --witness teams`
        (WitnessUnavailable, naming what is needed, when Graph credentials are missing)."""
        return build_witness(self.ts, self.settings.teams_graph_url, self.settings.teams_graph_token_url)

    def delivery_status(self, states: dict[str, TargetState], failures: list[dict[str, Any]]) -> dict[str, Any]:
        """One entry per conversation the card went to (by conversation hash), and what failed."""
        request_state = states.get(REQUEST_TARGET, TargetState())
        return {
            "conversations": {
                target: {
                    "activity_id": s.message_id or None,
                    "mirrored_seq": s.mirrored_seq,
                    "reposts": s.reposts,
                    "failed": s.failed or None,
                }
                for target, s in states.items()
                if target != REQUEST_TARGET
            },
            "errors": dict(request_state.errors),
            "failures": failures,
        }
