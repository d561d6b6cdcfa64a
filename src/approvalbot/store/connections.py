"""The one connection factory: every process, queue and CLI command reaches Redis through here.

`REDIS_URL` may name a server (`redis://`, `rediss://` for TLS, ACL `user:password@`) or a
Sentinel-managed primary (`redis+sentinel://[user:pass@]host:port[,host:port…]/SERVICE[/DB]`).
Building clients in one place is what makes a failover, a private CA or an ACL user apply to
the web API, the long-poll subscription, RQ and the ticker alike; a client built elsewhere
would silently keep talking to a demoted primary or skip TLS.

Commands are retried on connection errors with a capped backoff that outlasts a Sentinel
failover window. That is safe for every write the service makes: a commit carries the request's
version (compare-and-set, and commit.lua recognises its own already-applied write), sealing is
deterministic, and creations carry idempotency keys. See docs/redis.md.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis as sync_redis
import redis.asyncio.retry as async_retry
import redis.asyncio.sentinel as async_sentinel
import redis.retry as sync_retry
import redis.sentinel as sync_sentinel
from redis.asyncio import ConnectionPool, Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from approvalbot.store.pool import WaitingPool

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
# ~15 s of retries (50 ms doubling, capped at 2 s): longer than Sentinel's default failover
# (down-after 5 s plus an election) so a command issued during a promotion lands on the new primary.
RETRY_ATTEMPTS = 12
RETRY_BACKOFF = (2.0, 0.05)  # cap, base (seconds)
RETRIED_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
# Environment variables for private CAs and client certificates (TLS URLs only).
TLS_ENV = {
    "ssl_ca_certs": "APPROVALBOT_REDIS_CA",
    "ssl_certfile": "APPROVALBOT_REDIS_CERT",
    "ssl_keyfile": "APPROVALBOT_REDIS_KEY",
}


class RedisUrlError(ValueError):
    """REDIS_URL (or a TLS setting) is malformed; the message names the part, never the password."""


@dataclass(frozen=True)
class RedisTarget:
    """What REDIS_URL names, parsed and checked once at start-up."""

    url: str = field(repr=False)  # may hold a password
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def describe(self) -> str:
        """Where it points, for messages and logs: no credentials."""
        if self.is_sentinel:
            nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"Sentinel service {self.service!r} via {nodes}"
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix socket {parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise RedisUrlError(f"REDIS_URL: {what} has no valid port ({text or 'empty'!r})")
    return int(text)


def _tls_options(env: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for option, name in TLS_ENV.items():
        value = env.get(name)
        if value:
            if not os.path.isfile(value):
                raise RedisUrlError(f"{name}: no such file: {value}")
            options[option] = value
    if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
        raise RedisUrlError("APPROVALBOT_REDIS_CERT and APPROVALBOT_REDIS_KEY must be set together")
    return options


def parse(url: str, env: dict[str, str] | None = None) -> RedisTarget:
    """Validate REDIS_URL; raises RedisUrlError with a one-line reason."""
    env = dict(os.environ) if env is None else env
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise RedisUrlError(f"REDIS_URL must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    tls_wanted = scheme.startswith("rediss")
    tls = _tls_options(env)
    if tls and not tls_wanted:
        raise RedisUrlError("APPROVALBOT_REDIS_CA/CERT/KEY are set but REDIS_URL is not rediss:// (TLS)")
    if tls_wanted:
        tls = {"ssl_cert_reqs": "required", **tls}
    if scheme.endswith("+sentinel"):
        return _parse_sentinel(url, rest, {"ssl": True, **tls} if tls_wanted else tls)
    try:
        parts = urlsplit(url)
        if scheme != "unix":
            if not parts.hostname:
                raise RedisUrlError("REDIS_URL has no host")
            _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
        sync_redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except RedisUrlError:
        raise
    except ValueError as exc:
        raise RedisUrlError(f"REDIS_URL is malformed: {_first_line(exc)}") from None
    return RedisTarget(url=url, tls=tls)


def _parse_sentinel(url: str, rest: str, tls: dict[str, Any]) -> RedisTarget:
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    nodes, slash, path = hostpart.partition("/")
    if not nodes:
        raise RedisUrlError("REDIS_URL: redis+sentinel:// needs at least one sentinel host:port")
    sentinels = []
    for node in nodes.split(","):
        host, colon, port = node.rpartition(":")
        if not colon or not host:
            raise RedisUrlError(f"REDIS_URL: sentinel {node!r} must be host:port")
        sentinels.append((host.strip("[]"), _port(port, f"sentinel {host}")))
    segments = [s for s in path.split("?")[0].split("/") if s] if slash else []
    if not segments:
        raise RedisUrlError("REDIS_URL: redis+sentinel:// needs the service name: …/SERVICE[/DB]")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise RedisUrlError("REDIS_URL: the path after the sentinels must be /SERVICE or /SERVICE/DB")
    db = int(segments[1]) if len(segments) == 2 else 0
    return RedisTarget(
        url=url,
        sentinels=tuple(sentinels),
        service=unquote(segments[0]),
        db=db,
        username=username,
        password=password,
        tls=tls,
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


# How many times this process saw a Redis connection fail, or the primary change address. Memory
# about the server's data (the audit chain length this process sealed, a token found unknown)
# is only good within one epoch: after a failover the new primary may lack the old one's last writes.
_epoch = 0


def epoch() -> int:
    """Bumped on every connection error (before any retry) and on every change of primary."""
    return _epoch


def _bump() -> None:
    global _epoch
    _epoch += 1


class _SyncRetry(sync_retry.Retry):
    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def counted(*failure: Any) -> Any:
            _bump()
            return fail(*failure)

        return super().call_with_retry(do, counted, *args, **kwargs)


class _AsyncRetry(async_retry.Retry):
    async def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        async def counted(*failure: Any) -> Any:
            _bump()
            return await fail(*failure)

        return await super().call_with_retry(do, counted, *args, **kwargs)


def _retry_sync(attempts: int = RETRY_ATTEMPTS) -> sync_retry.Retry:
    cap, base = RETRY_BACKOFF
    return _SyncRetry(ExponentialWithJitterBackoff(cap=cap, base=base), attempts, RETRIED_ERRORS)


def _retry_async(attempts: int = RETRY_ATTEMPTS) -> async_retry.Retry:
    cap, base = RETRY_BACKOFF
    return _AsyncRetry(ExponentialWithJitterBackoff(cap=cap, base=base), attempts, RETRIED_ERRORS)


def _node_options(target: RedisTarget) -> dict[str, Any]:
    """Options for a data node reached through Sentinel (credentials, db, TLS)."""
    options: dict[str, Any] = {"db": target.db, **target.tls}
    if target.username:
        options["username"] = target.username
    if target.password is not None:
        options["password"] = target.password
    return options


def _is_primary(role: Any) -> bool:
    first = role[0] if isinstance(role, list | tuple) and role else role
    return (first.decode() if isinstance(first, bytes) else str(first)) == "master"


_primary: tuple[str, int] | None = None  # the last primary this process connected to through Sentinel


def _connected_to_primary(address: Any) -> None:
    global _primary
    now = (str(address[0]), int(address[1]))
    if _primary is not None and _primary != now:
        _bump()
    _primary = now


class _PrimaryOnly(sync_sentinel.SentinelManagedConnection):
    """Every connect asks Sentinel for the primary and checks ROLE on it.

    A lagging sentinel can still name the old address, where a restarted node may already serve
    (stale, empty) data as a replica: reading there would answer 404s and unknown tokens. redis-py
    also reconnects on its own inside `send_packed_command`, straight to the address it cached
    (`connect_check_health`), which after a failover is the old primary's: that path is routed
    through Sentinel and ROLE too.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if getattr(self, "_sock", None) is None:  # not connected: Sentinel, then connect_to below
            self.connect()  # type: ignore[no-untyped-call]

    def connect_to(self, address: Any) -> None:
        self.host, self.port = address
        # The plain connect to this address (the base class's, not the override above).
        super(sync_sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )
        if self.connection_pool.is_master:
            self.send_command("ROLE")  # type: ignore[no-untyped-call]
            if not _is_primary(self.read_response()):
                self.disconnect()  # type: ignore[no-untyped-call]
                raise RedisConnectionError(f"{address[0]}:{address[1]} is not the primary (yet)")
            _connected_to_primary(address)


class _PrimaryOnlySSL(_PrimaryOnly, sync_redis.SSLConnection):
    pass


class _AsyncPrimaryOnly(async_sentinel.SentinelManagedConnection):
    """The asyncio twin of `_PrimaryOnly` (redis-py's asyncio reconnect bypasses Sentinel the same way)."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]

    async def connect_to(self, address: Any) -> None:
        self.host, self.port = address
        await super(async_sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )
        if self.connection_pool.is_master:
            await self.send_command("ROLE")
            if not _is_primary(await self.read_response()):
                await self.disconnect()
                raise RedisConnectionError(f"{address[0]}:{address[1]} is not the primary (yet)")
            _connected_to_primary(address)


class _AsyncPrimaryOnlySSL(_AsyncPrimaryOnly, async_sentinel.SentinelManagedSSLConnection):
    pass


# Which target built which pool, so an RQ job's connection can get an asyncio twin of the same kind.
_TARGETS: weakref.WeakKeyDictionary[Any, RedisTarget] = weakref.WeakKeyDictionary()


def sync_client(
    target: RedisTarget, *, decode_responses: bool = False, retry: bool = True, **options: Any
) -> sync_redis.Redis:
    """A synchronous client (RQ, the worker, probes): bytes in and out unless asked otherwise."""
    kwargs: dict[str, Any] = {"decode_responses": decode_responses, **options}
    if retry:
        kwargs["retry"] = _retry_sync()
    else:
        kwargs["retry"] = _retry_sync(0)
    if target.is_sentinel:
        sentinel = sync_sentinel.Sentinel(  # type: ignore[no-untyped-call]  # unannotated in redis-py 8
            list(target.sentinels),
            sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2, **target.tls},
        )
        kwargs["connection_class"] = _PrimaryOnlySSL if target.tls else _PrimaryOnly
        client = cast(
            sync_redis.Redis,
            sentinel.master_for(target.service, **_node_options(target), **kwargs),  # type: ignore[no-untyped-call]
        )
    else:
        client = sync_redis.Redis.from_url(target.url, **target.tls, **kwargs)
    _TARGETS[client.connection_pool] = target
    return client


def async_client(
    target: RedisTarget,
    *,
    max_connections: int | None = None,
    retry: bool = True,
    pool_wait: float | None = None,
    **options: Any,
) -> Redis:
    """An asyncio client (web, ticker, jobs, CLI): bytes in and out, following the primary.

    With `pool_wait`, a full pool makes callers wait that long for a connection and then raise
    `PoolExhausted` (the web answers 503), instead of opening connections without bound. Sentinel
    deployments keep redis-py's own pool, which follows promotions.
    """
    kwargs: dict[str, Any] = dict(options)
    kwargs["retry"] = _retry_async() if retry else _retry_async(0)
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    if target.is_sentinel:
        sentinel = async_sentinel.Sentinel(  # type: ignore[no-untyped-call]  # unannotated in redis-py 8
            list(target.sentinels),
            sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2, **target.tls},
        )
        kwargs["connection_class"] = _AsyncPrimaryOnlySSL if target.tls else _AsyncPrimaryOnly
        return cast(Redis, sentinel.master_for(target.service, **_node_options(target), **kwargs))
    if pool_wait is not None:
        return Redis(connection_pool=WaitingPool.from_url(target.url, wait=pool_wait, **target.tls, **kwargs))
    pool = ConnectionPool.from_url(target.url, **target.tls, **kwargs)
    return Redis(connection_pool=pool)


# Connection options the synchronous and asyncio clients share, by the same name.
_SHARED_OPTIONS = frozenset(
    {
        "host",
        "port",
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "client_name",
        "health_check_interval",
        "retry_on_timeout",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)


def async_twin(connection: sync_redis.Redis) -> Redis:
    """An asyncio client for the server `connection` talks to (TCP, TLS, Unix socket or Sentinel).

    RQ hands a job its synchronous connection; async delivery code needs an asyncio twin of it.
    A connection from this factory is twinned from its target (so a Sentinel client stays one);
    any other is copied option by option, since copying only host and port would drop TLS,
    timeouts or a Unix socket.
    """
    pool = connection.connection_pool
    target = _TARGETS.get(pool)
    if target is not None:
        return async_client(target)
    given: dict[str, Any] = dict(pool.connection_kwargs)
    options = {k: v for k, v in given.items() if k in _SHARED_OPTIONS and v is not None}
    if given.get("path"):
        options["unix_socket_path"] = given["path"]
        options.pop("host", None)
        options.pop("port", None)
    if issubclass(pool.connection_class, sync_redis.SSLConnection):
        options["ssl"] = True
    return Redis(decode_responses=False, **options)
