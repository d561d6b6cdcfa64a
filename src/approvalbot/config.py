"""Settings, read once from the environment and validated at start-up.

A missing or malformed setting must stop the service before it accepts traffic,
not fail the first request that needs it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from approvalbot.core.callback_urls import AllowList


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    data_dir: Path = Field(default=Path(".approvalbot"), alias="APPROVALBOT_DATA_DIR")
    policy_file: Path | None = Field(default=None, alias="APPROVALBOT_POLICY")
    signing_key: SecretStr | None = Field(default=None, alias="APPROVALBOT_SIGNING_KEY")
    callback_secret: SecretStr | None = Field(default=None, alias="APPROVALBOT_CALLBACK_SECRET")
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

    @field_validator("callback_allow")
    @classmethod
    def _allow_list_parses(cls, value: str) -> str:
        """A typo in the allow list must stop start-up, not silently refuse (or allow) callbacks."""
        AllowList.parse(value)
        return value

    @property
    def callback_allow_list(self) -> AllowList:
        return AllowList.parse(self.callback_allow)


def load_settings() -> Settings:
    return Settings()
