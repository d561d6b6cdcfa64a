"""Real redis-server processes for the Redis HA tests and bench: primary, replicas, sentinels, TLS.

Each server runs in its own temp directory on a free loopback port and is always stopped
(SIGKILL if it does not exit); waits are bounded so a broken set-up fails instead of hanging.
The system Redis (6379) is never touched.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis as sync_redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    args: list[str]
    dir: Path
    popen: subprocess.Popen[bytes] | None = None
    sentinel: bool = False
    conf: tuple[str, ...] = ()  # config-file lines (ACL `user` lines hold spaces)

    def start(self, wait: float = 10) -> Server:
        conf = self.dir / ("sentinel.conf" if self.sentinel else "redis.conf")
        if self.sentinel:
            conf.write_text("\n".join(self.args) + "\n")
            cmd = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            conf.write_text("".join(line + "\n" for line in self.conf))
            cmd = [REDIS_SERVER, str(conf), *self.args]
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.popen = subprocess.Popen(cmd, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while True:
            if self.popen.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, **kwargs: object) -> sync_redis.Redis:
        return sync_redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)  # type: ignore[arg-type]


@contextmanager
def servers() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="ab-redis-ha-", dir="/tmp"))
    group = Cluster(root)
    try:
        yield group
    finally:
        for server in group.all:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Cluster:
    root: Path
    all: list[Server] = field(default_factory=list)

    def _dir(self, name: str) -> Path:
        path = self.root / f"{name}-{len(self.all)}"
        path.mkdir()
        return path

    def redis(self, *extra: str, port: int | None = None, conf: tuple[str, ...] = ()) -> Server:
        port = port or free_port()
        # No 5 s wait before a full sync (the default): a replica restarted after a failover serves sooner.
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--repl-diskless-sync-delay", "0", *extra]
        server = Server(port, args, self._dir("redis"), conf=conf).start()
        self.all.append(server)
        return server

    def replica_of(self, primary_port: int, port: int | None = None) -> Server:
        server = self.redis("--replicaof", "127.0.0.1", str(primary_port), port=port)
        deadline = time.monotonic() + 10
        while server.client().info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.05)
        return server

    def sentinel(self, primary_port: int, service: str = "mymaster", down_after_ms: int = 1000) -> Server:
        port = free_port()
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} 10000",
            f"sentinel parallel-syncs {service} 1",
        ]
        server = Server(port, lines, self._dir("sentinel"), sentinel=True).start()
        self.all.append(server)
        return server


def wait_for_sentinels(sentinels: list[Server], service: str, replicas: int, within: float = 15) -> None:
    """Until every sentinel knows the primary, its replicas and the other sentinels."""
    deadline = time.monotonic() + within
    for sentinel in sentinels:
        client = sentinel.client(decode_responses=True)
        while True:
            info = client.execute_command("SENTINEL", "MASTER", service)
            fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))
            if int(fields["num-slaves"]) >= replicas and int(fields["num-other-sentinels"]) >= len(sentinels) - 1:
                break
            assert time.monotonic() < deadline, f"sentinels not ready: {fields}"
            time.sleep(0.1)
        client.close()


def primary_port(sentinel: Server, service: str = "mymaster") -> int:
    client = sentinel.client(decode_responses=True)
    try:
        _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
        return int(port)
    finally:
        client.close()


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(folder: Path) -> Certs:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, stem: str) -> tuple[Path, Path]:
        key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.crt"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("approvalbot test CA"))
        .issuer_name(name("approvalbot test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, _ = write(ca_key, ca_cert, "ca")

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return write(key, builder.sign(ca_key, hashes.SHA256()), cn)

    server_cert, server_key = leaf("server", ExtendedKeyUsageOID.SERVER_AUTH, True)
    client_cert, client_key = leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH, False)
    return Certs(ca_path, server_cert, server_key, client_cert, client_key)
