"""The Slack adapter: a slack-bolt AsyncApp mounted on approvalbot's aiohttp server.

`POST /slack/events` takes events, interactivity and slash commands alike; bolt
checks Slack's signature (and rejects requests older than five minutes) before
any listener runs. With SLACK_APP_TOKEN the same app also runs over Socket Mode.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from redis.asyncio import Redis
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from approvalbot.service import ApprovalService
from approvalbot.slack import blocks, listeners
from approvalbot.slack.client import error_code, make_client
from approvalbot.slack.identity import SlackDirectory
from approvalbot.slack.resolve import SlackIdentities, Unrecognised, Who
from approvalbot.slack.settings import EVENTS_PATH, SlackConfig
from approvalbot.slack.socket_mode import connect
from approvalbot.slack.workspaces import ActingUser
from approvalbot.store import keys
from approvalbot.web.context import SERVICES
from approvalbot.web.errors import error_response

log = logging.getLogger("approvalbot.slack")

# Interactive payloads carry the whole message they came from; allow more than the API's JSON limit.
MAX_BODY = 1024 * 1024
SLACK = web.AppKey("slack", object)
# One identity.refused record per identity and reason per window: refusals are audited, not a flood.
REFUSED_WINDOW = 60


class SlackAdapter:
    def __init__(self, config: SlackConfig, service: ApprovalService, redis: Redis):
        self.config = config
        self.service = service
        self.redis = redis
        # Listeners must answer within Slack's 3 s (a modal's trigger_id expires): wait little.
        self.client = make_client(config, timeout=5, max_wait=1)
        self.people = SlackDirectory(self.client, redis)
        self.identities = SlackIdentities(self.people, service.people, config.allowed_teams)
        self.bolt = AsyncApp(
            name="approvalbot",
            client=self.client,
            signing_secret=config.signing_secret.get_secret_value() if config.signing_secret else "",
            process_before_response=False,
            logger=logging.getLogger("approvalbot.slack.bolt"),
        )
        self.verifier = SignatureVerifier(config.signing_secret.get_secret_value()) if config.signing_secret else None
        listeners.register(self.bolt, self)
        self.socket_mode: AsyncSocketModeHandler | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """POST /slack/events: signature check, dispatch, and the ack as the HTTP answer.

        The signature (and its age) is checked on the raw bytes before anything is parsed:
        bolt parses the body before verifying it, so a body that is not UTF-8, or not the
        JSON it claims to be, would otherwise be answered with a 500, signed or not. A
        signed body bolt cannot read (a block_actions without actions, say) is a 400.
        """
        request = request.clone(client_max_size=MAX_BODY)
        if not self.signed(await request.read(), request.headers):
            return web.json_response({"error": "invalid request"}, status=401)  # what bolt answers
        try:
            answer = await self.bolt.async_dispatch(await to_bolt_request(request))
        except (LookupError, ValueError, AttributeError, TypeError) as exc:
            log.warning("signed Slack request not shaped like any Slack sends (%s)", exc.__class__.__name__)
            return error_response(400, "invalid_body", "the body is not a Slack request")
        return await to_aiohttp_response(answer)

    def signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        if self.verifier is None:  # no signing secret: nothing from Slack can be verified
            return False
        try:
            return self.verifier.is_valid_request(body, headers)
        except ValueError:  # a timestamp that is not a number
            return False

    async def identify(self, acting: ActingUser) -> Who | Unrecognised:
        """The person behind a payload's user, or why approvalbot will not act for them."""
        return await self.identities.resolve(acting)

    async def refused(self, unrecognised: Unrecognised) -> None:
        """Audit a turned-away identity as `identity.refused`, once per identity and reason per minute."""
        flag = f"{keys.PREFIX}slack:refused:{unrecognised.refusal.value}:{unrecognised.identity.key}"
        if not await self.redis.set(flag, "1", nx=True, ex=REFUSED_WINDOW):
            return
        try:
            await self.service.identity_refused(
                unrecognised.identity, unrecognised.refusal.value, unrecognised.detail, unrecognised.email
            )
        except BaseException:
            await self.redis.delete(flag)  # not recorded: the next refusal must try again
            raise

    async def notify(self, client: AsyncWebClient, user: str, channel: str | None, text: str) -> None:
        """An ephemeral note to one user where they clicked; their DM with the app otherwise.

        Best effort: a note that cannot be delivered is logged, not raised. Listeners notify
        after their ack, and bolt drops the ack of a listener that fails soon after it, so
        Slack would see the click go unanswered.
        """
        message = blocks.notice(text)
        if channel:
            try:
                await client.chat_postEphemeral(channel=channel, user=user, text=message.text, blocks=message.blocks)
                return
            except SlackApiError as exc:
                log.info("ephemeral to %s in %s failed (%s); using a DM", user, channel, error_code(exc))
        try:
            opened = await client.conversations_open(users=user)
            await client.chat_postMessage(channel=opened["channel"]["id"], text=message.text, blocks=message.blocks)
        except SlackApiError as exc:
            log.warning("could not tell %s (no ephemeral, no DM: %s)", user, error_code(exc))

    async def start_socket_mode(self) -> None:
        self.socket_mode = await connect(self)

    async def stop_socket_mode(self) -> None:
        if self.socket_mode is not None:
            await self.socket_mode.close_async()  # type: ignore[no-untyped-call]  # unannotated in slack_bolt
            self.socket_mode = None


def mount(app: web.Application, config: SlackConfig | None = None) -> bool:
    """Add Slack to the web app when SLACK_BOT_TOKEN is set; returns whether Slack is on.

    The shared services come from the app (`web.context`). Raises ConfigError (from
    approvalbot.runtime) when the Slack settings are incomplete.
    """
    ctx = app[SERVICES]
    config = config or SlackConfig.from_settings(ctx.settings)
    if config is None:
        return False
    adapter = SlackAdapter(config, ctx.service, ctx.redis)
    app[SLACK] = adapter
    ctx.extras["slack"] = adapter
    if config.http_events:
        app.router.add_post(EVENTS_PATH, adapter.handle)
    if config.socket_mode:

        async def socket_mode(app: web.Application) -> AsyncIterator[None]:
            await adapter.start_socket_mode()
            yield
            await adapter.stop_socket_mode()

        app.cleanup_ctx.append(socket_mode)
    return True
