"""Blocking client calls that have no timeout of their own, run under a deadline.

kafka-python's `commit_transaction`, `abort_transaction`, `send_offsets_to_transaction` and
`init_transactions` wait without one (and on a broker that fenced the producer they can wait
forever), so each runs in a helper thread the caller stops waiting for at the deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from worker.errors import CallDeadlineExceeded

T = TypeVar("T")


def with_deadline(call: Callable[[], T], seconds: float, what: str) -> T:
    """Run `call`, raising CallDeadlineExceeded if it has not returned within `seconds`."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"deadline:{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CallDeadlineExceeded(f"{what} did not return within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value
