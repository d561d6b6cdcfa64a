"""Slack listeners: buttons, the reason modal, slash commands and the App Home.

Listeners are thin. They acknowledge at once (Slack allows 3 seconds), find out
who acts from the signed payload (`identify`: a person, through one Slack identity
of a served workspace; anyone else is told no and audited as `identity.refused`),
and hand every decision to `ApprovalService.decide`; the rules, including the one
against approving your own request, live in the core. Posting and updating the
card is left to the delivery jobs, which run for every change whatever channel it
came from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.core.errors import DomainError, NotFound, Refusal, Refused, sentence
from approvalbot.core.ids import decode_cursor, encode_cursor, is_request_id
from approvalbot.core.models import ApprovalRequest, Status
from approvalbot.core.rules import clean_reason, is_active_approver, may_view, reason_missing, refusal_for
from approvalbot.slack import blocks
from approvalbot.slack.client import error_code
from approvalbot.slack.escape import mrkdwn
from approvalbot.slack.host import SlackHost as SlackAdapter
from approvalbot.slack.host import Unrecognised, Who
from approvalbot.slack.workspaces import acting_user

log = logging.getLogger("approvalbot.slack")

Tell = Callable[[str], Awaitable[None]]

COMMANDS = ("/pending", "/approval")
EVENTS = ("app_home_opened", "user_change")
PAGE = 5
HOME_PAGE = 10


def refusal_text(refusal: Refusal, request: ApprovalRequest | None, who: Who) -> str:
    """What the clicker reads when the core says no."""
    rid = f"`{request.id}`" if request else "this request"
    if refusal is Refusal.SELF_APPROVAL:
        return (
            f":no_entry: You cannot approve your own request: {rid} was made by your agent "
            "or on your behalf. Another approver has to decide it. (This attempt was recorded.)"
        )
    if refusal is Refusal.UNKNOWN_APPROVER:
        return (
            f":no_entry: You are not a registered approver ({mrkdwn(who.approver.email, 200)}). "
            "An admin can add you with `approvalbot approvers add`."
        )
    if refusal is Refusal.NOT_ELIGIBLE:
        named = blocks.approver_names(request, {}) if request else "other approvers"
        return f":no_entry: You are not an approver for {rid}: its policy names {named}."
    if refusal is Refusal.ALREADY_DECIDED:
        return f"You have already decided {rid}; each approver counts once."
    if refusal is Refusal.NOT_PENDING:
        status = request.status.value if request else "decided"
        return f"{rid} was already decided: it is {status}."
    return f":no_entry: {sentence(refusal.message)}"


def reveal_refusal_text(error: DomainError, request: ApprovalRequest) -> str:
    """What a Reveal clicker reads when the service says no: not eligible, reveals forbidden by
    the rule, values deleted after the retention period, or any other rule (its own wording)."""
    rid = f"`{request.id}`"
    if isinstance(error, Refused) and error.refusal is Refusal.SELF_APPROVAL:
        return f":no_entry: Nothing was revealed: {rid} was made by your agent or on your behalf."
    if isinstance(error, Refused) and error.refusal in (Refusal.NOT_ELIGIBLE, Refusal.UNKNOWN_APPROVER):
        return (
            f":no_entry: Nothing was revealed: only the approvers of {rid} can see its hidden values "
            f"({sentence(error.message)})"
        )
    if isinstance(error, Refused) and error.refusal in (Refusal.NOT_PENDING, Refusal.ALREADY_DECIDED):
        return f":no_entry: Nothing was revealed: {sentence(error.message)}"
    return f":no_entry: Nothing was revealed for {rid}: {sentence(mrkdwn(error.message, 500))}"


def _channel_of(body: dict[str, Any]) -> str | None:
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    return channel if isinstance(channel, str) and re.match(r"^[CGD][A-Z0-9]{2,}$", channel) else None


def _from_home(body: dict[str, Any]) -> bool:
    return (body.get("view") or {}).get("type") == "home" or (body.get("container") or {}).get("type") == "view"


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    service = adapter.service

    async def identify(body: dict[str, Any], tell: Tell | None) -> Who | None:
        """The acting person, or None once they have been told why not (and a refusal audited).

        `tell` shows them a note where they acted; None where there is no place to answer
        (an event): then a refusal is audited and nothing is shown.
        """
        acting = acting_user(body)
        if acting is None:
            return None
        try:
            found = await adapter.identify(acting)
        except SlackApiError as exc:
            log.warning("users.info for %s failed: %s", acting.user_id, error_code(exc))
            if tell is not None:
                with contextlib.suppress(SlackApiError):
                    await tell(
                        "approvalbot could not check who you are with Slack just now. "
                        "Nothing was decided; please try again."
                    )
            return None
        if isinstance(found, Unrecognised):
            await adapter.refused(found)
            if tell is not None:
                await tell(found.text)
            return None
        return found

    def note(client: AsyncWebClient, user: str, channel: str | None) -> Tell:
        async def tell(text: str) -> None:
            await adapter.notify(client, user, channel, text)

        return tell

    def reply(respond: AsyncRespond, replace: bool = False) -> Tell:
        async def tell(text: str) -> None:
            message = blocks.notice(text)
            await respond(text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=replace)

        return tell

    async def on_decision_button(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        user = body["user"]["id"]
        channel = _channel_of(body)
        decision = action["action_id"]
        request_id = str(action.get("value") or "")
        try:
            request = await service.get(request_id)
        except NotFound:
            await adapter.notify(client, user, channel, "That request does not exist (any more).")
            return
        if request.status.final:  # settled: said before any identity check, and nothing is recorded
            await adapter.notify(client, user, channel, f"`{request.id}` was already decided: it is {request.status}.")
            return
        who = await identify(body, note(client, user, channel))
        if who is None:
            return
        refusal = refusal_for(request, who.actor, who.approver)
        if refusal is Refusal.SELF_APPROVAL:
            # Let the service refuse it, so the attempt is recorded in the audit log.
            try:
                request = await service.decide(request.id, who.actor, who.approver, decision, None)
            except Refused as refused:
                await adapter.notify(client, user, channel, refusal_text(refused.refusal, request, who))
                return
            # Not refused only when it had just expired (the service settled it as expired).
            await adapter.notify(client, user, channel, f"`{request.id}` is {request.status.value}.")
            return
        if refusal is not None:
            await adapter.notify(client, user, channel, refusal_text(refusal, request, who))
            return
        meta = json.dumps({"r": request.id, "d": decision, "c": channel, "h": _from_home(body)})
        await client.views_open(trigger_id=body["trigger_id"], view=blocks.decision_modal(request, decision, meta))

    app.action(blocks.APPROVE)(on_decision_button)
    app.action(blocks.DENY)(on_decision_button)

    @app.action(blocks.REVEAL)
    async def on_reveal_button(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        """Reveal: the service checks and records it; the exact values go to a modal only the
        clicker sees (never the channel), a refusal to an ephemeral note."""
        await ack()
        user = body["user"]["id"]
        channel = _channel_of(body)
        who = await identify(body, note(client, user, channel))
        if who is None:
            return
        try:
            request = await service.get(str(action.get("value") or ""))
        except NotFound:
            await adapter.notify(client, user, channel, "That request does not exist (any more).")
            return
        paths = blocks.hidden_paths(request)
        if not paths:
            await adapter.notify(client, user, channel, f"Nothing on `{request.id}` is hidden.")
            return
        try:
            # The service decides who may see the values (rules.reveal_refusal) and audits the reveal.
            values = await service.reveal(request.id, who.actor, who.approver, paths)
        except DomainError as error:
            await adapter.notify(client, user, channel, reveal_refusal_text(error, request))
            return
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=blocks.reveal_modal(request, values))
        except SlackApiError as exc:
            log.info("reveal modal for %s failed (%s)", user, error_code(exc))
            await adapter.notify(
                client,
                user,
                channel,
                "Slack did not open the window with the values in time (the reveal was recorded). Click Reveal again.",
            )

    @app.view(blocks.DECISION_VIEW)
    async def on_decision_submitted(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            request_id, decision = str(meta["r"]), meta["d"]
            if decision not in (blocks.APPROVE, blocks.DENY):
                raise ValueError(decision)
        except (ValueError, KeyError, TypeError):
            await ack()
            return
        values = (view.get("state") or {}).get("values") or {}
        reason = clean_reason(((values.get(blocks.REASON_BLOCK) or {}).get(blocks.REASON_INPUT) or {}).get("value"))
        if reason_missing(decision, reason):
            await ack(
                response_action="errors",
                errors={blocks.REASON_BLOCK: "Say why: the agent and the audit log will show it."},
            )
            return
        await ack()
        user = body["user"]["id"]
        channel = meta.get("c") if isinstance(meta.get("c"), str) else None
        who = await identify(body, note(client, user, channel))
        if who is None:
            return
        try:
            decided = await service.decide(request_id, who.actor, who.approver, decision, reason)
        except Refused as refused:
            current = await service.requests.get(request_id)
            await adapter.notify(client, user, channel, refusal_text(refused.refusal, current, who))
            return
        except NotFound:
            await adapter.notify(client, user, channel, "That request does not exist (any more).")
            return
        verb = "approved" if decision == blocks.APPROVE else "denied"
        if decided.status is Status.EXPIRED:
            text = f"`{decided.id}` had expired before your decision arrived."
        else:
            text = f"You {verb} `{decided.id}`. It is now *{decided.status.value}*."
        await adapter.notify(client, user, channel, text)
        if meta.get("h"):
            await publish_home(client, who)

    async def pending_page(who: Who, cursor: tuple[int, str] | None) -> blocks.Rendered:
        if not is_active_approver(who.approver):
            return blocks.notice(refusal_text(Refusal.UNKNOWN_APPROVER, None, who))
        items, after = await service.pending_for(who.approver, cursor, PAGE)
        return blocks.pending_message(items, encode_cursor(after), cursor is None)

    @app.command("/pending")
    async def on_pending(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        who = await identify(body, reply(respond))
        if who is None:
            return
        page = await pending_page(who, None)
        await respond(text=page.text, blocks=page.blocks, response_type="ephemeral")

    @app.action(blocks.MORE)
    async def on_more(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        cursor = decode_cursor(str(action.get("value") or ""))
        if cursor is None:
            return
        who = await identify(body, reply(respond, replace=True))
        if who is None:
            return
        page = await pending_page(who, cursor)
        await respond(text=page.text, blocks=page.blocks, response_type="ephemeral", replace_original=True)

    @app.command("/approval")
    async def on_approval(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        words = (body.get("text") or "").split()
        request_id = words[0] if words else ""
        page = int(words[1]) if len(words) > 1 and words[1].isdigit() and 0 < int(words[1]) < 10_000 else 1
        if not is_request_id(request_id):
            await respond(
                text="Usage: `/approval req_... [page]` (the id on the card or in the API).",
                response_type="ephemeral",
            )
            return
        who = await identify(body, reply(respond))
        if who is None:
            return
        try:
            request = await service.get(request_id)
        except NotFound:
            request = None
        if request is None or not may_view(request, approver=who.approver):
            # Least visibility: a request this person may not see does not exist, to them.
            await respond(text=f"No request `{request_id}`.", response_type="ephemeral")
            return
        records = [(r.seq, r.hash, r.as_dict()) for r in await service.audit.for_request(request.id)]
        detail = blocks.detail_message(request, records, page)
        await respond(text=detail.text, blocks=detail.blocks, response_type="ephemeral")

    async def publish_home(client: AsyncWebClient, who: Who | None, user: str | None = None) -> None:
        """The caller's queue; `who` None (and `user` given) is someone in a served workspace
        approvalbot cannot match to a person: they see the note on how to be added."""
        items: list[ApprovalRequest] = []
        more = registered = False
        if who is not None and is_active_approver(who.approver):
            registered = True
            items, after = await service.pending_for(who.approver, None, HOME_PAGE)
            more = after is not None
        target = who.user_id if who is not None else user
        if target:
            await client.views_publish(user_id=target, view=blocks.home_view(items, more, registered))

    @app.event("app_home_opened")
    async def on_home(body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        acting = acting_user(body)
        if acting is None:
            return
        found = await adapter.identify(acting)
        if isinstance(found, Unrecognised):
            # No place to answer: audited, and nothing is shown (to another workspace, not even a note).
            await adapter.refused(found)
            if found.refusal is Refusal.IDENTITY_UNKNOWN:
                await publish_home(client, None, acting.user_id)
            return
        await publish_home(client, found)

    @app.event("user_change")
    async def on_user_change(event: dict[str, Any]) -> None:
        """A profile changed: forget what users.info said, so the next action asks Slack again."""
        user = event.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return
        profile = user.get("profile")
        email = profile.get("email") if isinstance(profile, dict) else None
        await adapter.people.forget(user["id"], email if isinstance(email, str) else None)

    @app.error
    async def on_error(
        error: Exception, body: dict[str, Any] | None, response: BoltResponse | None
    ) -> BoltResponse | None:
        kind = (body or {}).get("type") or ((body or {}).get("event") or {}).get("type")
        if isinstance(error, SlackApiError):
            log.warning("slack listener for %s: Slack answered %s", kind, error_code(error))
            return None
        log.error("slack listener for %s failed", kind, exc_info=error)
        if response is not None:
            # Not acknowledged yet: it failed while bolt or a listener was still reading the
            # payload, so the request is at fault, not the server.
            return BoltResponse(status=400, body={"error": "unreadable request"})
        return None
