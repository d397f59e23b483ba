"""Test helpers shared by broker-backed tests."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    interval_s: float = 0.05,
    message: str = "condition not met",
) -> None:
    """Poll `predicate` until it is truthy; fail with `message` once `timeout_s` has passed.

    The only sanctioned way to wait in tests: a deadline, never a fixed sleep as synchronisation.
    The predicate is evaluated one last time at the deadline so a slow final step still counts.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (after {timeout_s}s)")
        time.sleep(interval_s)
