"""Teams settings: whether the adapter is on, and the Azure bot registration it uses.

Teams is on when `MICROSOFT_APP_ID` is set. `APPROVALBOT_TEAMS_DEV=1` turns it on
without an app id, which makes the SDK accept unsigned activities from anyone who
can reach `/api/messages`: for local testing only, and said loudly at start-up.

Whenever Teams is on (dev mode included) the tenants it serves must be named:
`MICROSOFT_APP_TENANT_ID` and/or `APPROVALBOT_TEAMS_TENANTS` (a comma list). A
multi-tenant bot can be installed by anyone in any tenant; without this list an
outside tenant could receive our cards and act as our people (issue 11).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import SecretStr

from approvalbot.config import Settings
from approvalbot.runtime import ConfigError

log = logging.getLogger("approvalbot.teams")

APP_TYPES = {"multitenant": "MultiTenant", "singletenant": "SingleTenant", "userassignedmsi": "UserAssignedMSI"}

DEV_WARNING = (
    "Teams DEV MODE (APPROVALBOT_TEAMS_DEV=1, no MICROSOFT_APP_ID): /api/messages accepts "
    "UNAUTHENTICATED activities and trusts their serviceUrl; anyone who can reach it can act "
    "as any Teams user. Never expose this server."
)


TENANTS_REQUIRED = (
    "Teams is on but no tenant is allowed: set MICROSOFT_APP_TENANT_ID or APPROVALBOT_TEAMS_TENANTS "
    "(a comma list of tenant ids) to the Microsoft Entra tenant(s) whose people may use approvalbot; "
    "activities from any other tenant are refused"
)


class TeamsConfigError(ConfigError):
    """The Teams settings cannot work; the message says which variable to fix."""


def tenant_key(tenant: str | None) -> str:
    """Tenant ids are GUIDs, case-insensitive: compared and stored in lower case."""
    return (tenant or "").strip().lower()


def allowed_tenants(tenant_id: str | None, listed: str | None) -> frozenset[str]:
    parts: Iterable[str] = [tenant_id or "", *(listed or "").split(",")]
    return frozenset(t for t in (tenant_key(p) for p in parts) if t)


@dataclass(frozen=True)
class TeamsSettings:
    """Validated Teams settings; the app password stays a `SecretStr`, never in a repr or a log."""

    app_id: str
    app_password: SecretStr = field(repr=False)
    tenant_id: str
    app_type: str
    dev: bool
    tenants: frozenset[str] = frozenset()  # allowed tenant ids, lower case
    max_bytes: int = 28000  # APPROVALBOT_TEAMS_MAX_BYTES: an activity's size as sent

    @property
    def enabled(self) -> bool:
        return bool(self.app_id) or self.dev

    @property
    def authenticated(self) -> bool:
        return bool(self.app_id)

    @property
    def mode(self) -> str:
        """ "on" (authenticated), "dev" (unauthenticated local testing) or "off"."""
        if self.app_id:
            return "on"
        return "dev" if self.dev else "off"

    def allows(self, tenant: str | None) -> bool:
        """Whether an activity from this tenant may be handled at all (no tenant: never)."""
        key = tenant_key(tenant)
        return bool(key) and key in self.tenants

    def validate(self) -> None:
        """Fail at start-up, not on the first activity, when the registration is incomplete."""
        if not self.app_id:
            stray = [
                name
                for name, value in (
                    ("MICROSOFT_APP_PASSWORD", self.app_password.get_secret_value()),
                    ("MICROSOFT_APP_TENANT_ID", "" if self.dev else self.tenant_id),
                )
                if value
            ]
            if stray:
                raise TeamsConfigError(
                    f"{' and '.join(stray)} set but MICROSOFT_APP_ID is not: set the "
                    "Azure bot's app id to turn Teams on, or unset them"
                )
            if self.dev and not self.tenants:
                raise TeamsConfigError(TENANTS_REQUIRED)
            return
        kind = self.app_type.lower()
        if kind not in APP_TYPES:
            raise TeamsConfigError(f"MICROSOFT_APP_TYPE must be one of {', '.join(APP_TYPES.values())}")
        if kind in ("multitenant", "singletenant") and not self.app_password.get_secret_value():
            raise TeamsConfigError(f"MICROSOFT_APP_PASSWORD is required with MICROSOFT_APP_TYPE={APP_TYPES[kind]}")
        if kind in ("singletenant", "userassignedmsi") and not self.tenant_id:
            raise TeamsConfigError(f"MICROSOFT_APP_TENANT_ID is required with MICROSOFT_APP_TYPE={APP_TYPES[kind]}")
        if not self.tenants:
            raise TeamsConfigError(TENANTS_REQUIRED)


def teams_settings(settings: Settings) -> TeamsSettings:
    return TeamsSettings(
        app_id=(settings.microsoft_app_id or "").strip(),
        app_password=settings.microsoft_app_password or SecretStr(""),
        tenant_id=(settings.microsoft_app_tenant_id or "").strip(),
        app_type=(settings.microsoft_app_type or "MultiTenant").strip(),
        dev=settings.teams_dev,
        tenants=allowed_tenants(settings.microsoft_app_tenant_id, settings.teams_tenants),
        max_bytes=settings.teams_max_bytes,
    )


def status_line(settings: Settings) -> str:
    """Validate (raises TeamsConfigError) and say "Teams: on / off / DEV MODE" for the start-up banner.

    Logs the dev-mode warning when it applies.
    """
    ts = teams_settings(settings)
    ts.validate()
    if ts.mode == "on":
        if ts.dev:
            log.info("APPROVALBOT_TEAMS_DEV is ignored: MICROSOFT_APP_ID is set, activities are authenticated")
        kind = APP_TYPES.get(ts.app_type.lower(), ts.app_type)
        return f"Teams: on (app {ts.app_id}, {kind}, {_tenants(ts)}), POST /api/messages"
    if ts.mode == "dev":
        log.warning(DEV_WARNING)
        return f"Teams: DEV MODE, unauthenticated POST /api/messages ({_tenants(ts)}; local testing only)"
    return "Teams: off (set MICROSOFT_APP_ID to enable)"


def _tenants(ts: TeamsSettings) -> str:
    return f"tenant{'s' if len(ts.tenants) > 1 else ''} {', '.join(sorted(ts.tenants))}"


startup_message = status_line
