"""The Teams bot: remembers where it was added, answers commands, and handles card actions.

Activities from tenants that are not allowed never get here (`tenants.TenantGate`).
Every decision goes through `ApprovalService.decide` with the clicker resolved to
the person their Teams identity (tenant + AAD object id) is linked to (see
`identity`), so the rules of the core (self-approval, eligibility, one outcome)
apply exactly as in the API and Slack; this module only translates. What a person
is shown follows `rules.may_view`: others get a card without the request's details.

The `adaptiveCard/action` invoke is handled in `on_invoke_activity` and answered
with `InvokeResponse(status=200, body=AdaptiveCardInvokeResponse(...))`, the model
left unserialised: botbuilder-python 4.17.1's `on_adaptive_card_invoke` path
serialises the body twice and answers HTTP 500 (see docs/teams.md).
"""

from __future__ import annotations

import logging
from typing import Any

from botbuilder.core import ActivityHandler, InvokeResponse, MessageFactory, TurnContext
from botbuilder.schema import Activity, AdaptiveCardInvokeResponse, Attachment
from redis.asyncio import Redis

from approvalbot.core.errors import DomainError, NotFound, Refusal, Refused, sentence
from approvalbot.core.ids import EXAMPLE_REQUEST_ID, is_request_id
from approvalbot.core.models import MAX_TEXT, ApprovalRequest, Person, Status
from approvalbot.core.rules import (
    approval_progress,
    clean_reason,
    is_active_approver,
    may_view,
    reason_missing,
    refusal_for,
)
from approvalbot.service import ApprovalService
from approvalbot.store.requests import Conflict
from approvalbot.teams import cards, sdk
from approvalbot.teams.cards import Notice
from approvalbot.teams.identity import Clicker, IdentityResolver, recent_user_ids
from approvalbot.teams.references import (
    CHANNEL,
    PERSONAL,
    STORED_KINDS,
    ConversationRef,
    ReferenceStore,
)
from approvalbot.teams.sdk import connector, reference_of
from approvalbot.teams.tenants import tenant_of
from approvalbot.teams.text import escape_markdown, parse_command

log = logging.getLogger("approvalbot.teams.bot")

INVOKE_NAME = "adaptiveCard/action"
ERROR_TYPE = "application/vnd.microsoft.error"
PENDING_PAGE = 10
# Team events after which nothing may be posted to any of its channels (until the bot is added again).
TEAM_GONE_EVENTS = ("teamDeleted", "teamHardDeleted", "teamArchived")

UNRESOLVED = "Teams could not confirm who you are right now; try again in a minute."

HELP_LINES = [
    "pending: the requests waiting for your decision, as cards.",
    "approval ID: one request and its audit trail, e.g. approval " + EXAMPLE_REQUEST_ID + ".",
    "approval ID 2: the second page of a long audit trail.",
    "Said in a channel, both are answered in your 1:1 chat with the bot.",
    "Cards posted in channels are updated for everyone after each decision.",
]


def invoke_card(card: dict[str, Any]) -> InvokeResponse:
    """The Universal Actions answer: the card the clicker sees from now on."""
    body = AdaptiveCardInvokeResponse(status_code=200, type=cards.CONTENT_TYPE, value=card)
    return InvokeResponse(status=200, body=body)


def invoke_error(status: int, message: str) -> InvokeResponse:
    body = AdaptiveCardInvokeResponse(
        status_code=status,
        type=ERROR_TYPE,
        value={"code": "BadRequest" if status < 500 else "InternalError", "message": message},
    )
    return InvokeResponse(status=200, body=body)


def card_message(card: dict[str, Any]) -> Activity:
    return MessageFactory.attachment(Attachment(content_type=cards.CONTENT_TYPE, content=card))


async def _send_all(turn_context: TurnContext, replies: list[Activity | str]) -> None:
    await turn_context.send_activities([_as_activity(r) for r in replies])


def _as_activity(reply: Activity | str) -> Activity:
    return MessageFactory.text(reply) if isinstance(reply, str) else reply


def _page(args: list[str]) -> int:
    """`approval ID 2` (or `page 2`): which page of the audit trail; 1 when absent or not a number."""
    words = [a for a in args if a.lower() != "page"]
    return int(words[0]) if words and words[0].isdigit() and 0 < int(words[0]) < 10_000 else 1


def _json_object(value: object) -> dict[str, Any]:
    """A JSON object from an activity's payload; anything else (missing, a list, a string) reads as empty."""
    return value if isinstance(value, dict) else {}


class ApprovalBot(ActivityHandler):  # type: ignore[misc]  # untyped SDK base (Any)
    def __init__(self, service: ApprovalService, redis: Redis, max_bytes: int = cards.DEFAULT_MAX_BYTES):
        self.service = service
        self.max_bytes = max_bytes
        self.redis = redis
        self.references = ReferenceStore(redis)
        self.people = IdentityResolver(service, redis)

    # --- where cards go ----------------------------------------------------------------

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        data = _json_object(activity.channel_data)
        event = data.get("eventType")
        team = _json_object(data.get("team"))
        channel = _json_object(data.get("channel"))
        if bot_id and any(m.id == bot_id for m in activity.members_added or []):
            await self._remember(turn_context)
        elif bot_id and any(m.id == bot_id for m in activity.members_removed or []):
            await self._forget(turn_context)
        elif event == "channelDeleted" and channel.get("id"):
            if await self.references.remove(str(channel["id"])):
                log.info("Teams: a channel the bot posted to was deleted")
        elif event in TEAM_GONE_EVENTS and team.get("id"):
            forgotten = await self.references.forget_team(str(team["id"]))
            log.info("Teams: %s; forgot %d conversation(s) of that team", event, len(forgotten))
        elif event in ("teamUnarchived", "teamRestored"):
            # Only the team's General channel (the event's conversation) is known again; its other
            # channels need the bot added again (docs/teams.md).
            await self._remember(turn_context, welcome=False)
        elif event == "channelRestored" and channel.get("id"):
            await self._remember(turn_context, channel_id=str(channel["id"]), welcome=False)
        elif event in ("channelRenamed", "teamRenamed"):
            if event == "channelRenamed" and channel.get("id"):
                await self.references.rename(channel["id"], name=channel.get("name"))
            elif team.get("name"):
                for ref in await self.references.all():
                    if ref.team_id and ref.team_id == team.get("id"):
                        await self.references.rename(ref.id, team=team["name"])

    async def on_installation_update(self, turn_context: TurnContext) -> None:
        action = (turn_context.activity.action or "").lower()
        if action.startswith("add"):
            await self._remember(turn_context)
        elif action.startswith("remove"):
            await self._forget(turn_context, whole_team=True)

    async def _remember(self, turn_context: TurnContext, channel_id: str | None = None, welcome: bool = True) -> None:
        """Store the activity's conversation (or, with `channel_id`, that channel of its team); a new
        one is greeted unless `welcome` is False (a restore: the event's conversation is not the one)."""
        activity = turn_context.activity
        conversation = activity.conversation
        kind = conversation.conversation_type or "personal"
        if kind not in STORED_KINDS:
            return  # personal chats never receive broadcast cards
        data = activity.channel_data or {}
        team = data.get("team") or {}
        channel = data.get("channel") or {}
        if kind == CHANNEL:
            name = channel.get("name") or (
                "General"
                if channel.get("id", conversation.id) == team.get("id")
                else conversation.name or conversation.id
            )
        else:
            name = conversation.name or "group chat"
        reference = reference_of(activity)
        if channel_id and kind == CHANNEL:
            reference["conversation"] = {**reference.get("conversation", {}), "id": channel_id}
        ref = ConversationRef(
            id=channel_id or conversation.id,
            kind=kind,
            name=name,
            service_url=activity.service_url,
            reference=reference,
            team=team.get("name"),
            team_id=team.get("id"),
            aad_group_id=team.get("aadGroupId"),
            tenant_id=tenant_of(activity),
            added_by=getattr(activity.from_property, "aad_object_id", None) if activity.from_property else None,
        )
        if await self.references.save(ref):
            log.info("Teams: added to %s %s", kind, ref.hash)
            if not welcome:
                return
            try:
                connector(turn_context)  # our timeout, no hidden retries
                await turn_context.send_activity(
                    f"approvalbot will post approval requests here. To route a policy rule to this "
                    f'conversation, use channel: "{escape_markdown(ref.name, 100)}".'
                )
            except Exception as exc:
                log.warning("Teams welcome message failed (%s)", exc.__class__.__name__)

    async def _forget(self, turn_context: TurnContext, whole_team: bool | None = None) -> None:
        """The bot was removed (or the app uninstalled). From a team (`teamMemberRemoved`, or an
        uninstall in a team) every channel of that team is forgotten: the event names the team,
        not each channel. From one channel (a shared channel that no longer allows the bot:
        `channelMemberRemoved`) or a chat, only that conversation."""
        activity = turn_context.activity
        data = _json_object(activity.channel_data)
        team = _json_object(data.get("team"))
        channel = _json_object(data.get("channel"))
        if whole_team is None:
            whole_team = data.get("eventType") == "teamMemberRemoved"
        if whole_team and team.get("id"):
            forgotten = await self.references.forget_team(str(team["id"]))
            log.info("Teams: removed from a team; forgot %d conversation(s)", len(forgotten))
        for conversation_id in {activity.conversation.id, channel.get("id")} - {None}:
            if await self.references.remove(str(conversation_id)):
                log.info("Teams: removed from a conversation")

    # --- commands ----------------------------------------------------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        verb, args = parse_command(turn_context.activity.text)
        try:
            connector(turn_context)  # our timeout, no hidden retries, for every reply below
            if verb == "pending":
                await self._answer_privately(turn_context, await self._pending(turn_context), "your queue")
            elif verb == "approval" and args:
                replies = await self._approval(turn_context, args[0], _page(args[1:]))
                await self._answer_privately(turn_context, replies, "that request")
            else:
                await turn_context.send_activity(card_message(cards.message_card("approvalbot commands", HELP_LINES)))
        except Exception:
            log.exception("Teams command failed")
            try:
                await turn_context.send_activity("Something went wrong; nothing was changed. Try again later.")
            except Exception as exc:
                log.warning("Teams reply failed too (%s)", exc.__class__.__name__)

    async def _answer_privately(self, turn_context: TurnContext, replies: list[Activity | str], what: str) -> None:
        """A person's queue and a request's details are theirs: said in a channel or a group chat,
        they are answered in the person's 1:1 chat with the bot (a proactive message), and the
        conversation gets one short note. Nothing of the answer is ever posted there."""
        activity = turn_context.activity
        kind = activity.conversation.conversation_type or PERSONAL
        if kind == PERSONAL:
            await _send_all(turn_context, replies)
            return
        try:
            await sdk.send_personal(turn_context, [_as_activity(r) for r in replies])
        except Exception as exc:
            log.warning("Teams: could not open a 1:1 chat (%s)", exc.__class__.__name__)
            await turn_context.send_activity(
                f"I could not message you privately, so {what} is not shown here. Open a chat with "
                "approvalbot (Apps, or its name in the chat list) and send the command there."
            )
            return
        await turn_context.send_activity(f"I answered you in our 1:1 chat ({what} is not shown here).")

    async def _pending(self, turn_context: TurnContext) -> list[Activity | str]:
        clicker = await self.people.resolve(turn_context)
        approver = clicker.person
        if not is_active_approver(approver):
            return [card_message(self._who_notice_card(clicker))]
        items, cursor = await self.service.pending_for(approver, None, PENDING_PAGE)
        if not items:
            return [card_message(cards.message_card("Nothing is waiting for your decision."))]
        refresh = [clicker.user_id]  # a personal chat: only this user's client refreshes
        replies: list[Activity | str] = [
            card_message(cards.fit_request_card(r, self.max_bytes, refresh_user_ids=refresh)) for r in items
        ]
        if cursor is not None:
            replies.append(f"{len(items)} shown; more are waiting. Decide these, then send pending again.")
        return replies

    async def _approval(self, turn_context: TurnContext, request_id: str, page: int = 1) -> list[Activity | str]:
        request_id = request_id.strip().lower()
        if not is_request_id(request_id):
            return [
                card_message(
                    cards.message_card("That is not a request id.", [f"Request ids look like {EXAMPLE_REQUEST_ID}."])
                )
            ]
        clicker = await self.people.resolve(turn_context)
        try:
            request = await self.service.get(request_id)
        except NotFound:
            request = None
        # The same answer for "no such request" and "not yours to see" (least visibility, by person).
        if request is None or not may_view(request, approver=clicker.person):
            return [card_message(cards.message_card("No request with that id is visible to you."))]
        records = [r.as_dict() for r in await self.service.audit.for_request(request.id)]
        return [
            card_message(await self._view(request, clicker)),  # fitted to the budget, as every card
            card_message(cards.audit_page_card(request, records, page, self.max_bytes)),
        ]

    @staticmethod
    def _who_notice_card(clicker: Clicker) -> dict[str, Any]:
        return cards.message_card("approvalbot", notice=_who_notice(clicker))

    # --- card actions (Universal Actions) --------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        if turn_context.activity.name != INVOKE_NAME:
            # The only invoke the app declares. The SDK would answer 501, which reads as a server
            # fault; an invoke we never offered is the sender's mistake.
            return InvokeResponse(status=400)
        try:
            return await self._card_action(turn_context)
        except Exception:
            log.exception("Teams card action failed")
            return invoke_error(500, "Something went wrong; nothing was changed. Try again later.")

    async def _card_action(self, turn_context: TurnContext) -> InvokeResponse:
        value = _json_object(turn_context.activity.value)
        action = _json_object(value.get("action"))
        verb = action.get("verb")
        data = _json_object(action.get("data"))
        request_id = data.get("request_id")
        if verb not in (cards.VERB_APPROVE, cards.VERB_DENY, cards.VERB_REFRESH, cards.VERB_REVEAL):
            return invoke_error(400, "unknown action")
        if not isinstance(request_id, str) or not is_request_id(request_id):
            return invoke_error(400, "the card does not name a request")
        try:
            request = await self.service.get(request_id)
        except NotFound:
            return invoke_card(cards.message_card("This request no longer exists."))
        if verb in (cards.VERB_APPROVE, cards.VERB_DENY) and request.status.final:
            # Settled: said before any identity check, and nothing is recorded (no refusal to audit).
            notice = Notice(sentence(Refusal.NOT_PENDING.message))
            return invoke_card(cards.restricted_card(request, notice))
        clicker = await self.people.resolve(turn_context)
        if verb == cards.VERB_REFRESH:
            return invoke_card(await self._view(request, clicker))
        if clicker.person is None:  # not linked and not linkable: nothing for the core to judge
            return invoke_card(await self._view(request, clicker, _who_notice(clicker)))
        actor = clicker.actor()
        if verb == cards.VERB_REVEAL:
            return await self._reveal(request, clicker, clicker.person)

        field = cards.DENY_REASON_INPUT if verb == cards.VERB_DENY else cards.REASON_INPUT
        reason = clean_reason(data.get(field))
        if verb == cards.VERB_DENY and reason is None:
            reason = clean_reason(data.get(cards.REASON_INPUT))
        if reason is not None and len(reason) > MAX_TEXT:
            return invoke_card(
                await self._view(request, clicker, Notice(f"The reason is too long (at most {MAX_TEXT} characters)."))
            )
        if reason_missing(verb, reason):
            notice = Notice(sentence(Refusal.REASON_REQUIRED.message))
            return invoke_card(await self._view(request, clicker, notice))
        try:
            decided = await self.service.decide(request_id, actor, clicker.person, verb, reason)
        except Refused as refused:
            fresh = await self.service.get(request_id)
            notice = Notice(
                sentence(refused.message),
                clicker.person.email if refused.refusal is Refusal.UNKNOWN_APPROVER else None,
            )
            return invoke_card(await self._view(fresh, clicker, notice))
        except NotFound:
            return invoke_card(cards.message_card("This request no longer exists."))
        except DomainError as exc:  # any other rule of the core
            return invoke_card(await self._view(request, clicker, Notice(sentence(exc.message))))
        except Conflict:
            return invoke_card(
                await self._view(request, clicker, Notice("Too many people acted at once; please try again."))
            )
        return invoke_card(await self._view(decided, clicker, self._done_notice(decided, verb)))

    async def _reveal(self, request: ApprovalRequest, clicker: Clicker, person: Person) -> InvokeResponse:
        """Reveal: the service checks and records it; the values go only into this invoke's answer,
        the card the clicker alone sees (never an update of the shared card). Refusals say why."""
        paths = cards.hidden_paths(request)
        if not paths:
            return invoke_card(await self._view(request, clicker, Notice("Nothing on this request is hidden.")))
        try:
            # The service decides who may see the values (rules.reveal_refusal) and audits the reveal.
            values = await self.service.reveal(request.id, clicker.actor(), person, paths)
        except NotFound:
            return invoke_card(cards.message_card("This request no longer exists."))
        except Refused as refused:
            return invoke_card(await self._view(request, clicker, Notice(_reveal_refusal(refused))))
        except DomainError as exc:  # reveals forbidden by the rule, values deleted after retention, …
            return invoke_card(
                await self._view(request, clicker, Notice(f"Nothing was revealed: {sentence(exc.message)}"))
            )
        return invoke_card(cards.reveal_card(request, values, self.max_bytes))

    @staticmethod
    def _done_notice(request: ApprovalRequest, verb: str) -> Notice:
        if verb == cards.VERB_DENY:
            return Notice("You denied this request.", style="good")
        if request.status is Status.APPROVED:
            return Notice("You approved this request.", style="good")
        approvals, needed = approval_progress(request)
        return Notice(f"Your approval is recorded: {approvals} of {needed}.", style="good")

    async def _view(self, request: ApprovalRequest, clicker: Clicker, notice: Notice | None = None) -> dict[str, Any]:
        """The card as this person should see it: the details only if they may view the request
        (`rules.may_view`), actions only if the core would let them decide."""
        person = clicker.person
        if not may_view(request, approver=person):
            return cards.restricted_card(request, notice or _who_notice(clicker, request_shown=False))
        refresh = await recent_user_ids(self.redis, clicker.tenant_id)
        if clicker.user_id and clicker.user_id not in refresh:
            refresh = [clicker.user_id, *refresh]
        if request.status.final:
            return cards.fit_request_card(request, self.max_bytes, notice=notice)
        refusal = refusal_for(request, clicker.actor(), person)
        if refusal is None:
            return cards.fit_request_card(request, self.max_bytes, notice=notice, refresh_user_ids=refresh)
        if notice is None:
            notice = Notice(sentence(refusal.message), style="warning")
        return cards.fit_request_card(request, self.max_bytes, actions=False, notice=notice, refresh_user_ids=refresh)


def _reveal_refusal(refused: Refused) -> str:
    if refused.refusal in (Refusal.NOT_ELIGIBLE, Refusal.UNKNOWN_APPROVER, Refusal.SELF_APPROVAL):
        return "Nothing was revealed: only the approvers of this request can see its hidden values. " + sentence(
            refused.message
        )
    return f"Nothing was revealed: {sentence(refused.message)}"


def _who_notice(clicker: Clicker, request_shown: bool = True) -> Notice:
    """Why this clicker is not acting as a registered approver (their identity, or their rights)."""
    if clicker.refused is not None:
        return Notice("Your Teams account is not linked to a registered person.", sentence(clicker.refused.message))
    if clicker.person is None:
        return Notice(UNRESOLVED)
    if not is_active_approver(clicker.person):
        return Notice("You are not a registered approver. Your Teams account is linked to:", clicker.person.email)
    if request_shown:
        return Notice("You are not an approver of this request.", style="warning")
    return Notice("Only the approvers of this request and the people behind it can see its details.", style="warning")
