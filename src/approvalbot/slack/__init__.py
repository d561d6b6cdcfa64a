"""The Slack adapter: cards, buttons, modals, slash commands, App Home and thread mirroring.

The composition root (`approvalbot.app`) wires Slack in through `SlackChannel`
(`approvalbot.slack.channel`): mounting `POST /slack/events` (and Socket Mode), the
delivery job, and the start-up line ("Slack: on ..." / "Slack: off ...").
"""

from __future__ import annotations

from approvalbot.slack.delivery import subscribers
from approvalbot.slack.settings import SlackConfig, status_line

__all__ = ["SlackConfig", "status_line", "subscribers"]
