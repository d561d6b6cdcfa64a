"""One way to get an asyncio Redis client for the server a synchronous one talks to.

RQ hands a job its synchronous connection; async delivery code needs an asyncio twin
of it. Copying only host and port would silently drop TLS, timeouts or a Unix socket,
so every connection option that means the same thing to both clients is carried over.
"""

from __future__ import annotations

from typing import Any

import redis as sync_redis
from redis.asyncio import Redis

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
    """An asyncio client for the server `connection` talks to (TCP, TLS or Unix socket), bytes in and out."""
    pool = connection.connection_pool
    given: dict[str, Any] = dict(pool.connection_kwargs)
    options = {k: v for k, v in given.items() if k in _SHARED_OPTIONS and v is not None}
    if given.get("path"):
        options["unix_socket_path"] = given["path"]
        options.pop("host", None)
        options.pop("port", None)
    if issubclass(pool.connection_class, sync_redis.SSLConnection):
        options["ssl"] = True
    return Redis(decode_responses=False, **options)
