"""Who a Slack user is: from the user a signed payload names to one person, or a refusal saying why.

An email never identifies a Slack user on its own. The identity is the pair (team,
user id), and it must come from a workspace approvalbot serves: the bot token's own
team (`auth.test`) or one listed in SLACK_ALLOWED_TEAMS. Users from any other team,
and Slack Connect strangers, are turned away before any person is looked up.

A served user's identity is looked up among linked identities; if it is not linked
yet, it is linked on first use only when Slack shows a live human account whose
verified address is exactly one person's address (`PersonStore.link_on_first_use`).
Once linked it stays with that person by id, whatever the profile says later.
"""

from __future__ import annotations

from dataclasses import dataclass

from approvalbot.core.errors import Refusal
from approvalbot.core.models import Actor, Channel, ChatIdentity, Person
from approvalbot.service import human_actor
from approvalbot.slack.escape import code, mrkdwn
from approvalbot.slack.identity import SlackDirectory
from approvalbot.slack.workspaces import ActingUser, serves
from approvalbot.store.people import LinkRefused, PersonStore, link_command


@dataclass(frozen=True)
class Who:
    """The clicker as the core sees them: their person, and the Actor naming the identity they used."""

    user_id: str
    identity: ChatIdentity
    email: str | None  # the address Slack verified, if it shows one
    actor: Actor
    approver: Person  # the person (approver or not: the rules decide what they may do)


@dataclass(frozen=True)
class Unrecognised:
    """A Slack user approvalbot will not act for: `text` is what they read, `detail` what the audit says."""

    identity: ChatIdentity
    refusal: Refusal  # FOREIGN_WORKSPACE or IDENTITY_UNKNOWN
    text: str
    detail: str
    email: str | None = None


def _slack(team: str | None, user_id: str) -> ChatIdentity:
    return ChatIdentity(channel="slack", workspace=team, user_id=user_id)


def foreign(identity: ChatIdentity, detail: str) -> Unrecognised:
    return Unrecognised(
        identity,
        Refusal.FOREIGN_WORKSPACE,
        ":no_entry: approvalbot acts only for members of its own Slack workspace; your account "
        f"(team {code(identity.workspace or '?', 40)}) is from another workspace or shared through "
        "Slack Connect. Nothing was done.",
        detail,
    )


def unknown(identity: ChatIdentity, detail: str, email: str | None = None) -> Unrecognised:
    shown = mrkdwn(email, 200) if email else "no address visible"
    return Unrecognised(
        identity,
        Refusal.IDENTITY_UNKNOWN,
        ":no_entry: approvalbot does not know which person you are, so nothing was done: your Slack "
        f"account's address ({shown}) is not the address of a registered person. An admin can link "
        f"you with `{link_command(identity)}`.",
        detail,
        email,
    )


class SlackIdentities:
    """Resolves the acting user of a payload; `allowed` is SLACK_ALLOWED_TEAMS (the own team is added)."""

    def __init__(self, directory: SlackDirectory, people: PersonStore, allowed: frozenset[str]):
        self.directory = directory
        self.people = people
        self.allowed = allowed

    async def allowed_teams(self) -> frozenset[str]:
        own = await self.directory.own_team()
        return (self.allowed | {own}) if own else self.allowed

    async def resolve(self, acting: ActingUser) -> Who | Unrecognised:
        """The person behind `acting`, or why not. Raises SlackApiError when Slack cannot answer."""
        allowed = await self.allowed_teams()
        said = _slack(acting.team_id, acting.user_id)
        if acting.team_id is not None and not serves(allowed, acting.team_id, acting.enterprise_id):
            return foreign(
                said, f"Slack user {acting.user_id} acted from team {acting.team_id}, not a served workspace"
            )
        profile = await self.directory.profile(acting.user_id)
        if profile is None:
            return unknown(said, f"Slack does not know user {acting.user_id} (users.info)")
        team = profile.team_id or acting.team_id
        identity = _slack(team, acting.user_id)
        if profile.is_stranger:
            return foreign(identity, f"Slack user {acting.user_id} is a Slack Connect stranger (team {team})")
        if team is None or not serves(allowed, team, profile.enterprise_id or acting.enterprise_id):
            return foreign(identity, f"Slack user {acting.user_id} belongs to team {team}, not a served workspace")
        if not profile.member:
            return unknown(identity, f"Slack user {acting.user_id} is deactivated or a bot", profile.email)
        found = await self.people.link_on_first_use(identity, profile.email)
        if isinstance(found, LinkRefused):
            return unknown(identity, found.message, profile.email)
        actor = human_actor(found, Channel.SLACK, acting.user_id, workspace=team)
        return Who(acting.user_id, identity, profile.email, actor, found)
