"""A small Microsoft Graph client: app-only tokens per tenant, and paged GETs. Used only to read replies back.

The Bot Connector lets a bot post into a channel but not read it, so `audit verify
--witness teams` reads the card threads through Graph
(`GET /teams/{team-id}/channels/{channel-id}/messages/{message-id}/replies`,
https://learn.microsoft.com/en-us/graph/api/chatmessage-list-replies), which needs the
application permission ChannelMessage.Read.All, or the resource-specific consent
ChannelMessage.Read.Group granted in the team. Tokens come from the client-credentials
flow of the conversation's tenant, with the bot's app id and secret.

Bounded: a timeout per call, at most `MAX_PAGES` pages per listing, and a 429 is waited
out (at most `MAX_RETRY_WAIT` seconds, `RETRIES` times). The `@odata.nextLink` of a page
is followed only on the Graph origin configured, so the token never goes anywhere else.
The token and the secret are never logged, put in an error, or shown in a repr.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import SecretStr

MAX_PAGES = 40
PAGE = 50  # the largest $top the replies listing accepts
RETRIES = 3
MAX_RETRY_WAIT = 30.0
TIMEOUT = 20.0


class GraphError(Exception):
    """A Graph or token call failed; `code` is short and safe to show (e.g. "http_403", "token_http_401")."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class GraphClient:
    base_url: str  # e.g. https://graph.microsoft.com/v1.0
    token_url: str  # with "{tenant}"
    client_id: str
    secret: SecretStr = field(repr=False)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def scope(self) -> str:
        """App-only tokens ask for the Graph resource's `.default` scope (what the admin granted)."""
        return f"{origin(self.base_url)}/.default"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def token(self, tenant: str) -> str:
        cached = self._tokens.get(tenant)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        form = {
            "client_id": self.client_id,
            "client_secret": self.secret.get_secret_value(),
            "scope": self.scope,
            "grant_type": "client_credentials",
        }
        url = self.token_url.replace("{tenant}", quote(tenant, safe=""))
        try:
            async with self.session().post(url, data=form) as resp:
                if resp.status != 200:
                    raise GraphError(f"token_http_{resp.status}")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise GraphError("token_unreachable") from None
        value = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value:
            raise GraphError("token_malformed")
        lifetime = answer.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, (int, float, str)) and str(lifetime).isdigit() else 300.0
        self._tokens[tenant] = (value, time.monotonic() + max(seconds - 60, 30))
        return value

    async def pages(self, tenant: str, path: str) -> AsyncIterator[dict[str, Any]]:
        """The `value` items of a listing at `path` (below the base URL), page by page, bounded."""
        url: str | None = f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"
        for _ in range(MAX_PAGES):
            if url is None:
                return
            page = await self._get(tenant, url)
            for item in page.get("value") or []:
                if isinstance(item, dict):
                    yield item
            link = page.get("@odata.nextLink")
            url = link if isinstance(link, str) and origin(link) == origin(self.base_url) else None

    async def _get(self, tenant: str, url: str) -> dict[str, Any]:
        for attempt in range(RETRIES + 1):
            headers = {"Authorization": f"Bearer {await self.token(tenant)}", "Accept": "application/json"}
            try:
                async with self.session().get(url, headers=headers, allow_redirects=False) as resp:
                    if resp.status == 429 and attempt < RETRIES:
                        await asyncio.sleep(_retry_after(resp.headers.get("Retry-After")))
                        continue
                    if resp.status == 401 and attempt == 0:
                        self._tokens.pop(tenant, None)  # expired early: one fresh token
                        continue
                    if resp.status != 200:
                        raise GraphError(f"http_{resp.status}")
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                raise GraphError("unreachable") from None
            return body if isinstance(body, dict) else {}
        raise GraphError("http_429")


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.0), MAX_RETRY_WAIT)
    except ValueError:
        return 1.0
