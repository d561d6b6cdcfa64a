"""The Slack adapter: cards, buttons, modals, slash commands, App Home and thread mirroring.

Entry points for the wiring:

* `mount(app, ctx)` adds `POST /slack/events` (and Socket Mode) to the web app.
* `subscribers(settings)` adds the Slack delivery job to the outbox.
* `status_line(settings)` is the start-up line ("Slack: on ..." / "Slack: off ...").
"""

from __future__ import annotations

from approvalbot.slack.settings import SlackConfig, status_line


def mount(app, ctx) -> bool:
    from approvalbot.slack.app import mount as _mount

    return _mount(app, ctx)


def subscribers(settings) -> list:
    from approvalbot.slack.delivery import subscribers as _subscribers

    return _subscribers(settings)


__all__ = ["SlackConfig", "mount", "status_line", "subscribers"]
