"""Acknowledged means replicated, and a failover cannot fake an acknowledgement (docs/redis.md).

The test Redis has no replica, so `APPROVALBOT_MIN_REPLICAS=1` can never be met here: that is how
the 503 and the chat's "try again" are reached. What a failover does to the data (a node that lacks
the last writes) is imitated by editing the log directly; the real failover runs in
tests/reliability/test_redis_ha.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from approvalbot.store import connections, keys, replication
from approvalbot.store.audit import AuditLog
from approvalbot.store.requests import load_script
from approvalbot.web.credentials import Authenticator


@pytest.fixture
def one_replica_wanted() -> Iterator[None]:
    replication.configure(1, 50)
    try:
        yield
    finally:
        replication.configure(0, 500)


async def test_an_unconfirmed_creation_is_a_503_and_the_retry_finds_the_same_request(api, one_replica_wanted):
    headers = {"Idempotency-Key": "k-1"}
    status, body = await api.call("POST", "/v1/requests", api.agent_token, json={"action": "a.b"}, headers=headers)
    assert status == 503 and body["error"]["code"] == "not_replicated"
    replication.configure(0, 500)  # the replica caught up
    status, again = await api.call("POST", "/v1/requests", api.agent_token, json={"action": "a.b"}, headers=headers)
    assert status == 200 and again["status"] == "pending"  # the replay of the stored request, not a second one
    assert len(await api.service.redis.zrange(keys.PENDING, 0, -1)) == 1


async def test_the_barrier_refuses_to_confirm_a_change_the_node_does_not_hold(redis, one_replica_wanted):
    await redis.rpush(keys.AUDIT_LOG, b'{"a":1}', b'{"a":2}')
    with pytest.raises(replication.LostInFailover, match="audit record 2"):  # another record at seq 2
        await replication.confirm(redis, replication.Proof.record(2, b'{"mine":true}'))
    with pytest.raises(replication.LostInFailover):  # no record 5 at all
        await replication.confirm(redis, replication.Proof.record(5, b'{"a":5}'))
    with pytest.raises(replication.LostInFailover):
        await replication.confirm(redis, replication.Proof.exists("ab:req:req_missing"))
    # The node holds it: then only the missing replica is the matter (not "lost").
    with pytest.raises(replication.NotReplicated) as held:
        await replication.confirm(redis, replication.Proof.record(2, b'{"a":2}'))
    assert not isinstance(held.value, replication.LostInFailover)


async def test_sealing_a_record_the_log_no_longer_has_says_lost_instead_of_spinning(redis):
    log = AuditLog(redis)
    await redis.rpush(keys.AUDIT_LOG, b'{"a":1}', b'{"a":2}')
    assert await log.seal(2) == 2
    with pytest.raises(replication.LostInFailover, match="audit record 4"):
        await log.seal(4)  # appended on a primary that died before replicating it


async def test_seal_script_refuses_hashes_computed_from_another_log(redis):
    """A seal computed from the old primary's log and resent to the new one must not chain the
    new primary's different records under the old hashes."""
    await redis.rpush(keys.AUDIT_LOG, b'{"a":1}')
    script = redis.register_script(load_script("seal.lua"))
    elsewhere = hashlib.sha1(b'{"other":1}', usedforsecurity=False).hexdigest()
    assert await script(keys=[keys.AUDIT_CHAIN, keys.AUDIT_LOG], args=[0, elsewhere, "f" * 64]) == -1
    assert await redis.llen(keys.AUDIT_CHAIN) == 0
    here = hashlib.sha1(b'{"a":1}', usedforsecurity=False).hexdigest()
    assert await script(keys=[keys.AUDIT_CHAIN, keys.AUDIT_LOG], args=[0, here, "f" * 64]) == 1


async def test_a_connection_error_forgets_the_chain_length_this_process_remembered(redis):
    """After a failover the chain may be shorter than this process last saw: a record appended
    there must still be sealed before anyone is told about it."""
    log = AuditLog(redis)
    await redis.rpush(keys.AUDIT_LOG, b'{"a":1}', b'{"a":2}', b'{"a":3}')
    assert await log.seal(3) == 3
    # The new primary lacks records 2 and 3 (never replicated), then gets a new record 2.
    await redis.delete(keys.AUDIT_LOG, keys.AUDIT_CHAIN)
    await redis.rpush(keys.AUDIT_LOG, b'{"a":1}', b'{"b":2}')
    assert await log.seal(2) == 3  # memory alone would skip the new record 2 ...
    assert await redis.llen(keys.AUDIT_CHAIN) == 0
    connections._bump()  # ... but the process saw its connection fail during the failover
    assert await log.seal(2) == 2
    assert await redis.llen(keys.AUDIT_CHAIN) == 2


async def test_a_token_miss_during_a_connection_error_is_not_remembered(api):
    auth = api.service.identities
    authenticator = Authenticator(auth)
    original = auth.authenticate

    async def failing_over(token: str):
        connections._bump()  # a connection error was retried while the lookup ran
        return await original(token)

    auth.authenticate = failing_over  # type: ignore[method-assign]
    unknown = "abk_agent_" + "x" * 43
    assert await authenticator.authenticate(unknown) is None
    assert authenticator.lookups == 1
    assert await authenticator.authenticate(unknown) is None
    assert authenticator.lookups == 2  # looked up again: the miss was not cached
    auth.authenticate = original  # type: ignore[method-assign]
    assert await authenticator.authenticate(unknown) is None
    assert await authenticator.authenticate(unknown) is None
    assert authenticator.lookups == 3  # a plain miss is remembered
