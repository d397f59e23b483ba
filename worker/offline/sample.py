"""Reproducible sample charge events: a realistic day at chiropractic, PT and physician clinics.

`generate_events(visits, seed)` returns JSON-ready `ChargeEvent` dicts (field names exactly as
`rules.model.ChargeEvent`, dates `YYYY-MM-DD`, timestamps ISO-8601 UTC with a `Z`). Everything
is drawn from one `random.Random(seed)`: the same (visits, seed, day) always gives the same list,
never touching the wall clock or the global random state. Plain dicts throughout (no pydantic in
the loop) so a benchmark's 100k events take a second or two.

Visits come from worker.offline.visits (1..5 charge lines each; most clean, some with one
deliberate problem per rule, at the rates in `SCENARIO_RATES_PER_1000_VISITS`). Event dynamics:
every charge gets an UPSERT; some get a later corrected UPSERT or a VOID; about 1% of events are
redelivered later (same event_id); about 10% arrive a few minutes late, so the list is only
mostly in occurred_at order.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import itertools
import json
import random
from collections.abc import Iterable
from typing import Final, TextIO

from worker.offline.reference import (
    DX_SECONDARY_OTHER,
    P_CORRECT_CLEAN,
    P_FIX_DEFECT,
    P_LATE,
    P_REDELIVER,
    P_VOID,
    SCENARIO_RATES_PER_1000_VISITS,
    Event,
    copy_charge,
    eastern_utc_offset_hours,
    uniform,
)
from worker.offline.visits import VisitBuilder

__all__ = ["SCENARIO_RATES_PER_1000_VISITS", "generate_events", "write_jsonl"]


_UUID4_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET: Final = (0x4000 << 64) | (0x8000 << 48)


def _event_id(rng: random.Random) -> str:
    """'E' + a version-4 UUID from the seeded rng (str(uuid.UUID(int=..., version=4)), inlined)."""
    h = f"{(rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"E{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_EPOCH: Final = dt.datetime(1970, 1, 1)


def _iso_ms(epoch_ms: int) -> str:
    t = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


class _Clock:
    """ISO-8601 'Z' strings for epoch milliseconds, fast for one UTC day."""

    def __init__(self, day: dt.date) -> None:
        self.start = (day - dt.date(1970, 1, 1)).days * 86_400_000
        self.prefix = day.isoformat() + "T"

    def iso(self, epoch_ms: int) -> str:
        ms = epoch_ms - self.start
        if not 0 <= ms < 86_400_000:
            return _iso_ms(epoch_ms)
        s, ms = divmod(ms, 1000)
        m, s = divmod(s, 60)
        h, m = divmod(m, 60)
        return f"{self.prefix}{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def generate_events(
    visits: int, seed: int, *, day: dt.date = dt.date(2026, 3, 2)
) -> list[dict[str, object]]:
    """Sample ChargeEvents (JSON-ready dicts) for `visits` patient visits on `day`.

    Reproducible: the same (visits, seed, day) gives an identical list. The list is in arrival
    order: mostly by occurred_at, with ~10% of events a few minutes late and ~1% redelivered.
    """
    if visits < 0:
        raise ValueError("visits must be >= 0")
    # Only acyclic dicts and lists are built here: the cyclic collector would just rescan the
    # growing event list (about 40% of the run time at 100k events).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate(visits, seed, day)
    finally:
        if gc_was_enabled:
            gc.enable()


Pending = tuple[int, int, int, str, Event]  # (arrival_ms, sequence, occurred_ms, type, charge)


def _generate(visits: int, seed: int, day: dt.date) -> list[Event]:
    rng = random.Random(seed)
    pending = _EventPlan(rng, day).plan(VisitBuilder(rng, day, visits), visits)
    pending.sort(key=lambda p: (p[0], p[1]))
    clock = _Clock(day)
    events: list[Event] = []
    redeliveries: list[tuple[int, int, Event]] = []
    for arrival, n, occurred_ms, event_type, charge in pending:
        event = copy_charge(
            {
                "event_id": _event_id(rng),
                "event_type": event_type,
                "occurred_at": clock.iso(occurred_ms),
                **charge,
            }
        )
        events.append(event)
        if rng.random() < P_REDELIVER:
            redeliveries.append((arrival + uniform(rng, 5_000, 20 * 60_000), n, event))
    return _merge_redeliveries(events, [p[0] for p in pending], redeliveries)


class _EventPlan:
    """When each line's events occur and arrive: its UPSERT, a later fix, a VOID."""

    def __init__(self, rng: random.Random, day: dt.date) -> None:
        self.rng = rng
        self.day_end_ms = (
            (day - dt.date(1970, 1, 1)).days * 86_400_000
            + (18 - eastern_utc_offset_hours(day)) * 3_600_000
            - 1
        )
        self.pending: list[Pending] = []
        self.seq = itertools.count()

    def plan(self, builder: VisitBuilder, visits: int) -> list[Pending]:
        rng = self.rng
        for _ in range(visits):
            lines, entry_ms = builder.build()
            t = entry_ms
            for line in lines:
                t += uniform(rng, 5_000, 90_000)  # lines keyed one after another
                self.emit(t, "UPSERT", line.charge)
                last_ms, last = t, line.charge
                fix_due = (line.fixed is not None or line.void_fix) and rng.random() < P_FIX_DEFECT
                if fix_due and line.void_fix:
                    self.emit(self.later(last_ms, 120), "VOID", last)
                    continue
                if fix_due and line.fixed is not None:
                    last_ms, last = self.later(last_ms, 120), line.fixed
                    self.emit(last_ms, "UPSERT", last)
                elif line.fixed is None and rng.random() < P_CORRECT_CLEAN:
                    last_ms, last = self.later(last_ms, 90), _harmless_change(rng, line.charge)
                    self.emit(last_ms, "UPSERT", last)
                if rng.random() < P_VOID:
                    self.emit(self.later(last_ms, 180), "VOID", last)
        return self.pending

    def later(self, after_ms: int, max_minutes: int) -> int:
        room = max(1_000, min(max_minutes * 60_000, self.day_end_ms - after_ms))
        return after_ms + uniform(self.rng, 60_000 if room > 120_000 else 1_000, room + 1)

    def emit(self, occurred_ms: int, event_type: str, charge: Event) -> None:
        arrival = occurred_ms
        if self.rng.random() < P_LATE:
            arrival += uniform(self.rng, 60_000, 15 * 60_000)
        self.pending.append((arrival, next(self.seq), occurred_ms, event_type, charge))


def _merge_redeliveries(
    events: list[Event], arrivals: list[int], redeliveries: list[tuple[int, int, Event]]
) -> list[Event]:
    """Merge the redelivered copies in at their (later) arrival time."""
    if not redeliveries:
        return events
    redeliveries.sort(key=lambda r: (r[0], r[1]))
    out: list[Event] = []
    start = 0
    for arrival, _, event in redeliveries:
        stop = bisect.bisect_right(arrivals, arrival, lo=start)
        out.extend(events[start:stop])
        out.append(copy_charge(event))
        start = stop
    out.extend(events[start:])
    return out


def _harmless_change(rng: random.Random, charge: Event) -> Event:
    """A re-sent clean charge: traction minutes edited, a diagnosis added or pointers reordered."""
    changed = copy_charge(charge)
    traction = changed["traction"]
    dx: list[str] = changed["diagnosis_codes"]  # type: ignore[assignment]
    extra = [code for code in DX_SECONDARY_OTHER if code not in dx]
    if isinstance(traction, dict) and isinstance(traction["minutes"], int) and rng.random() < 0.5:
        minutes: int = traction["minutes"]
        traction["minutes"] = minutes + 5 if minutes <= 15 else minutes - 5
    elif extra and len(dx) < 4:
        dx.append(rng.choice(extra))
    elif len(dx) >= 2:
        dx[0], dx[1] = dx[1], dx[0]
    else:
        changed["units"] = charge["units"] + 1  # type: ignore[operator]
    return changed


def stamp_near(events: list[Event], now: dt.datetime) -> list[Event]:
    """Copies of `events` with occurred_at moved onto consecutive milliseconds ending just
    before `now`, in the day's event-time order (a redelivered copy keeps its original's).

    For demos that measure event-to-decision latency: a generated day spans clinic hours,
    so its own timestamps would make the latency hours. Generate the day on `now`'s date so
    dates of service still fall on the capture date."""
    first: dict[str, str] = {}
    for e in events:
        first.setdefault(str(e["event_id"]), str(e["occurred_at"]))
    order = sorted(first, key=first.__getitem__)  # stable: ties keep the day's order
    last_ms = int(now.timestamp() * 1000) - 1
    stamp = {
        event_id: _iso_ms(last_ms - (len(order) - 1 - rank)) for rank, event_id in enumerate(order)
    }
    return [{**e, "occurred_at": stamp[str(e["event_id"])]} for e in events]


def write_jsonl(events: Iterable[dict[str, object]], stream: TextIO) -> None:
    """Write events as compact JSON, one per line, fields in their dict order."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    stream.writelines(dumps(e) + "\n" for e in events)
