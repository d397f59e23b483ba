"""Property tests of the worker's state step (`PartitionState.decide`) across expiry.

Over streams long enough for visits to expire and charges to be retired: where sweeps and
changelog checkpoints (write, then restore into a fresh state, as after a crash or a rebalance)
fall changes no decision, and no (charge_id, decision_version) is ever published twice with
different content; and a state that keeps a single visit decoded (every other one held as its
changelog bytes), or whose decoded set is resized as it goes, decides and writes exactly what
one that keeps them all decoded does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from rules.charge import Charge, Decision, DecisionSource, charge_from_dict
from rules.pack import load_packs
from rules.visit import emitted
from tests.factories import event_dict
from worker.errors import UndecidableRecord
from worker.state.changelog import ChangelogWrite
from worker.state.store import PartitionState

PACKS = load_packs()
RETENTION = dt.timedelta(days=30)
SHORT_MEMORY = dt.timedelta(days=90)  # charges are forgotten and late lines dead-lettered
LONG_MEMORY = dt.timedelta(days=400)  # longer than any stream: nothing is forgotten
START = dt.date(2026, 1, 5)
Outcome = list[tuple[str, Decision] | str]


@st.composite
def streams(draw: st.DrawFn) -> list[Charge]:
    """Events over up to ~7 months for 3 patients and 6 charges, roughly in event-time order, with
    edits, voids, date moves, late lines for old visits, mistyped capture years and redeliveries."""
    events: list[Charge] = []
    day = 0
    for number in range(draw(st.integers(4, 24))):
        day += draw(st.integers(0, 9))
        late = draw(st.integers(0, 5)) == 0  # a line for a visit long past
        service = START + dt.timedelta(
            days=max(day - draw(st.integers(35, 150)), 0) if late else day
        )
        occurred = dt.datetime.combine(START + dt.timedelta(days=day), dt.time(9), dt.UTC)
        occurred += dt.timedelta(minutes=number)
        if draw(st.integers(0, 9)) == 0:  # a mistyped capture year (INVALID_CHARGE hold)
            occurred -= dt.timedelta(days=730)
        code = draw(st.sampled_from(["97012", "97012", "98941", "97140"]))
        events.append(
            charge_from_dict(
                event_dict(
                    event_id=f"E{number}",
                    event_type="VOID" if draw(st.integers(0, 7)) == 0 else "UPSERT",
                    charge_id=f"C{draw(st.integers(1, 6))}",
                    patient_id=draw(st.sampled_from(["P1", "P2", "P3"])),
                    date_of_service=service.isoformat(),
                    occurred_at=occurred.isoformat(),
                    cpt_code=code,
                    units=draw(st.integers(1, 2)),
                    traction={"method": "MECHANICAL_DEVICE"} if code == "97012" else None,
                )
            )
        )
    redelivered = draw(st.lists(st.sampled_from(events), max_size=3))
    for event in redelivered:
        events.insert(draw(st.integers(0, len(events))), event)
    return events


def _run(
    events: list[Charge],
    checkpoints: set[int],
    sweeps: set[int],
    memory: dt.timedelta = SHORT_MEMORY,
) -> Outcome:
    state = PartitionState(0, RETENTION, version_memory=memory)
    changelog: list[ChangelogWrite] = []  # everything written so far, in order
    out: Outcome = []
    for offset, event in enumerate(events):
        if offset in sweeps:
            state.sweep()
        if offset in checkpoints:  # commit, then lose the process and restore
            changelog += state.take_writes()
            state = PartitionState(0, RETENTION, version_memory=memory)
            for write in changelog:
                state.restore(write.key, write.value)
        source = DecisionSource(topic="t", partition=0, offset=offset, event_id=event.event_id)
        try:
            publications = state.decide(event, source, PACKS)
        except UndecidableRecord as bad:
            out.append(f"DLQ {offset}: {bad.kind}")
            continue
        out += [(p.ledger.value, p.decision) for p in emitted(publications)]
    return out


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_sweeps_and_checkpoints_change_no_decision(events: list[Charge], data: Any) -> None:
    offsets = st.sets(st.integers(0, len(events)), max_size=6)
    checkpoints, sweeps = data.draw(offsets), data.draw(offsets)
    assert _run(events, checkpoints, sweeps) == _run(events, set(), set())


@settings(max_examples=150, deadline=None)
@given(streams())
def test_no_charge_version_is_published_twice_with_different_content(
    events: list[Charge],
) -> None:
    """Within the version memory (a charge with no event for longer may start again at 1:
    README, Known limits)."""
    seen: dict[tuple[str, int, str], Decision] = {}
    for item in _run(events, set(), set(range(0, len(events), 3)), LONG_MEMORY):
        if isinstance(item, str):
            continue
        ledger, decision = item
        key = (decision.charge_id, decision.decision_version, ledger)
        content = replace(decision, source=None)
        assert seen.setdefault(key, content) == content, key


@settings(max_examples=150, deadline=None)
@given(streams())
def test_holding_visits_serialized_changes_no_decision_and_no_changelog_byte(
    events: list[Charge],
) -> None:
    cold = PartitionState(0, RETENTION, version_memory=SHORT_MEMORY, hot_visits=1)
    warm = PartitionState(0, RETENTION, version_memory=SHORT_MEMORY)
    resized = PartitionState(0, RETENTION, version_memory=SHORT_MEMORY, hot_visits=2)
    for offset, event in enumerate(events):
        source = DecisionSource(topic="t", partition=0, offset=offset, event_id=event.event_id)
        resized.visits.resize(1 if offset % 4 == 3 else 4)  # as a replay's focus moves
        outcomes = []
        for state in (cold, warm, resized):
            try:
                outcomes.append(emitted(state.decide(event, source, PACKS)))
            except UndecidableRecord as bad:
                outcomes.append([bad.kind])  # type: ignore[list-item]
        assert outcomes[0] == outcomes[1] == outcomes[2], offset
        if offset % 3 == 2:
            for state in (cold, warm, resized):
                state.sweep()
            writes = list(warm.take_writes())
            assert list(cold.take_writes()) == writes == list(resized.take_writes())
    assert cold.held == warm.held == resized.held
    assert cold.book.home == warm.book.home == resized.book.home
    for state in (cold, warm, resized):  # the day index holds exactly the visits held
        indexed = [k for day in state._visits_by_day.values() for k in day]
        assert sorted(indexed) == sorted(state.visits)
