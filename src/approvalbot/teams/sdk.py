"""The thin layer over botbuilder-python 4.17.1 that the rest of the Teams adapter uses.

Adapter construction, conversation references to and from JSON, connector clients
with our own timeouts (and msrest's hidden retries turned off, so retries happen in
one place: RQ), and the classification of connector errors into "retry later" and
"give up". Replacing the SDK means replacing this module, `bot`, `identity` and the
small SDK-specific parts of `delivery`.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
)
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)
from botframework.connector import models as schema_models
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import AuthenticateRequestResult
from msrest.exceptions import ClientRequestError, HttpOperationError
from msrest.serialization import Serializer

from approvalbot.teams.cards import CONTENT_TYPE
from approvalbot.teams.settings import APP_TYPES, TeamsSettings

INTERACTIVE_TIMEOUT = 4  # seconds, for calls made while Teams waits for our answer
MAX_RETRY_AFTER = 3600


class _AuthConfig:
    """The attribute bag ConfigurationBotFrameworkAuthentication reads."""

    def __init__(self, ts: TeamsSettings):
        self.APP_ID = ts.app_id or None
        self.APP_PASSWORD = ts.app_password.get_secret_value() or None
        self.APP_TYPE = APP_TYPES.get(ts.app_type.lower(), "MultiTenant")
        # Only an app registration has a home tenant; in dev mode the id only names an allowed tenant.
        self.APP_TENANTID = (ts.tenant_id or None) if ts.app_id else None


class _Authentication(ConfigurationBotFrameworkAuthentication):  # type: ignore[misc]  # untyped SDK base (Any)
    """The SDK's check of inbound tokens, where one that is not even a JWT is refused.

    The SDK decodes the bearer token before validating it and lets PyJWT's errors escape,
    so `Authorization: Bearer junk` answered 500; refused, it is a 401 like any bad token.
    """

    async def authenticate_request(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        try:
            return await super().authenticate_request(activity, auth_header)
        except jwt.PyJWTError:
            raise PermissionError("the bearer token is not a JWT") from None


def build_adapter(ts: TeamsSettings) -> CloudAdapter:
    """With an app id every inbound activity must carry a valid Bot Framework token."""
    return CloudAdapter(_Authentication(_AuthConfig(ts)))


def reference_of(activity: Activity) -> dict[str, Any]:
    """A JSON-ready conversation reference for proactive messages to this activity's conversation."""
    ref = TurnContext.get_conversation_reference(activity)
    ref.activity_id = None  # proactive posts are new messages, not replies to this activity
    ref.user = None  # the conversation, not whoever triggered the event
    data: dict[str, Any] = ref.serialize()  # msrest's Model.serialize: a JSON-ready dict
    return data


def reference_from(data: dict[str, Any]) -> ConversationReference:
    return ConversationReference().deserialize(data)


def tune(client: ConnectorClient, timeout: float) -> ConnectorClient:
    """Our timeout, and no msrest-internal retries: they would re-POST on a 5xx behind our back."""
    config = client.config
    config.connection.timeout = timeout
    policy = config.retry_policy.policy
    policy.total = policy.connect = policy.read = 0
    policy.status_forcelist = set()
    policy.raise_on_status = False
    return client


def connector(turn_context: TurnContext, timeout: float = INTERACTIVE_TIMEOUT) -> ConnectorClient:
    client = turn_context.turn_state.get(turn_context.adapter.BOT_CONNECTOR_CLIENT_KEY)
    if client is None:
        raise RuntimeError("no connector client on this turn")
    return tune(client, timeout)


def outgoing(activity: Activity, reference: dict[str, Any]) -> Activity:
    """Address a new message to a stored conversation (not as a reply to anything)."""
    ref = reference_from(reference)
    activity.channel_id = ref.channel_id
    activity.service_url = ref.service_url
    activity.conversation = ref.conversation
    activity.from_property = ref.bot
    activity.locale = ref.locale
    return activity


async def send_personal(turn_context: TurnContext, activities: list[Activity]) -> str:
    """Open (or find: Teams answers with the existing one) the 1:1 chat between the bot and the
    sender of this turn's activity, and send `activities` there. Returns that conversation's id."""
    incoming = turn_context.activity
    client = connector(turn_context)
    tenant = (incoming.conversation.tenant_id if incoming.conversation else None) or (
        (incoming.channel_data or {}).get("tenant", {}).get("id")
    )
    params = ConversationParameters(
        is_group=False,
        bot=incoming.recipient,
        members=[ChannelAccount(id=incoming.from_property.id)],
        tenant_id=tenant,
        channel_data={"tenant": {"id": tenant}},
    )
    created = await client.conversations.create_conversation(params)
    conversation = ConversationAccount(id=created.id, conversation_type="personal", tenant_id=tenant)
    for activity in activities:
        activity.conversation = conversation
        activity.from_property = incoming.recipient
        activity.recipient = ChannelAccount(id=incoming.from_property.id)
        activity.channel_id = incoming.channel_id
        activity.service_url = incoming.service_url
        await client.conversations.send_to_conversation(created.id, activity)
    return str(created.id)


_SERIALIZER: Serializer | None = None


def sent_bytes(activity: Activity) -> int:
    """The size of `activity` exactly as the connector client sends it: msrest serialises the
    model and `json.dumps` it (ASCII only: every non-ASCII character becomes a \\uXXXX escape)."""
    global _SERIALIZER
    if _SERIALIZER is None:
        models = {k: v for k, v in schema_models.__dict__.items() if isinstance(v, type)}
        _SERIALIZER = Serializer(models)  # type: ignore[no-untyped-call]  # msrest is untyped
    body = _SERIALIZER.body(activity, "Activity")  # type: ignore[no-untyped-call]  # msrest is untyped
    return len(json.dumps(body))


def card_activity(card: dict[str, Any], summary: str | None = None) -> Activity:
    return Activity(
        type=ActivityTypes.message,
        attachments=[Attachment(content_type=CONTENT_TYPE, content=card)],
        summary=summary,
    )


@dataclass(frozen=True)
class Failure:
    """A failed connector call: retry it (after `retry_after` if Teams said so) or give up."""

    retryable: bool
    code: str  # e.g. "http_429", "http_403", "timeout": safe to record, never a secret
    retry_after: float | None = None
    ambiguous: bool = False  # the call may have taken effect (timeout after sending)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def status_of(exc: BaseException) -> int:
    """The connector's HTTP status for a failed call (0: not an HTTP answer)."""
    if isinstance(exc, HttpOperationError) and exc.response is not None:
        return int(getattr(exc.response, "status_code", 0) or 0)
    return 0


def error_code(exc: BaseException) -> str:
    """The connector's own error code (`{"error": {"code": ...}}`), e.g. "ConversationNotFound"."""
    inner = getattr(getattr(exc, "error", None), "error", None)
    code = getattr(inner, "code", None)
    return code if isinstance(code, str) else ""


# Connector answers that mean the conversation itself is gone, whatever was being sent.
GONE_CODES = ("ConversationNotFound", "BotNotInConversationRoster", "ConversationBlocked")
TOO_BIG_CODE = "MessageSizeTooBig"


def gone_code(exc: BaseException, stage: str) -> str | None:
    """A code when the answer says the bot may never post to this conversation again: any 403
    (removed, blocked, app uninstalled), a 404 for a new message (the conversation does not
    exist), or a 404 naming the conversation. A 404 for an update or a reply can mean only that
    message was deleted: that closes the target of one request, not the conversation."""
    status = status_of(exc)
    if status == 403 or (status == 404 and (stage == "post" or error_code(exc) in GONE_CODES)):
        return f"http_{status}"
    return None


def too_big(exc: BaseException) -> bool:
    """413 `MessageSizeTooBig`: the activity is larger than the connector accepts."""
    return status_of(exc) == 413 or error_code(exc) == TOO_BIG_CODE


def classify(exc: BaseException) -> Failure | None:
    """None for errors that are not about the connector (bugs): let them raise."""
    if isinstance(exc, HttpOperationError) and exc.response is not None:
        status = int(getattr(exc.response, "status_code", 0) or 0)
        headers = getattr(exc.response, "headers", {}) or {}
        code = f"http_{status}"
        if status == 429:
            return Failure(True, code, parse_retry_after(headers.get("Retry-After")))
        if status >= 500 or status == 408:
            return Failure(True, code, parse_retry_after(headers.get("Retry-After")))
        return Failure(False, code)
    if isinstance(exc, ClientRequestError):
        text = f"{exc} {getattr(exc, 'inner_exception', None)!r}".lower()
        if "connecttimeout" in text:
            return Failure(True, "timeout")  # never reached the connector
        if "timeout" in text or "timed out" in text:
            return Failure(True, "timeout", ambiguous=True)
        return Failure(True, "connection_error")
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return Failure(
            True,
            "timeout" if isinstance(exc, TimeoutError) else "connection_error",
            ambiguous=isinstance(exc, TimeoutError),
        )
    return None
