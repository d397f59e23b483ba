"""Liveness and readiness, shared by the poll loop and the HTTP threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# /healthz turns red after this long without a loop iteration. Every wait inside the loop
# (transactional calls, restores, an unreachable broker) beats liveness, so only a loop that is
# really stuck trips it, well before the 30 s call deadline would.
LIVENESS_DEADLINE_S = 20.0


class Health:
    """Liveness and readiness state shared by the poll loop and the HTTP threads.

    Times are ``time.monotonic()`` (injectable for tests) so a wall-clock step never flips
    liveness. Before the first ``mark_loop_alive`` the start time counts as the last beat, so a
    worker that hangs during start-up also goes unhealthy after the deadline. Long work inside
    one loop iteration (restoring a partition in the assignment callback) must call
    ``mark_loop_alive`` as it goes, or liveness kills a pod that is merely busy.

    Readiness is what the partitions say (``set_ready``) unless a *blocker* is set (``block``):
    a broker that does not answer, an instance closing. While any is set /readyz is false with
    the first one's reason, whatever a rebalance callback reports meanwhile.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._ready = False
        self._reason = "starting"
        self._blockers: dict[str, str] = {}

    def mark_loop_alive(self) -> None:
        t = self._clock()
        with self._lock:
            self._last_beat = t

    def set_ready(self, ready: bool, reason: str) -> None:
        with self._lock:
            self._ready = ready
            self._reason = reason

    def block(self, name: str, reason: str | None) -> None:
        """Set (a reason) or clear (None) the blocker `name`."""
        with self._lock:
            if reason is None:
                self._blockers.pop(name, None)
            else:
                self._blockers[name] = reason

    def seconds_since_beat(self, now: float | None = None) -> float:
        t = self._clock() if now is None else now
        with self._lock:
            return t - self._last_beat

    def is_alive(self, now: float | None = None, deadline_s: float = LIVENESS_DEADLINE_S) -> bool:
        return self.seconds_since_beat(now) <= deadline_s

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            for reason in self._blockers.values():
                return False, reason
            return self._ready, self._reason
