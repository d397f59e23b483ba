"""Test helpers shared by broker-backed tests."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any


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


def metric_total(registry: Any, name: str, **labels: str) -> float:
    """The sum of the samples `name` of a prometheus-client registry whose labels include
    `labels` (0 when there are none)."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 30) -> int:
    """SIGTERM a child (if still running) and return its exit code; kill it and fail if it
    does not stop within `timeout_s` (a clean shutdown is part of what the tests check)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise
