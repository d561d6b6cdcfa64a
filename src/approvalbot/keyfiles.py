"""Server-side secrets that must be the same in every process: from the environment, else the data folder.

A generated secret is written once (0600) under a file lock, so the web process
and workers started together agree on it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from approvalbot.config import Settings


def stored_secret(data_dir: Path, name: str, make: Callable[[], bytes]) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    with open(data_dir / ".secrets.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(make())
        return path.read_bytes()


def callback_secret(settings: Settings) -> bytes:
    if settings.callback_secret is not None:
        return settings.callback_secret.get_secret_value().encode()
    return stored_secret(settings.data_dir, "callback_secret", lambda: secrets.token_hex(32).encode())
