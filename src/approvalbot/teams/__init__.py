"""Microsoft Teams adapter: Adaptive Cards with Universal Actions, on the same core and outbox.

Every `botbuilder` / `botframework` import lives in this package (and only in the
modules that need it: `sdk`, `bot`, `identity`, `delivery`, `mount`), so the SDK,
which is being archived, can be replaced without touching the rest of approvalbot.
`settings`, `text`, `cards`, `references`, `package` and `cli` import no SDK code.

Entry points for the wiring:

* `mount(app, ctx)` adds `POST /api/messages` to the web app; False when Teams is off.
* `subscribers(settings)` adds the Teams delivery job to the outbox.
* `status_line(settings)` validates and gives the start-up line ("Teams: on / off / DEV MODE").
* `approvalbot.teams.cli`: `add_commands(subparsers)` and `cmd_teams(rt, args)`.
"""

from __future__ import annotations

from approvalbot.teams.settings import TeamsConfigError, status_line


def mount(app, ctx) -> bool:
    from approvalbot.teams.mount import mount as _mount

    return _mount(app, ctx)


def subscribers(settings) -> list:
    from approvalbot.teams.delivery import subscribers as _subscribers

    return _subscribers(settings)


__all__ = ["TeamsConfigError", "mount", "status_line", "subscribers"]
