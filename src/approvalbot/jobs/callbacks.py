"""Tell an agent's callback URL the final outcome: signed, SSRF-safe, bounded, retried with backoff by RQ.

The signature header is `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the
same construction Stripe and Slack use, so receivers can reject replays by age. Each
agent has its own secret (`agents add` shows it, `agents rotate-secret` replaces it), so
one agent's receiver cannot forge callbacks for another; agents created before per-agent
secrets keep the shared APPROVALBOT_CALLBACK_SECRET.

The body carries the live grant, so where it goes is checked when it is sent:

1. https only, unless the host is in APPROVALBOT_CALLBACK_ALLOW (core.callback_urls);
2. the host is resolved once, with a time bound, and refused if ANY address is loopback,
   private, link-local, unique-local, multicast, reserved, unspecified or a metadata service;
3. the connection goes to exactly the addresses checked (a resolver that only returns
   them), with the URL's host kept for the Host header, SNI and certificate checks, so a
   DNS answer that changes between check and connect (rebinding) gains nothing;
4. no redirects, one time bound for the whole exchange, and at most MAX_RESPONSE_BYTES
   of the answer read.

A refused destination, a redirect, a receiver's 4xx and retries running out each write
one `callback.failed` audit record (`error` is a reason code) and end the job; 5xx and
network errors are retried by RQ.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from redis.asyncio import Redis
from rq import Retry, get_current_job
from yarl import URL

from approvalbot.config import Settings, load_settings
from approvalbot.core.callback_urls import AllowList, IPAddress, address_problem, name_problem, parse_literal
from approvalbot.core.events import EventType, event_for
from approvalbot.core.models import Actor, ApprovalRequest, Channel
from approvalbot.keyfiles import callback_secret as shared_callback_secret
from approvalbot.store.audit import AuditLog
from approvalbot.store.connections import async_twin
from approvalbot.store.identities import IdentityStore
from approvalbot.store.requests import RequestStore

log = logging.getLogger("approvalbot.callbacks")

SIGNATURE_HEADER = "X-Approvalbot-Signature"
RETRY = Retry(max=8, interval=[1, 2, 5, 10, 30, 60, 120, 300])
DNS_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 64 * 1024
ACTOR = Actor(kind="system", id="callbacks", channel=Channel.SYSTEM)
# getaddrinfo cannot be cancelled; its own small pool keeps a hung lookup from holding up the event
# loop's shutdown (asyncio.run waits for the default executor, not for this one).
_DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="approvalbot-dns")


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, tolerance: int = 300) -> bool:
    """For receivers (and tests): check the signature and that it is recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


class DestinationRefused(Exception):
    """The callback must not be sent there; `code` is the reason recorded in `callback.failed`."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class CallbackError(Exception):
    """A failure worth retrying (5xx, 408, 429, network, DNS); RQ retries the job."""


@dataclass(frozen=True)
class Destination:
    """A callback URL's host and port, with the addresses it was checked against (connect only to these)."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


async def resolve(host: str, port: int, seconds: float = DNS_TIMEOUT) -> list[IPAddress]:
    """Every address the host resolves to (socket.getaddrinfo, bounded by `seconds`)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.run_in_executor(_DNS_POOL, socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM), seconds
        )
    except TimeoutError:
        raise CallbackError("dns_timeout") from None
    except OSError:
        raise CallbackError("dns_failed") from None
    found: list[IPAddress] = []
    for _, _, _, _, sockaddr in infos:
        address = parse_literal(str(sockaddr[0]))  # None for anything that is not IPv4 or IPv6
        if address is not None and address not in found:
            found.append(address)
    if not found:
        raise CallbackError("dns_failed")
    return found


async def check_destination(url: URL, allow: AllowList, dns_timeout: float = DNS_TIMEOUT) -> Destination:
    """Where the callback may connect, or DestinationRefused; raises CallbackError if DNS fails."""
    host = url.raw_host or ""
    if url.scheme not in ("http", "https") or not host:
        raise DestinationRefused("invalid_url")
    port = url.port or (443 if url.scheme == "https" else 80)
    host_allowed = allow.allows_host(host)
    if url.scheme != "https" and not host_allowed:
        raise DestinationRefused("https_required")
    literal = parse_literal(host)
    if literal is None and not host_allowed and (problem := name_problem(host)):
        raise DestinationRefused(problem)
    addresses = [literal] if literal is not None else await resolve(host, port, dns_timeout)
    for address in addresses:
        problem = address_problem(address)
        if problem and not (host_allowed or allow.allows_address(address)):
            raise DestinationRefused(problem)  # ANY forbidden answer refuses: never pick the "good" one
    return Destination(host, port, tuple(addresses))


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one callback: answers only with the addresses already checked."""

    def __init__(self, destination: Destination):
        self.destination = destination

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.rstrip(".").lower() != self.destination.host.rstrip(".").lower():
            raise OSError(f"refusing to resolve {host!r}: not the checked callback host")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.destination.addresses
        ]

    async def close(self) -> None:
        pass


def tls_context() -> ssl.SSLContext:
    """Certificate and host name checks as any https client does (tests replace this with their own CA)."""
    return ssl.create_default_context()


async def post(url: URL, destination: Destination, body: bytes, headers: dict[str, str], seconds: float) -> int:
    """POST once to the pinned destination; the receiver's status code."""
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(destination), use_dns_cache=False, force_close=True, limit=1, ssl=tls_context()
    )
    bounds = aiohttp.ClientTimeout(total=seconds, sock_connect=min(seconds, 5.0))
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=bounds, trust_env=False) as http,
            http.post(url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            await response.content.read(MAX_RESPONSE_BYTES)  # bounded; the rest goes with the connection
            return response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CallbackError(type(exc).__name__) from None


async def signing_secret(redis: Redis, settings: Settings, agent_id: str) -> bytes:
    own = await IdentityStore(redis).callback_secret(agent_id)
    return own.encode() if own is not None else shared_callback_secret(settings)


async def record_failure(redis: Redis, request: ApprovalRequest, code: str, host: str) -> None:
    """One audited `callback.failed`: the reason code and the host, never the URL's path or query."""
    log.warning("callback for %s not delivered: %s", request.id, code)
    requests = RequestStore(redis)
    event = event_for(request, EventType.CALLBACK_FAILED, ACTOR, datetime.now(UTC), None, error=code, host=host)
    committed = await requests.record(request, [event])
    if committed is not None:
        await AuditLog(redis).seal_committed(committed)


async def send(redis: Redis, settings: Settings, request: ApprovalRequest, last_attempt: bool) -> int | str:
    """Check, sign and POST one final request; the receiver's status, or the code of a recorded failure."""
    assert request.callback_url is not None
    url = URL(request.callback_url)
    host = url.raw_host or ""
    try:
        destination = await check_destination(url, settings.callback_allow_list)
    except DestinationRefused as refused:
        await record_failure(redis, request, refused.code, host)
        return refused.code
    body = request.model_dump_json(exclude={"version"}).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "approvalbot-callback",
        SIGNATURE_HEADER: sign(await signing_secret(redis, settings, request.agent_id), body),
        "X-Approvalbot-Delivery": request.id,
    }
    try:
        status = await post(url, destination, body, headers, settings.callback_timeout)
        if 200 <= status < 300:
            return status
        if 300 <= status < 400:
            raise DestinationRefused("redirect_refused")  # a callback answers where it was registered
        if 400 <= status < 500 and status not in (408, 429):
            raise DestinationRefused(f"http_{status}")  # the receiver said no; retrying will not change that
        raise CallbackError(f"http_{status}")
    except DestinationRefused as refused:
        await record_failure(redis, request, refused.code, host)
        return refused.code
    except CallbackError as exc:
        if last_attempt:
            await record_failure(redis, request, f"{exc}_retries_exhausted", host)
        raise


async def deliver_callback(request_id: str) -> Any:
    """RQ job (on the callbacks queue). Raises CallbackError so RQ retries; else a status or a failure code."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver_callback runs only as an RQ job (it reads through the job's connection)")
    settings = load_settings()
    redis = async_twin(job.connection)
    try:
        request = await RequestStore(redis).get(request_id)
        if request is None or not request.callback_url:
            return 0
        return await send(redis, settings, request, last_attempt=not job.retries_left)
    finally:
        await redis.aclose()
