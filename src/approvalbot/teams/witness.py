"""Teams card threads as audit witnesses, read back through Microsoft Graph (`teams.graph`).

Each mirrored record is a reply card (`cards.audit_card`) whose first block shows `#<seq>`
and whose last shows `hash <hash12>`. Only replies sent by our bot's app id count, read
structurally from the card (not by searching its text, which holds people's reasons).
A thread is found from the delivery state (target = the conversation's hash) and the
stored conversation reference, which gives the channel id and the team's group id
(`channelData.team.aadGroupId`, remembered when the bot is added). Group chats have no
reply threads in Graph's channel API and are listed as unread, as are conversations
whose reference (or team group id) is unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis

from approvalbot.audit.witness import HASH_PREFIX, Unread, Witnessed
from approvalbot.channels import WitnessUnavailable
from approvalbot.store.deliveries import PostedThread
from approvalbot.teams.cards import CONTENT_TYPE
from approvalbot.teams.graph import GraphClient, GraphError
from approvalbot.teams.references import CHANNEL, ReferenceStore
from approvalbot.teams.settings import TeamsSettings

SEQ_TEXT = re.compile(r"#(\d+)")
HASH_TEXT = re.compile(rf"hash ([0-9a-f]{{{HASH_PREFIX}}})")

NEEDS = (
    "reading Teams replies back needs Microsoft Graph: set MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD "
    "(the bot's app registration and a client secret; MICROSOFT_APP_TYPE MultiTenant or SingleTenant), and "
    "grant that app ChannelMessage.Read.All (application permission, admin consent) or ChannelMessage.Read.Group "
    "(resource-specific consent in each team). Other clouds: APPROVALBOT_TEAMS_GRAPH_URL and "
    "APPROVALBOT_TEAMS_GRAPH_TOKEN_URL"
)


class TeamsWitness:
    def __init__(self, ts: TeamsSettings, graph: GraphClient):
        self.ts = ts
        self.graph = graph

    async def close(self) -> None:
        await self.graph.close()

    async def witnessed(self, redis: Redis, threads: Sequence[PostedThread]) -> AsyncIterator[Witnessed | Unread]:
        references = ReferenceStore(redis)
        for thread in threads:
            ref = await references.get(thread.target)
            where = f"{ref.display if ref else thread.target}/{thread.state.message_id}"
            if ref is None:
                yield Unread(thread.request_id, where, "conversation_unknown")
                continue
            if ref.kind != CHANNEL:
                yield Unread(thread.request_id, where, "not_a_channel")
                continue
            if not ref.aad_group_id:
                yield Unread(thread.request_id, where, "team_group_id_unknown")
                continue
            if not (ref.tenant_id and self.ts.allows(ref.tenant_id)):
                yield Unread(thread.request_id, where, "tenant_not_allowed")
                continue
            channel = ref.id.split(";", 1)[0]
            path = (
                f"teams/{quote(ref.aad_group_id, safe='')}/channels/{quote(channel, safe=':@')}"
                f"/messages/{quote(thread.state.message_id, safe='')}/replies?$top=50"
            )
            try:
                async for message in self.graph.pages(ref.tenant_id, path):
                    found = self._witness(message, thread.request_id, ref.display)
                    if found is not None:
                        yield found
            except GraphError as exc:
                yield Unread(thread.request_id, where, exc.code)

    def _witness(self, message: dict[str, Any], request_id: str, display: str) -> Witnessed | None:
        """The record a reply witnesses: sent by our bot, not deleted, an audit card with a seq."""
        if message.get("deletedDateTime"):
            return None
        sender = (message.get("from") or {}).get("application") or {}
        if str(sender.get("id") or "").lower() != self.ts.app_id.lower():
            return None
        for attachment in message.get("attachments") or []:
            if not isinstance(attachment, dict) or attachment.get("contentType") != CONTENT_TYPE:
                continue
            shown = _record_of(attachment.get("content"))
            if shown is not None:
                seq, digest = shown
                return Witnessed(request_id, seq, digest, f"{display}/{message.get('id', '')}")
        return None


def _record_of(content: Any) -> tuple[int, str] | None:
    """(seq, hash prefix or '') from an audit card: Graph gives the card as a JSON string."""
    try:
        card = json.loads(content) if isinstance(content, str) else content
        body = card["body"]
        seq_text = body[0]["columns"][0]["items"][0]["text"]
        hash_text = body[-1]["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    seq = SEQ_TEXT.fullmatch(str(seq_text))
    if seq is None:
        return None
    digest = HASH_TEXT.fullmatch(str(hash_text))
    return int(seq.group(1)), digest.group(1) if digest else ""


def build(ts: TeamsSettings, graph_url: str, token_url: str) -> TeamsWitness:
    if not ts.enabled:
        raise WitnessUnavailable(f"Teams is off. {NEEDS}")
    secret = ts.app_password.get_secret_value()
    if not ts.app_id or not secret or ts.app_type.lower() not in ("multitenant", "singletenant"):
        raise WitnessUnavailable(NEEDS)
    if not graph_url.startswith(("https://", "http://")) or "{tenant}" not in token_url:
        raise WitnessUnavailable(
            "APPROVALBOT_TEAMS_GRAPH_URL must be an http(s) URL and APPROVALBOT_TEAMS_GRAPH_TOKEN_URL must contain "
            "{tenant}"
        )
    return TeamsWitness(ts, GraphClient(graph_url, token_url, ts.app_id, ts.app_password))
