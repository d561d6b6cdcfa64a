"""What handlers share, stored once on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from approvalbot.config import Settings
from approvalbot.service import ApprovalService
from approvalbot.web.waiters import Waiters


@dataclass
class Services:
    settings: Settings
    redis: Redis
    service: ApprovalService
    waiters: Waiters
    extras: dict[str, Any] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
