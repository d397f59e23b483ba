"""Replay progress on a terminal: per-partition records, events/s and ETA, redrawn in place."""

from __future__ import annotations

import time
from typing import IO


class Progress:
    """Per-partition records, events/s and ETA, redrawn in place on a terminal."""

    def __init__(self, enabled: bool, stream: IO[str]) -> None:
        self.enabled = enabled
        self.stream = stream
        self._lines = 0
        self._last = 0.0

    def start(self, phase: str, totals: dict[int, int]) -> None:
        self.phase = phase
        self.totals = totals
        self.done = dict.fromkeys(totals, 0)
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.t0 = time.monotonic()
        self._lines = 0
        self._render(force=True)

    def begin_partition(self, partition: int) -> None:
        if self.enabled:
            self.began[partition] = time.monotonic()

    def advance(self, partition: int, records: int) -> None:
        if not self.enabled:
            return
        self.done[partition] += records
        self._render()

    def finish_partition(self, partition: int) -> None:
        if self.enabled:
            self.ended[partition] = time.monotonic()
            self._render(force=True)

    def _render(self, force: bool = False) -> None:
        if not self.enabled or not self.totals:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        overall = sum(self.done.values()) / elapsed
        rows = []
        for p, total in self.totals.items():
            done = self.done[p]
            began = self.began.get(p)
            spent = (self.ended.get(p, now) - began) if began is not None else 0.0
            rate = done / spent if spent > 0 else 0.0
            speed = rate or overall
            eta = "done" if done >= total else (f"{(total - done) / speed:6.1f}s" if speed else "-")
            rows.append(
                f"{self.phase:<7} p{p:<3} {done:>10,}/{total:<10,} {rate:>9,.0f} ev/s  ETA {eta}"
            )
        up = f"\x1b[{self._lines}F" if self._lines else ""
        self.stream.write(up + "".join(f"\x1b[2K{row}\n" for row in rows))
        self.stream.flush()
        self._lines = len(rows)
