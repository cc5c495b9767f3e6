"""Polling for a condition in tests that drive real processes."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition", poll_s: float = 0.1):
    """The first truthy value of predicate(), polled every poll_s; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")
