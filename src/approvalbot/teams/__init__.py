"""Microsoft Teams adapter: Adaptive Cards with Universal Actions, on the same core and outbox.

Every `botbuilder` / `botframework` import lives in this package (and only in the
modules that need it: `sdk`, `bot`, `identity`, `delivery`, `mount`), so the SDK,
which is being archived, can be replaced without touching the rest of approvalbot.
`settings`, `text`, `cards`, `references`, `package` and `cli` import no SDK code.

The composition root (`approvalbot.app`) wires Teams in through `TeamsChannel`
(`approvalbot.teams.channel`): mounting `POST /api/messages`, the delivery job, the
start-up line and the `approvalbot teams ...` commands. This module imports nothing
heavy, so `from approvalbot.teams.settings import ...` stays cheap.
"""

from __future__ import annotations
