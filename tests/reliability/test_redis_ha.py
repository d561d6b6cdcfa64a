"""Production-shaped Redis: TLS with a private CA and client certificates, a least-privilege ACL
user, and a Sentinel failover under load with nothing acknowledged lost (issue 17)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp

from approvalbot.store import connections
from approvalbot.store.identities import IdentityStore
from tests.reliability.redis_procs import (
    free_port,
    make_certs,
    servers,
)
from tests.reliability.test_load_and_faults import CallbackReceiver

# The ACL the service needs (docs/redis.md): its own keys and channels, data commands, scripts,
# pub/sub, WAIT; nothing administrative (no CONFIG, FLUSH*, KEYS, DEBUG, SHUTDOWN, MODULE, ACL).
ACL_RULES = (
    "on resetkeys ~ab:* ~rq:* resetchannels &ab:* &rq:* -@all "
    "+@read +@write +@keyspace +@scripting +@pubsub +@transaction +@connection "
    "-@dangerous +info +wait +client|setname +client|getname +client|id"
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
