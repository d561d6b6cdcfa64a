"""The core's tests are pure: no Redis, no HTTP, no clock.

tests/conftest.py flushes Redis before every test (an autouse fixture); overriding
it here with a no-op of the same name keeps these tests from starting the embedded
server at all, so they run in well under a second.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def clean_db() -> None:
    """Shadows the Redis-flushing fixture of tests/conftest.py: nothing to clean here."""
