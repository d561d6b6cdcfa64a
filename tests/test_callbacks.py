"""Callbacks over real HTTP and a real Redis: destination checks at intake and at send time, pinning,
no redirects, bounded time, and per-agent signing secrets (issue 12, item 1)."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from rq import Queue

from approvalbot.config import Settings
from approvalbot.jobs import callbacks
from approvalbot.jobs.callbacks import SIGNATURE_HEADER, verify
from approvalbot.jobs.outbox import CALLBACKS, Outbox
from tests.helpers import drain, scheduled_registries

SHARED = "shared-secret-for-old-agents"
ALLOW = "127.0.0.1,rebind.example"


@pytest.fixture
def settings(redis_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The web app and the in-process jobs read the same settings (jobs read the environment, as a worker)."""
    env = {
        "REDIS_URL": redis_url,
        "APPROVALBOT_DATA_DIR": str(data_dir),
        "APPROVALBOT_CALLBACK_ALLOW": ALLOW,
        "APPROVALBOT_CALLBACK_TIMEOUT": "1",
        "APPROVALBOT_CALLBACK_SECRET": SHARED,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


class Receiver:
    """A callback endpoint on loopback: records every delivery; some paths misbehave."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hits.append((request.path, dict(request.headers), body))
        if request.path == "/redirect":
            raise web.HTTPFound("/elsewhere")
        if request.path == "/hang":
            await asyncio.sleep(30)
        if request.path == "/big":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(200):  # 12.8 MB, more than anyone should read
                await response.write(b"x" * 65536)
            return response
        return web.Response(text="ok")

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.hits]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hooks.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield hooks, port
    await runner.cleanup()


async def finish(api: Any, rt: Any, request_id: str) -> None:
    """Approve the request, then run the outbox and the callback job as a worker would."""
    status, body = await api.decide(request_id, api.approver_token)
    assert status == 200, body
    base = Queue(rt.settings.queue_name, connection=rt.sync_redis())
    outbox = Outbox(api.service.redis, base, [CALLBACKS])
    while await outbox.dispatch():
        pass
    await drain(base)


async def failures(api: Any) -> list[dict[str, Any]]:
    raw = await api.service.redis.lrange("ab:audit:log", 0, -1)
    return [r for r in map(json.loads, raw) if r["type"] == "callback.failed"]


def retries_waiting(rt: Any) -> int:
    return sum(r.count for r in scheduled_registries(Queue(rt.settings.queue_name, connection=rt.sync_redis())))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:8080/internal-admin",
        "https://127.0.0.2/internal-admin",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        # 127.0.0.1 itself is in this module's allow list; the same spellings of 127.0.0.2 are not
        "https://2130706434/hook",
        "https://0x7f000002/hook",
        "https://0177.0.0.2/hook",
        "https://127.2/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
        "https://[fd00:ec2::254]/hook",
        "https://10.0.0.5/hook",
        "http://agent.example.com/hook",  # plain http to a host not in the allow list
    ],
)
async def test_forbidden_callback_urls_are_refused_at_intake(api, url):
    status, body = await api.ask(callback_url=url)
    assert status == 422, body
    assert body["error"]["code"] == "callback_url_forbidden"
    assert url not in json.dumps(body)  # the answer does not echo the input


async def test_allowed_hosts_may_use_http_and_loopback_and_callbacks_are_signed_per_agent(api, rt, receiver):
    hooks, port = receiver
    status, req = await api.ask(callback_url=f"http://127.0.0.1:{port}/ok")
    assert status == 201, req
    other, other_token = await api.service.identities.add_agent("other-bot", "owner@example.com")
    await finish(api, rt, req["id"])
    (_, headers, body), *_ = hooks.hits
    assert json.loads(body)["status"] == "approved"
    agent = await api.service.identities.get_agent_by_name("etl-bot")
    mine = await api.service.identities.callback_secret(agent.id)
    theirs = await api.service.identities.callback_secret(other.id)
    assert mine and theirs and mine != theirs
    assert verify(mine.encode(), body, headers[SIGNATURE_HEADER])
    assert not verify(theirs.encode(), body, headers[SIGNATURE_HEADER])  # B's receiver cannot verify A's callback
    assert not verify(SHARED.encode(), body, headers[SIGNATURE_HEADER])
    assert mine not in json.dumps(await api.call("GET", f"/v1/requests/{req['id']}", other_token))


async def test_agents_from_before_per_agent_secrets_keep_the_shared_secret(api, rt, receiver):
    hooks, port = receiver
    agent = await api.service.identities.get_agent_by_name("etl-bot")
    await api.service.redis.delete(f"ab:agent:{agent.id}:callback-secret")  # as an agent created before
    _, req = await api.ask(callback_url=f"http://127.0.0.1:{port}/ok")
    await finish(api, rt, req["id"])
    (_, headers, body), *_ = hooks.hits
    assert verify(SHARED.encode(), body, headers[SIGNATURE_HEADER])


async def test_rotating_the_secret_signs_later_callbacks_with_the_new_one(api, rt, receiver):
    hooks, port = receiver
    agent = await api.service.identities.get_agent_by_name("etl-bot")
    old = await api.service.identities.callback_secret(agent.id)
    _, new = await api.service.identities.rotate_callback_secret("etl-bot")
    assert new != old
    _, req = await api.ask(callback_url=f"http://127.0.0.1:{port}/ok")
    await finish(api, rt, req["id"])
    (_, headers, body), *_ = hooks.hits
    assert verify(new.encode(), body, headers[SIGNATURE_HEADER])
    assert old is not None and not verify(old.encode(), body, headers[SIGNATURE_HEADER])


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Answer getaddrinfo for test names (the job's only DNS); returns the names looked up, in order."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            asked.append(host)
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port)))
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    ("addresses", "code"),
    [
        (["127.0.0.2"], "loopback_address"),  # 127.0.0.1 is in this module's allow list
        (["93.184.216.34", "10.0.0.7"], "private_address"),  # ANY bad answer refuses
        (["169.254.169.254"], "metadata_address"),
        (["::ffff:127.0.0.1"], "loopback_address"),
    ],
)
async def test_a_name_resolving_to_a_forbidden_address_is_a_callback_failed_record_without_retry(
    api, rt, receiver, monkeypatch, addresses, code
):
    hooks, port = receiver
    fake_dns(monkeypatch, {"evil.example": addresses})
    status, req = await api.ask(callback_url=f"https://evil.example:{port}/ok")
    assert status == 201  # a name passes intake: only the sender can resolve it
    await finish(api, rt, req["id"])
    assert hooks.hits == []
    (record,) = await failures(api)
    assert record["request_id"] == req["id"]
    assert record["data"] == {"error": code, "host": "evil.example"}
    assert retries_waiting(rt) == 0


async def test_the_connection_goes_to_the_checked_address_with_the_host_header_kept(api, rt, receiver, monkeypatch):
    hooks, port = receiver
    asked = fake_dns(monkeypatch, {"rebind.example": ["127.0.0.1"]})
    _, req = await api.ask(callback_url=f"http://rebind.example:{port}/ok")
    await finish(api, rt, req["id"])
    assert hooks.paths() == ["/ok"]
    assert hooks.hits[0][1]["Host"] == f"rebind.example:{port}"
    assert asked == ["rebind.example"]  # one lookup: nothing a rebinding DNS could answer differently later


async def test_https_is_pinned_with_sni_and_certificate_checked_for_the_name(api, rt, monkeypatch, tmp_path):
    cert, key = self_signed("rebind.example", tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.host)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/ok", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served).start()
    port = runner.addresses[0][1]
    trusted = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(callbacks, "tls_context", lambda: trusted)
    fake_dns(monkeypatch, {"rebind.example": ["127.0.0.1"]})
    try:
        _, req = await api.ask(callback_url=f"https://rebind.example:{port}/ok")
        await finish(api, rt, req["id"])
    finally:
        await runner.cleanup()
    assert seen == [f"rebind.example:{port}"]
    assert await failures(api) == []


async def test_redirects_are_not_followed(api, rt, receiver):
    hooks, port = receiver
    _, req = await api.ask(callback_url=f"http://127.0.0.1:{port}/redirect")
    await finish(api, rt, req["id"])
    assert hooks.paths() == ["/redirect"]
    (record,) = await failures(api)
    assert record["data"]["error"] == "redirect_refused"
    assert retries_waiting(rt) == 0


async def test_a_hanging_endpoint_costs_the_timeout_and_is_retried(api, rt, receiver):
    hooks, port = receiver
    _, req = await api.ask(callback_url=f"http://127.0.0.1:{port}/hang")
    started = time.monotonic()
    await finish(api, rt, req["id"])
    assert time.monotonic() - started < 10  # APPROVALBOT_CALLBACK_TIMEOUT=1, not the endpoint's 30 s
    assert hooks.paths() == ["/hang"]
    assert retries_waiting(rt) == 1
    assert await failures(api) == []  # retries remain


async def test_a_huge_answer_is_not_read(api, rt, receiver):
    hooks, port = receiver
    _, req = await api.ask(callback_url=f"http://127.0.0.1:{port}/big")
    started = time.monotonic()
    await finish(api, rt, req["id"])
    assert time.monotonic() - started < 10
    assert hooks.paths() == ["/big"]


def self_signed(name: str, folder: Path) -> tuple[Path, Path]:
    """A certificate for `name` (and nothing else), valid for a day."""
    from cryptography import x509  # test-only: makes the TLS certificate
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_metrics_report_the_depth_of_each_queue(api):
    status, text = await api.call("GET", "/metrics")
    assert status == 200
    for name in ("jobs", "delivery", "callbacks", "delivery_waiting"):
        assert f'approvalbot_queue_depth{{queue="{name}"}}' in text
