"""Which Slack user, from which workspace, a signed payload comes from; and which workspaces we serve.

Slack puts the acting user's team in a different place in each payload shape, and in
a Slack Connect channel (or an Enterprise Grid org) it is not our team. A decision
must never rest on a team we did not check, so every listener reads it through
`acting_user`, and `serves` is the one test of "is this one of our workspaces".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from approvalbot.slack.escape import USER_ID_RE
from approvalbot.slack.settings import TEAM_ID_RE


@dataclass(frozen=True)
class ActingUser:
    """The user a payload names, with the team (T...) and organisation (E...) Slack says they act from."""

    user_id: str
    team_id: str | None
    enterprise_id: str | None


def _id(value: object) -> str | None:
    return value if isinstance(value, str) and TEAM_ID_RE.match(value) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def acting_user(body: dict[str, Any]) -> ActingUser | None:
    """The acting user of an interaction, slash command or event; None when the payload names none.

    - block_actions, view_submission (and other interactions): `user.id`, and the user's own
      team `user.team_id` (in Slack Connect that differs from ours), else `team.id`;
      the organisation from `enterprise.id` or `team.enterprise_id`;
    - slash commands: `user_id`, `team_id`, `enterprise_id` at the top level;
    - events: `event.user` (an id, or the user object in `user_change`), the envelope's
      `team_id` (the source team in a shared channel) and `enterprise_id`.
    """
    if "command" in body and "user_id" in body:
        user, team, enterprise = body.get("user_id"), body.get("team_id"), body.get("enterprise_id")
    elif body.get("type") == "event_callback":
        event = _dict(body.get("event"))
        raw = event.get("user")
        user = _dict(raw).get("id") if isinstance(raw, dict) else raw
        team = event.get("user_team") or body.get("team_id")
        enterprise = body.get("enterprise_id")
    else:
        who, team_obj = _dict(body.get("user")), _dict(body.get("team"))
        user = who.get("id")
        team = who.get("team_id") or team_obj.get("id")
        enterprise = _dict(body.get("enterprise")).get("id") or team_obj.get("enterprise_id")
    if not isinstance(user, str) or not USER_ID_RE.match(user):
        return None
    return ActingUser(user, _id(team), _id(enterprise))


def serves(allowed: Collection[str], team_id: str | None, enterprise_id: str | None = None) -> bool:
    """Whether a team (or its Enterprise Grid organisation) is one approvalbot serves."""
    return (team_id is not None and team_id in allowed) or (enterprise_id is not None and enterprise_id in allowed)
