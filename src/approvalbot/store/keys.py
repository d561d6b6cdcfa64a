"""Every Redis key approvalbot uses, in one place, under one prefix."""

PREFIX = "ab:"

AUDIT_LOG = PREFIX + "audit:log"
AUDIT_CHAIN = PREFIX + "audit:chain"
AUDIT_CHECKPOINTS = PREFIX + "audit:checkpoints"
PENDING = PREFIX + "pending"
EXPIRY = PREFIX + "expiry"
TIMERS = PREFIX + "timers"
STATS = PREFIX + "stats"
AGENTS = PREFIX + "agents"
APPROVERS = PREFIX + "approvers"
NO_KEY = PREFIX + "none"
CHANGED_CHANNEL = PREFIX + "changed"
OUTBOX_CURSOR = PREFIX + "outbox:cursor"
OUTBOX_LOCK = PREFIX + "outbox:lock"
REPLICATION_BARRIER = PREFIX + "replication:barrier"  # written before WAIT (store/replication.py)
GRANTS_USED = PREFIX + "grants:used"
# Final requests whose raw params still exist, scored by decided_at (ms): retention deletes them
# oldest first, in bounded batches (APPROVALBOT_PARAMS_RETENTION).
FINAL = PREFIX + "final"
# The one-time upgrade of requests stored before masking (service.upgrade_stored): the SCAN cursor it
# has reached, then "done".
MASKING_UPGRADE = PREFIX + "upgrade:masked"


def request(request_id: str) -> str:
    return f"{PREFIX}req:{request_id}"


def request_audit(request_id: str) -> str:
    return f"{PREFIX}audit:req:{request_id}"


def pending_for(target: str) -> str:
    """Pending requests that approvers reachable as `target` (group, email or '*') may decide."""
    return f"{PREFIX}pending:to:{target}"


def idempotency(agent_id: str, key_digest: str) -> str:
    return f"{PREFIX}idem:{agent_id}:{key_digest}"


def agent_pending(agent_id: str) -> str:
    """One agent's pending requests, scored by expiry: its quota counts them (ZCARD) and Retry-After
    names the first expiry. Kept by the commit script on every transition, so it cannot drift."""
    return f"{PREFIX}pending:agent:{agent_id}"


def agent_rate(agent_id: str) -> str:
    """One agent's creation token bucket ("tokens at_ms"); expires once it would be full again."""
    return f"{PREFIX}rate:agent:{agent_id}"


def quota_notice(agent_id: str, code: str) -> str:
    """Set (NX, with a TTL) by the first refusal of a burst: only that one is audited."""
    return f"{PREFIX}quota:notice:{agent_id}:{code}"


def token(digest: str) -> str:
    return f"{PREFIX}token:{digest}"


def agent(agent_id: str) -> str:
    return f"{PREFIX}agent:{agent_id}"


def agent_callback_secret(agent_id: str) -> str:
    """The agent's own callback signing secret (kept recoverable: the worker must sign with it)."""
    return f"{PREFIX}agent:{agent_id}:callback-secret"


def agent_name(name: str) -> str:
    return f"{PREFIX}agent-name:{name}"


def approver(email: str) -> str:
    """Before persons: one record per approver email (read only to upgrade it to a person)."""
    return f"{PREFIX}approver:{email}"


def delivery(request_id: str, channel: str) -> str:
    """Where a chat adapter remembers the message it posted, so a retry never posts twice."""
    return f"{PREFIX}delivery:{request_id}:{channel}"


PERSONS = PREFIX + "persons"
# Incremented in the same MULTI as every change to persons, their addresses and identities: a
# process may remember whom an address names while this is unchanged (the commit script checks it).
PEOPLE_VERSION = PREFIX + "people:version"
EXECUTORS = PREFIX + "executors"


def person(person_id: str) -> str:
    return f"{PREFIX}person:{person_id}"


def person_tokens(person_id: str) -> str:
    """Digests of the approver tokens that authenticate this person."""
    return f"{PREFIX}person:{person_id}:tokens"


def person_address(email: str) -> str:
    """A canonical address (primary or alias) -> the one person it belongs to."""
    return f"{PREFIX}person-address:{email}"


def person_identity(identity_key: str) -> str:
    """A chat identity (ChatIdentity.key) -> the one person it is linked to (set NX: never moved)."""
    return f"{PREFIX}person-identity:{identity_key}"


def executor(executor_id: str) -> str:
    return f"{PREFIX}executor:{executor_id}"


def executor_name(name: str) -> str:
    return f"{PREFIX}executor-name:{name}"


GRANTS_REVOKED = PREFIX + "grants:revoked"
"""Revoked, possibly unexpired grants: a sorted set of jti (request id) scored by the grant's expiry."""


def agent_grants(agent_id: str) -> str:
    """The agent's grants that may still be unexpired (jti scored by expiry), so revoking the agent
    can revoke them; entries past their expiry are trimmed on every approval."""
    return f"{PREFIX}agent:{agent_id}:grants"


# --- RQ queues and the fair delivery lanes ---------------------------------------------------------

DELIVERY_QUEUE = "delivery"
CALLBACK_QUEUE = "callbacks"
QUEUE_KINDS = (DELIVERY_QUEUE, CALLBACK_QUEUE)
RQ_QUEUE_PREFIX = "rq:queue:"  # RQ's own (Queue.redis_queue_namespace_prefix), for readers that do not import rq


def rq_queue(base: str, kind: str) -> str:
    """The RQ queue for one kind of work: `<APPROVALBOT_QUEUE>:delivery`, `<APPROVALBOT_QUEUE>:callbacks`."""
    return f"{base}:{kind}"


def fair_ring(queue_name: str) -> str:
    """Agents (lanes) with delivery jobs waiting to enter `queue_name`, in round-robin order."""
    return f"{PREFIX}fair:{queue_name}:ring"


def fair_lane_prefix(queue_name: str) -> str:
    return f"{PREFIX}fair:{queue_name}:lane:"


def fair_lane(queue_name: str, lane: str) -> str:
    """One agent's delivery job ids, oldest first, waiting for their turn."""
    return fair_lane_prefix(queue_name) + lane
