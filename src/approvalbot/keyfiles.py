"""Server-side secrets that must be the same in every process: from the environment, else the data folder.

A generated secret is written once (0600) under a file lock, so the web process
and workers started together agree on it.

The data folder holds the embedded Valkey's files (request data, live grants),
the signing key and generated secrets, so it is private whatever existed before:
`private_data_dir` makes the folder and every folder in it 0700 and every file
0600 at every start-up (a folder created as 0755 by an older version or by hand
would otherwise leave the database world-readable).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from approvalbot.config import Settings

log = logging.getLogger("approvalbot")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_data_dir(data_dir: Path) -> list[Path]:
    """Create the data folder (0700) or make an existing one private: folders 0700, files 0600.

    Symbolic links are not followed (their targets are not ours to change), and
    sockets keep their mode (the server sets it). Returns what could not be
    changed (owned by another user), each logged once as a warning.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    failed: list[Path] = []

    def restrict(path: Path, mode: int) -> None:
        try:
            if stat.S_IMODE(os.lstat(path).st_mode) != mode:
                os.chmod(path, mode)
        except FileNotFoundError:  # removed meanwhile (a temporary file of the server)
            pass
        except PermissionError:
            log.warning("cannot make %s private (mode %o): it is not ours", path, mode)
            failed.append(path)

    restrict(data_dir, PRIVATE_DIR)
    for root, dirs, files in os.walk(data_dir, followlinks=False):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                restrict(path, PRIVATE_DIR)
        for name in files:
            path = Path(root) / name
            try:
                kind = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISREG(kind):
                restrict(path, PRIVATE_FILE)
    return failed


def stored_secret(data_dir: Path, name: str, make: Callable[[], bytes]) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    path = data_dir / name
    lock_fd = os.open(data_dir / ".secrets.lock", os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    with os.fdopen(lock_fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
            with os.fdopen(fd, "wb") as out:
                out.write(make())
        return path.read_bytes()


def callback_secret(settings: Settings) -> bytes:
    if settings.callback_secret is not None:
        return settings.callback_secret.get_secret_value().encode()
    return stored_secret(settings.data_dir, "callback_secret", lambda: secrets.token_hex(32).encode())


def masking_key(settings: Settings) -> bytes:
    """The key of the fingerprints in masks ([secret · aws key · 20 chars · 3f9a]): the same in every
    process and across restarts, so equal values compare equal over time; secret, or short values
    could be found by trying them all against their fingerprint."""
    if settings.masking_key is not None:
        return settings.masking_key.get_secret_value().encode()
    return stored_secret(settings.data_dir, "masking_key", lambda: secrets.token_hex(32).encode())
