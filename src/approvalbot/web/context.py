"""What handlers share, stored once on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from approvalbot.channels import Channel
from approvalbot.config import Settings
from approvalbot.service import ApprovalService
from approvalbot.web.credentials import Authenticator
from approvalbot.web.health import HealthProbe
from approvalbot.web.waiters import Waiters


@dataclass
class Services:
    settings: Settings
    redis: Redis
    service: ApprovalService
    waiters: Waiters
    extras: dict[str, Any] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)  # the ones that are on
    authenticator: Authenticator = field(init=False)
    health: HealthProbe = field(init=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.service.identities)
        self.health = HealthProbe(self.redis)


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
