"""Teams settings: whether the adapter is on, and the Azure bot registration it uses.

Teams is on when `MICROSOFT_APP_ID` is set. `APPROVALBOT_TEAMS_DEV=1` turns it on
without an app id, which makes the SDK accept unsigned activities from anyone who
can reach `/api/messages`: for local testing only, and said loudly at start-up.
"""

from __future__ import annotations

import logging
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


class TeamsConfigError(ConfigError):
    """The Teams settings cannot work; the message says which variable to fix."""


@dataclass(frozen=True)
class TeamsSettings:
    """Validated Teams settings; the app password stays a `SecretStr`, never in a repr or a log."""

    app_id: str
    app_password: SecretStr = field(repr=False)
    tenant_id: str
    app_type: str
    dev: bool

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

    def validate(self) -> None:
        """Fail at start-up, not on the first activity, when the registration is incomplete."""
        if not self.app_id:
            stray = [
                name
                for name, value in (
                    ("MICROSOFT_APP_PASSWORD", self.app_password.get_secret_value()),
                    ("MICROSOFT_APP_TENANT_ID", self.tenant_id),
                )
                if value
            ]
            if stray:
                raise TeamsConfigError(
                    f"{' and '.join(stray)} set but MICROSOFT_APP_ID is not: set the "
                    "Azure bot's app id to turn Teams on, or unset them"
                )
            return
        kind = self.app_type.lower()
        if kind not in APP_TYPES:
            raise TeamsConfigError(f"MICROSOFT_APP_TYPE must be one of {', '.join(APP_TYPES.values())}")
        if kind in ("multitenant", "singletenant") and not self.app_password.get_secret_value():
            raise TeamsConfigError(f"MICROSOFT_APP_PASSWORD is required with MICROSOFT_APP_TYPE={APP_TYPES[kind]}")
        if kind in ("singletenant", "userassignedmsi") and not self.tenant_id:
            raise TeamsConfigError(f"MICROSOFT_APP_TENANT_ID is required with MICROSOFT_APP_TYPE={APP_TYPES[kind]}")


def teams_settings(settings: Settings) -> TeamsSettings:
    return TeamsSettings(
        app_id=(settings.microsoft_app_id or "").strip(),
        app_password=settings.microsoft_app_password or SecretStr(""),
        tenant_id=(settings.microsoft_app_tenant_id or "").strip(),
        app_type=(settings.microsoft_app_type or "MultiTenant").strip(),
        dev=settings.teams_dev,
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
        return f"Teams: on (app {ts.app_id}, {APP_TYPES.get(ts.app_type.lower(), ts.app_type)}), POST /api/messages"
    if ts.mode == "dev":
        log.warning(DEV_WARNING)
        return "Teams: DEV MODE, unauthenticated POST /api/messages (local testing only)"
    return "Teams: off (set MICROSOFT_APP_ID to enable)"


startup_message = status_line
