"""Settings, read once from the environment and validated at start-up.

A missing or malformed setting must stop the service before it accepts traffic,
not fail the first request that needs it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from approvalbot.core.callback_urls import AllowList
from approvalbot.core.policy import parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    # Acknowledged means replicated: WAIT for this many replicas after every state change (docs/redis.md).
    min_replicas: int = Field(default=0, alias="APPROVALBOT_MIN_REPLICAS", ge=0, le=16)
    replica_timeout_ms: int = Field(default=500, alias="APPROVALBOT_REPLICA_TIMEOUT_MS", ge=1, le=60_000)
    data_dir: Path = Field(default=Path(".approvalbot"), alias="APPROVALBOT_DATA_DIR")
    policy_file: Path | None = Field(default=None, alias="APPROVALBOT_POLICY")
    signing_key: SecretStr | None = Field(default=None, alias="APPROVALBOT_SIGNING_KEY")
    callback_secret: SecretStr | None = Field(default=None, alias="APPROVALBOT_CALLBACK_SECRET")
    # Issue 13: the fingerprint key of masks (else generated into the data folder), and how long a final
    # request's raw params are kept (a duration such as 30d; unset: kept).
    masking_key: SecretStr | None = Field(default=None, alias="APPROVALBOT_MASKING_KEY")
    params_retention: str | None = Field(default=None, alias="APPROVALBOT_PARAMS_RETENTION")
    # Hosts, *.suffix patterns and CIDRs whose callbacks may use plain http and private addresses.
    callback_allow: str = Field(default="", alias="APPROVALBOT_CALLBACK_ALLOW")
    callback_timeout: float = Field(default=10.0, alias="APPROVALBOT_CALLBACK_TIMEOUT", gt=0, le=60)
    max_body_bytes: int = Field(default=64 * 1024, alias="APPROVALBOT_MAX_BODY_BYTES")
    queue_name: str = Field(default="approvalbot", alias="APPROVALBOT_QUEUE")
    tick_seconds: float = Field(default=1.0, alias="APPROVALBOT_TICK_SECONDS", gt=0, le=60)
    job_timeout: int = Field(default=30, alias="APPROVALBOT_JOB_TIMEOUT", ge=1, le=600)
    # The name evidence reports give this deployment (e.g. "payments-prod").
    deployment: str = Field(default="approvalbot", alias="APPROVALBOT_DEPLOYMENT", min_length=1, max_length=100)
    checkpoint_seconds: float = Field(default=300, alias="APPROVALBOT_CHECKPOINT_SECONDS", gt=0)

    # Abuse resistance (issue 12): per-agent quotas, bounded connections and reads, a bounded Redis pool.
    max_pending_per_agent: int = Field(default=100, alias="APPROVALBOT_MAX_PENDING_PER_AGENT", ge=0)
    agent_rate: str = Field(default="10/50", alias="APPROVALBOT_AGENT_RATE")
    http_read_timeout: float = Field(default=15.0, alias="APPROVALBOT_HTTP_READ_TIMEOUT", gt=0, le=3600)
    max_connections: int = Field(default=1000, alias="APPROVALBOT_MAX_CONNECTIONS", ge=1)
    redis_max_connections: int = Field(default=256, alias="APPROVALBOT_REDIS_MAX_CONNECTIONS", ge=1)
    redis_pool_wait: float = Field(default=1.0, alias="APPROVALBOT_REDIS_POOL_WAIT", ge=0, le=60)

    # Slack (issue 4) and Teams (issue 5) settings live here too so one object is validated once.
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_channel: str | None = Field(default=None, alias="SLACK_CHANNEL")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    # Workspaces besides the bot token's own team whose members may act (Enterprise Grid): comma list.
    slack_allowed_teams: str | None = Field(default=None, alias="SLACK_ALLOWED_TEAMS")

    # Teams (issue 5): the Azure bot registration; without an app id Teams is off unless
    # APPROVALBOT_TEAMS_DEV=1 allows unauthenticated local testing.
    microsoft_app_id: str | None = Field(default=None, alias="MICROSOFT_APP_ID")
    microsoft_app_password: SecretStr | None = Field(default=None, alias="MICROSOFT_APP_PASSWORD")
    microsoft_app_tenant_id: str | None = Field(default=None, alias="MICROSOFT_APP_TENANT_ID")
    microsoft_app_type: str = Field(default="MultiTenant", alias="MICROSOFT_APP_TYPE")
    teams_dev: bool = Field(default=False, alias="APPROVALBOT_TEAMS_DEV")
    # Issue 11: the tenants whose activities are accepted (comma list), besides MICROSOFT_APP_TENANT_ID.
    teams_tenants: str | None = Field(default=None, alias="APPROVALBOT_TEAMS_TENANTS")
    # Issue 14: the largest activity sent to the Bot Framework connector, in bytes as the SDK sends
    # them (non-ASCII escaped as \\uXXXX). Cards that would be larger are sent summarised.
    teams_max_bytes: int = Field(default=28000, ge=10000, le=260000, alias="APPROVALBOT_TEAMS_MAX_BYTES")
    # Microsoft Graph, used only by `audit verify --witness teams` to read channel replies back
    # (the Bot Connector cannot); `{tenant}` in the token URL is the conversation's tenant.
    teams_graph_url: str = Field(default="https://graph.microsoft.com/v1.0", alias="APPROVALBOT_TEAMS_GRAPH_URL")
    teams_graph_token_url: str = Field(
        default="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        alias="APPROVALBOT_TEAMS_GRAPH_TOKEN_URL",
    )

    @field_validator("callback_allow")
    @classmethod
    def _allow_list_parses(cls, value: str) -> str:
        """A typo in the allow list must stop start-up, not silently refuse (or allow) callbacks."""
        AllowList.parse(value)
        return value

    @property
    def callback_allow_list(self) -> AllowList:
        return _allow_list(self.callback_allow)

    @field_validator("params_retention")
    @classmethod
    def _retention_parses(cls, value: str | None) -> str | None:
        """A typo must stop start-up, not keep (or delete) personal data silently."""
        if value is not None and value.strip().lower() not in ("", "off"):
            parse_duration(value.strip())
        return value

    @property
    def params_retention_seconds(self) -> int | None:
        """Seconds a final request's raw params are kept, or None (APPROVALBOT_PARAMS_RETENTION unset or off)."""
        value = (self.params_retention or "").strip()
        return None if value.lower() in ("", "off") else parse_duration(value)

    @field_validator("agent_rate")
    @classmethod
    def _rate_shape(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def agent_rate_limit(self) -> tuple[float, int] | None:
        """(creations per second, burst), or None when APPROVALBOT_AGENT_RATE is `off`."""
        return parse_rate(self.agent_rate)


def parse_rate(value: str) -> tuple[float, int] | None:
    """`RATE/BURST` (e.g. `10/50`: 10 per second sustained, bursts of 50), `RATE` (burst = rate), or `off`."""
    text = value.strip().lower()
    if text in ("off", "0", "none"):
        return None
    rate_text, _, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, int(rate))
    except ValueError:
        raise ValueError("APPROVALBOT_AGENT_RATE is RATE/BURST (e.g. 10/50) or off") from None
    if not (0 < rate < 1e9) or burst < 1:
        raise ValueError("APPROVALBOT_AGENT_RATE needs a positive rate and a burst of at least 1")
    return rate, burst


_LOADED: dict[frozenset[tuple[str, str]], Settings] = {}


def load_settings() -> Settings:
    """Settings from the environment, remembered while the environment is the same: building them
    costs about 2 ms, and every delivery job and callback asks for them. Treat them as read-only."""
    key = frozenset(os.environ.items())
    found = _LOADED.get(key)
    if found is None:
        if len(_LOADED) >= 8:  # a process whose environment keeps changing (tests) keeps a few
            _LOADED.clear()
        found = _LOADED[key] = Settings()
    return found


@lru_cache(maxsize=8)
def _allow_list(text: str | None) -> AllowList:
    """Parsed once per value (it is read on every request that names a callback; AllowList is frozen)."""
    return AllowList.parse(text)
