"""Production-shaped Redis: TLS with a private CA and client certificates, a least-privilege ACL
user, and a Sentinel failover under load with nothing acknowledged lost (issue 17)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import Counter

import aiohttp

from approvalbot.store import connections
from approvalbot.store.identities import IdentityStore
from tests.reliability.chat_support import Drained, WatchedSlack
from tests.reliability.redis_procs import free_port, make_certs, primary_port, servers, wait_for_sentinels
from tests.reliability.test_load_and_faults import CallbackReceiver
from tests.slack.conftest import CHANNEL, SIGNING_SECRET
from tests.slack.fake_slack import BOT_TOKEN

PACE = 0.1  # seconds each of the four load lanes rests between a request and the next

# The ACL the service needs (docs/redis.md): its own keys and channels, data commands, scripts,
# pub/sub, WAIT; nothing administrative (no CONFIG, FLUSH*, KEYS, DEBUG, SHUTDOWN, MODULE, ACL).
ACL_RULES = (
    "on resetkeys ~ab:* ~rq:* resetchannels &ab:* &rq:* -@all "
    "+@read +@write +@keyspace +@scripting +@pubsub +@transaction +@connection "
    "-@dangerous +info +role +wait +time +client|setname +client|getname +client|id"
)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "approvalbot", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def make_tokens(url: str, env: dict[str, str]) -> tuple[str, str]:
    redis = connections.async_client(connections.parse(url, env))
    ids = IdentityStore(redis)
    _, agent = await ids.add_agent("test-bot", "owner@example.com")
    _, alice = await ids.add_approver("alice@example.com", ["security"])
    await redis.aclose()
    return agent, alice


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str, body: dict | None = None, **kw):
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    async with http.request(method, url, json=body, headers=headers, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_tls_client_certs_and_acl_user_round_trip(spawn, tmp_path):
    certs = make_certs(tmp_path)
    with servers() as group:
        port = free_port()
        server = group.redis(
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
            port=port,
            conf=(f"user approvalbot {ACL_RULES} >s3cret-pw", "user default off"),
        )  # fmt: skip
        url = f"rediss://approvalbot:s3cret-pw@127.0.0.1:{server.port}/0"
        tls_env = {
            "APPROVALBOT_REDIS_CA": str(certs.ca),
            "APPROVALBOT_REDIS_CERT": str(certs.client_cert),
            "APPROVALBOT_REDIS_KEY": str(certs.client_key),
        }
        agent, alice = await make_tokens(url, tls_env)
        web = spawn(url, "web", web=True, **tls_env)
        worker = spawn(url, "worker", **tls_env)
        receiver = CallbackReceiver()
        async with receiver as hook, aiohttp.ClientSession() as http:
            status, body, _ = await call(
                http, "POST", f"{web.base}/v1/requests", agent,
                {"action": "key.rotate", "resource": "k1", "callback_url": hook},
            )  # fmt: skip
            assert status == 201, body
            rid = body["id"]
            waiting = asyncio.create_task(call(http, "GET", f"{web.base}/v1/requests/{rid}?wait=20", agent))
            await asyncio.sleep(0.3)
            status, body, _ = await call(
                http, "POST", f"{web.base}/v1/requests/{rid}/decisions", alice, {"decision": "approve", "reason": "ok"}
            )
            assert status == 200, body
            status, body, _ = await asyncio.wait_for(waiting, 20)
            assert (status, body["status"]) == (200, "approved")
            deadline = time.monotonic() + 30
            while rid not in receiver.delivered:  # the worker delivered the callback over TLS + ACL
                assert time.monotonic() < deadline, worker.stop()
                await asyncio.sleep(0.1)
        env = {**web.env}
        done = run_cli(env, "audit", "verify")
        assert done.returncode == 0, done.stdout + done.stderr
        # Without the client certificate the server refuses: one line, no traceback.
        bad = run_cli({**env, "APPROVALBOT_REDIS_CERT": "", "APPROVALBOT_REDIS_KEY": ""}, "audit", "verify")
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        assert bad.stderr.strip().count("\n") == 0 and "cannot reach Redis at rediss://127.0.0.1" in bad.stderr
        wrong = run_cli({**env, "REDIS_URL": url.replace("s3cret-pw", "nope")}, "audit", "verify")
        assert wrong.returncode != 0 and "Traceback" not in wrong.stderr and "s3cret" not in wrong.stderr
        web.stop()
        worker.stop()


RETRYABLE = (503,)


async def with_retries(make_call, refusals: Counter[str], within: float = 60):
    """Retry 503s and dropped connections (a web process mid-failover) until a definite answer;
    `refusals` counts the 503s by error code (and dropped connections as "connection")."""
    deadline = time.monotonic() + within
    retried = False
    while True:
        try:
            status, body, _ = await make_call()
            if status not in RETRYABLE:
                return status, body, retried
            refusals[(body or {}).get("error", {}).get("code", "?")] += 1
        except (TimeoutError, aiohttp.ClientError):
            refusals["connection"] += 1
        retried = True
        assert time.monotonic() < deadline, "no definite answer within the failover budget"
        await asyncio.sleep(0.05)


FAILOVER_POLICY = """
rules:
  - name: everything
    match: {action: "*"}
    effect: require_approval
    approvers: [security]
    min_approvals: 1
"""


async def test_sentinel_failover_under_load_loses_nothing_acknowledged(spawn, tmp_path):
    """Two web processes and a worker (posting Slack cards to the fake Slack) on a Sentinel-managed
    primary with one replica, MIN_REPLICAS=1, under steady creations and decisions; SIGKILL the
    primary. Every acknowledged request and decision survives with the right status, every waiting
    agent gets its answer, no request gets two cards, `audit verify` passes; the pause is printed."""
    fake = WatchedSlack(users={"U0OWNER": "owner@example.com"}, channels={"approvals": CHANNEL})
    await fake.start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAILOVER_POLICY)
    with servers() as group:
        primary = group.redis()
        group.replica_of(primary.port)
        sentinels = [group.sentinel(primary.port) for _ in range(3)]
        wait_for_sentinels(sentinels, "mymaster", replicas=1)
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster/0"
        env = {
            "APPROVALBOT_MIN_REPLICAS": "1",
            "APPROVALBOT_REPLICA_TIMEOUT_MS": "500",
            # One agent's steady load on purpose: its per-agent limits would answer 429 (tested elsewhere).
            "APPROVALBOT_AGENT_RATE": "off",
            "APPROVALBOT_MAX_PENDING_PER_AGENT": "0",
            "APPROVALBOT_POLICY": str(policy),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_CHANNEL": "#approvals",
            "SLACK_API_URL": fake.api_url,
        }
        agent, alice = await make_tokens(url, {})
        webs = [spawn(url, "web", web=True, **env) for _ in range(2)]
        worker = spawn(url, "worker", **env)
        logs = [Drained(p) for p in [*webs, worker]]  # a full stderr pipe would block a process
        probe = connections.sync_client(connections.parse(url, {}))
        deadline = time.monotonic() + 30
        while not probe.scard("rq:workers"):  # the worker is up (it registers with RQ) before the kill
            assert time.monotonic() < deadline and worker.popen.poll() is None, logs[2].text()
            await asyncio.sleep(0.1)
        probe.close()
        created: dict[str, str] = {}  # request id -> the decision the load made on it
        decided: dict[str, str] = {}  # request id -> status the decision call acknowledged
        answers: dict[str, str] = {}  # request id -> what the waiting agent was told
        successes: list[float] = []
        refusals: Counter[str] = Counter()
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=40)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def wait_for(rid: str, base: str) -> None:
                status, body, _ = await with_retries(
                    lambda: call(http, "GET", f"{base}/v1/requests/{rid}?wait=25", agent), refusals, within=90
                )
                assert status == 200, body
                answers[rid] = body["status"]

            async def lane(i: int) -> list[asyncio.Task[None]]:
                waits = []
                n = 0
                while not stop.is_set():
                    base = webs[(i + n) % 2].base
                    key = f"lane{i}-{n}-{uuid.uuid4().hex[:6]}"
                    status, body, _ = await with_retries(
                        lambda base=base, key=key: call(
                            http, "POST", f"{base}/v1/requests", agent,
                            {"action": "key.rotate", "resource": key}, headers={"Idempotency-Key": key},
                        ),
                        refusals,
                    )  # fmt: skip
                    assert status in (200, 201), body
                    rid = body["id"]
                    successes.append(time.monotonic())
                    verdict = "approve" if n % 3 else "deny"
                    created[rid] = verdict
                    waits.append(asyncio.create_task(wait_for(rid, webs[(i + n + 1) % 2].base)))
                    status, body, retried = await with_retries(
                        lambda base=base, rid=rid, verdict=verdict: call(
                            http, "POST", f"{base}/v1/requests/{rid}/decisions", alice,
                            {"decision": verdict, "reason": "load"},
                        ),
                        refusals,
                    )  # fmt: skip
                    want = "approved" if verdict == "approve" else "denied"
                    if status == 200:
                        decided[rid] = body["status"]
                        successes.append(time.monotonic())
                    else:  # 409 only after a retry: the first attempt applied, its answer was lost
                        assert status == 409 and retried, (status, body)
                        decided[rid] = want
                    n += 1
                    await asyncio.sleep(PACE)  # a steady load the one worker's Slack posting keeps up with
                return waits

            lanes = [asyncio.create_task(lane(i)) for i in range(4)]
            await asyncio.sleep(3)
            old = primary.port
            killed_at = time.monotonic()
            primary.kill()
            deadline = time.monotonic() + 30
            while primary_port(sentinels[0]) == old:
                assert time.monotonic() < deadline, "no promotion"
                await asyncio.sleep(0.1)
            promoted_at = time.monotonic()
            # The killed node comes back as a replica of the new primary, so MIN_REPLICAS=1 can be met again.
            group.replica_of(primary_port(sentinels[0]), port=old)
            await asyncio.sleep(4)
            stop.set()
            waits = [t for tasks in await asyncio.gather(*lanes) for t in tasks]
            await asyncio.wait_for(asyncio.gather(*waits), 120)
            # Every acknowledged request gets its card (the worker may still be posting): bounded wait.
            deadline = time.monotonic() + 90
            while set(created) - set(fake.cards_by_request()):
                missing = len(set(created) - set(fake.cards_by_request()))
                assert time.monotonic() < deadline, f"{missing} cards missing; worker: {logs[2].text()[-3000:]}"
                await asyncio.sleep(0.2)
        around = sorted(t for t in successes if t > killed_at - 1)
        assert around[-1] > promoted_at, "no request succeeded after the failover"
        pause = max(b - a for a, b in itertools.pairwise(around))  # longest time without a 2xx
        cards = fake.cards_by_request()
        orphans = set(cards) - set(created)  # cards of requests whose creation was lost and retried
        print(
            f"\nfailover: promotion {promoted_at - killed_at:.2f}s after the kill, longest gap without a 2xx "
            f"{pause:.2f}s; {len(created)} requests, {len(decided)} decisions acknowledged; "
            f"503s and dropped connections retried: {dict(refusals)}; "
            f"{len(cards)} cards, {len(orphans)} for unacknowledged attempts"
        )
        assert {rid: len(cards[rid]) for rid in created} == dict.fromkeys(created, 1), "a card posted twice"
        client = connections.sync_client(connections.parse(url, {}))
        for rid in created:
            raw = client.hget(f"ab:req:{rid}", "doc")
            assert raw is not None, f"acknowledged request {rid} lost"
            doc = json.loads(raw)
            assert doc["status"] == decided[rid] == answers[rid], (rid, doc["status"], decided[rid], answers[rid])
            assert len(doc["decisions"]) == 1
        for rid in orphans:  # a card can only be left for a creation that was then lost with its primary
            assert client.hget(f"ab:req:{rid}", "doc") is None, rid
        client.close()
        verify = run_cli(webs[0].env, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        for web in webs:
            web.stop()
        for log in logs[:2]:  # the web processes: 503s, never a handler failing
            assert "Traceback" not in log.text(wait=5) and " ERROR " not in log.text(), log.text()[-3000:]
    await fake.close()
