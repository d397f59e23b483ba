"""Partition state through its changelog records: what restoration rebuilds is what was written."""

from __future__ import annotations

import datetime as dt

from rules.model import ChargeEvent, DecisionSource, DecisionStatus
from rules.pack import PackSet, load_packs
from rules.visit import Publication
from tests.factories import charge, other_line
from worker.state import META_KEY, PartitionState, decode_visit, encode_visit

PACKS: PackSet = load_packs()
RETENTION = dt.timedelta(days=30)


def _source(offset: int, event_id: str) -> DecisionSource:
    return DecisionSource(topic="charges.captured", partition=0, offset=offset, event_id=event_id)


def _fold(state: PartitionState, events: list[ChargeEvent]) -> list[Publication]:
    out: list[Publication] = []
    for offset, event in enumerate(events):
        out += state.decide(event, _source(offset, event.event_id), PACKS)
    return out


def _restored(state: PartitionState) -> PartitionState:
    fresh = PartitionState(state.partition, RETENTION)
    for write in state.take_writes():
        fresh.restore(write.key, write.value)
    return fresh


def test_a_visit_round_trips_through_its_changelog_record() -> None:
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(units=3), other_line("98941", "C2", event_id="E-C2")])
    (visit,) = state.book.visits.values()
    again = decode_visit(visit.key, encode_visit(visit))
    assert again.charges == visit.charges
    assert again.seen_event_ids == visit.seen_event_ids == {"E-C1", "E-C2"}
    assert again.published == visit.published
    assert encode_visit(again) == encode_visit(visit)  # the same visit writes the same bytes


def test_restored_state_decides_the_next_event_as_the_original_would() -> None:
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(units=3)])
    restored = _restored(state)
    assert restored.watermark == state.watermark
    late_cmt = other_line("98941", "C2", event_id="E-C2")
    original = state.decide(late_cmt, _source(1, "E-C2"), PACKS)
    rebuilt = restored.decide(late_cmt, _source(1, "E-C2"), PACKS)
    assert [p.decision for p in rebuilt] == [p.decision for p in original]
    # the traction line moves to review: RETRACTED + HELD, version 2, after restoration too
    statuses = [
        (p.decision.charge_id, p.decision.status, p.decision.decision_version) for p in rebuilt
    ]
    assert ("C1", DecisionStatus.RETRACTED, 2) in statuses
    assert ("C1", DecisionStatus.HELD, 2) in statuses


def test_an_expired_visit_is_tombstoned_and_not_restored() -> None:
    state = PartitionState(0, RETENTION)
    _fold(state, [charge()])
    first_batch = list(state.take_writes())
    much_later = charge(
        charge_id="C9",
        event_id="E-C9",
        patient_id="P00000002",
        date_of_service="2026-06-01",
        occurred_at="2026-06-01T12:00:00Z",
    )
    _fold(state, [much_later])
    state.sweep()  # as the worker does before each batch's changelog writes
    second_batch = list(state.take_writes())
    tombstones = [w.key for w in second_batch if w.value is None]
    assert len(tombstones) == 1 and b"P00000001" in tombstones[0]
    assert second_batch[-1].key == META_KEY
    fresh = PartitionState(0, RETENTION)
    for write in (*first_batch, *second_batch):  # the changelog, in order
        fresh.restore(write.key, write.value)
    assert [key.patient_id for key in fresh.book.visits] == ["P00000002"]
    assert fresh.watermark == state.watermark
