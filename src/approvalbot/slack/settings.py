"""Slack settings, checked once at start-up.

Slack is off unless SLACK_BOT_TOKEN is set. When it is on, every other Slack
setting it needs must be there and well-formed, because slack-bolt accepts an
empty signing secret and then answers every request from Slack with a 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import SecretStr

from approvalbot.config import Settings
from approvalbot.runtime import ConfigError

EVENTS_PATH = "/slack/events"
CHANNEL_ID_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
CHANNEL_NAME_RE = re.compile(r"^#?[a-z0-9][a-z0-9_\-]{0,79}$")
# A workspace (T...) or an Enterprise Grid organisation (E...).
TEAM_ID_RE = re.compile(r"^[TE][A-Z0-9]{2,30}$")


def _secret(value: SecretStr | None) -> str | None:
    if value is None:
        return None
    text = value.get_secret_value().strip()
    return text or None


@dataclass(frozen=True)
class SlackConfig:
    """Validated Slack settings; the three secrets stay `SecretStr` (and out of the repr) until used."""

    bot_token: SecretStr = field(repr=False)
    signing_secret: SecretStr | None = field(repr=False)
    app_token: SecretStr | None = field(repr=False)
    channel: str
    api_url: str
    allowed_teams: frozenset[str] = frozenset()  # besides the token's own team (auth.test)

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @property
    def http_events(self) -> bool:
        return self.signing_secret is not None

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return (
            f"SlackConfig(channel={self.channel!r}, api_url={self.api_url!r}, "
            f"socket_mode={self.socket_mode}, http_events={self.http_events}, "
            f"allowed_teams={sorted(self.allowed_teams)!r})"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackConfig | None:
        """None when Slack is off; raises ConfigError naming the variable to fix."""
        token = _secret(settings.slack_bot_token)
        signing = _secret(settings.slack_signing_secret)
        app_token = _secret(settings.slack_app_token)
        if token is None:
            stray = [
                name for name, value in (("SLACK_SIGNING_SECRET", signing), ("SLACK_APP_TOKEN", app_token)) if value
            ]
            if stray:
                raise ConfigError(
                    f"{' and '.join(stray)} set but SLACK_BOT_TOKEN is not: "
                    "set the bot token (xoxb-...) to turn Slack on, or unset them"
                )
            return None
        if not token.startswith("xoxb-"):
            raise ConfigError(
                "SLACK_BOT_TOKEN must be a bot token starting with xoxb- (OAuth & Permissions -> Bot User OAuth Token)"
            )
        if app_token is not None and not app_token.startswith("xapp-"):
            raise ConfigError(
                "SLACK_APP_TOKEN must be an app-level token starting with xapp- "
                "(Basic Information -> App-Level Tokens, scope connections:write)"
            )
        if signing is None and app_token is None:
            raise ConfigError(
                "SLACK_SIGNING_SECRET is required with SLACK_BOT_TOKEN "
                "(Basic Information -> App Credentials -> Signing Secret); "
                "or set SLACK_APP_TOKEN to use Socket Mode instead of a public URL"
            )
        if signing is not None and (len(signing) < 16 or any(c.isspace() for c in signing)):
            raise ConfigError("SLACK_SIGNING_SECRET does not look like a Slack signing secret")
        channel = (settings.slack_channel or "").strip()
        if not channel:
            raise ConfigError(
                "SLACK_CHANNEL is required with SLACK_BOT_TOKEN: the channel ID "
                "(C0123...) or #name where approval cards are posted"
            )
        if not (CHANNEL_ID_RE.match(channel) or CHANNEL_NAME_RE.match(channel)):
            raise ConfigError(
                f"SLACK_CHANNEL {channel!r} is neither a channel ID (C0123...) nor a channel name (#approvals)"
            )
        api_url = settings.slack_api_url.strip()
        if not re.match(r"^https?://[^\s/]+", api_url):
            raise ConfigError("SLACK_API_URL must be an http(s) URL such as https://slack.com/api/")
        if not api_url.endswith("/"):
            api_url += "/"
        return cls(
            SecretStr(token),
            SecretStr(signing) if signing is not None else None,
            SecretStr(app_token) if app_token is not None else None,
            channel,
            api_url,
            allowed_teams(settings.slack_allowed_teams),
        )


def allowed_teams(raw: str | None) -> frozenset[str]:
    """SLACK_ALLOWED_TEAMS: workspace (T...) or organisation (E...) ids, comma-separated.

    Checked at start-up: a typo here would otherwise silently refuse (or never match)
    the very users it was meant to let in.
    """
    teams = [part.strip() for part in (raw or "").split(",") if part.strip()]
    for team in teams:
        if not TEAM_ID_RE.match(team):
            raise ConfigError(
                f"SLACK_ALLOWED_TEAMS: {team!r} is neither a Slack workspace id (T0123...) "
                "nor an Enterprise Grid organisation id (E0123...)"
            )
    return frozenset(teams)


def status_line(settings: Settings) -> str:
    """One start-up line saying whether Slack is on and how it receives events."""
    config = SlackConfig.from_settings(settings)
    if config is None:
        return "Slack: off (SLACK_BOT_TOKEN not set)"
    modes = []
    if config.http_events:
        modes.append(f"HTTP events at {EVENTS_PATH}")
    if config.socket_mode:
        modes.append("Socket Mode")
    return f"Slack: on ({' and '.join(modes)}; cards to {config.channel})"
