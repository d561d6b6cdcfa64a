"""Start-up wiring shared by every entry point: settings, Redis (given or embedded), policy.

Everything that can be wrong with the configuration fails here, before any
traffic is accepted, with a message that says what to fix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.sentinel import MasterNotFoundError

from approvalbot.audit import grants
from approvalbot.audit.signing import Signer, SigningKeyError, signer_for
from approvalbot.config import Settings
from approvalbot.core.policy import Policy, PolicyError
from approvalbot.embedded import EmbeddedValkey, redis_url_from_env
from approvalbot.keyfiles import masking_key, private_data_dir
from approvalbot.service import ApprovalService
from approvalbot.store import connections, replication
from approvalbot.store.connections import RedisTarget, RedisUrlError
from approvalbot.store.requests import Quota

log = logging.getLogger("approvalbot")


class ConfigError(RuntimeError):
    pass


def load_policy(settings: Settings) -> Policy:
    if settings.policy_file is None:
        return Policy.default()
    try:
        return Policy.load(settings.policy_file)
    except FileNotFoundError:
        raise ConfigError(f"policy file not found: {settings.policy_file}") from None
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class Runtime:
    settings: Settings
    redis_url: str
    policy: Policy
    embedded: EmbeddedValkey | None = None
    target: RedisTarget | None = field(default=None, repr=False)
    _signer: Signer | None = field(default=None, repr=False)
    _masking_key: bytes | None = field(default=None, repr=False)

    def async_redis(self) -> AsyncRedis:
        """A bounded pool (APPROVALBOT_REDIS_MAX_CONNECTIONS) that waits briefly when full.

        A burst beyond the cap queues for up to APPROVALBOT_REDIS_POOL_WAIT seconds, then gets
        PoolExhausted, which the API answers with 503 and Retry-After (never 500). The pool is
        redis-py's plain one underneath (its blocking pool's locking cost ~15% of a request's CPU).
        Long-polls hold no connection while they wait, so in-flight commands stay far below the cap.
        """
        return connections.async_client(
            self.redis_target,
            max_connections=self.settings.redis_max_connections,
            pool_wait=self.settings.redis_pool_wait,
            health_check_interval=30,
        )

    def sync_redis(self) -> redis.Redis:
        """Bytes in and out: RQ stores pickled jobs and needs `decode_responses=False`."""
        return connections.sync_client(self.redis_target, decode_responses=False, health_check_interval=30)

    @property
    def redis_target(self) -> RedisTarget:
        if self.target is None:
            self.target = connections.parse(self.redis_url)
        return self.target

    def service(self, redis: AsyncRedis) -> ApprovalService:
        """The one way to build the service, so every process installs the same hooks."""
        rate = self.settings.agent_rate_limit
        quota = Quota(
            max_pending=self.settings.max_pending_per_agent,
            rate=rate[0] if rate else 0.0,
            burst=rate[1] if rate else 1,
        )
        service = ApprovalService(
            redis,
            self.policy,
            quota=quota,
            masking_key=self.masking_key(),
            params_retention=self.settings.params_retention_seconds,
        )
        grants.install(service, self.signer())
        return service

    def masking_key(self) -> bytes:
        """Loaded (or generated into the data folder, 0600) once per process."""
        if self._masking_key is None:
            self._masking_key = masking_key(self.settings)
        return self._masking_key

    def signer(self) -> Signer:
        """Loaded (or generated into the data folder) once per process."""
        if self._signer is None:
            self._signer = signer_for(self.settings)
        return self._signer

    @property
    def mode(self) -> str:
        return "embedded Valkey" if self.embedded else "REDIS_URL"


def probe_redis(target: RedisTarget) -> None:
    """Fail start-up in one line naming the server and the reason (no retries: nothing to wait for yet)."""
    probe = connections.sync_client(target, retry=False, socket_connect_timeout=3, socket_timeout=3)
    try:
        probe.ping()
    except redis.RedisError as exc:
        if isinstance(exc, MasterNotFoundError):  # its text embeds a client repr: say it plainly
            reason = "no sentinel answered with a primary for this service"
        else:
            reason = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        raise ConfigError(f"cannot reach Redis at {target.describe()}: {reason} (check REDIS_URL)") from None
    finally:
        probe.close()


@contextlib.contextmanager
def runtime(settings: Settings, need_policy: bool = True) -> Iterator[Runtime]:
    """Resolve Redis (starting the embedded server if no REDIS_URL) and release it on exit."""
    policy = load_policy(settings) if need_policy else Policy.default()
    private_data_dir(settings.data_dir)  # 0700/0600 whatever existed before, before the server opens its files
    if settings.redis_url:
        try:
            connections.parse(settings.redis_url)
        except RedisUrlError as exc:
            raise ConfigError(str(exc)) from None
    replication.configure(settings.min_replicas, settings.replica_timeout_ms)
    url, embedded = redis_url_from_env(settings.redis_url, settings.data_dir)
    try:
        rt = Runtime(settings=settings, redis_url=url, policy=policy, embedded=embedded)
        try:
            rt.signer()
        except SigningKeyError as exc:
            raise ConfigError(str(exc)) from None
        probe_redis(rt.redis_target)
        yield rt
    finally:
        if embedded is not None:
            embedded.release()
