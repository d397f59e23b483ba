"""Partition state through its changelog records: what restoration rebuilds is what was written."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rules.charge import Charge, DecisionSource, ValidationError
from rules.model import DecisionStatus, ErrorKind
from rules.pack import PackSet, load_packs
from rules.visit import Publication, VisitKey, emitted
from tests.factories import charge, other_line
from worker.errors import TopicLayoutError, UndecidableRecord
from worker.state.changelog import META_KEY
from worker.state.store import EXPIRED_FLAG, PartitionState
from worker.state.visit_format import VISIT_FORMAT, default_visit_codec

PACKS: PackSet = load_packs()
RETENTION = dt.timedelta(days=30)


def _source(offset: int, event_id: str) -> DecisionSource:
    return DecisionSource(topic="charges.captured", partition=0, offset=offset, event_id=event_id)


def _emit(state: PartitionState, *args: Any, **kwargs: Any) -> list[Publication]:
    """What deciding one event emits on its own (each event its own batch)."""
    return emitted(state.decide(*args, **kwargs))


def _fold(state: PartitionState, events: list[Charge]) -> list[Publication]:
    """The records the events emit, each event its own batch."""
    out: list[Publication] = []
    for offset, event in enumerate(events):
        out += _emit(state, event, _source(offset, event.event_id), PACKS)
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
    codec = default_visit_codec()
    raw = codec.encode(visit)
    assert raw[0] == VISIT_FORMAT  # the format byte
    again = codec.decode(visit.key, raw)
    assert again.charges == visit.charges and set(again.charges) == {"C1", "C2"}
    assert again.published == visit.published
    assert codec.encode(again) == raw  # the same visit writes the same bytes


def test_restored_state_decides_the_next_event_as_the_original_would() -> None:
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(units=3)])
    restored = _restored(state)
    assert restored.watermark == state.watermark
    late_cmt = other_line("98941", "C2", event_id="E-C2")
    original = _emit(state, late_cmt, _source(1, "E-C2"), PACKS)
    rebuilt = _emit(restored, late_cmt, _source(1, "E-C2"), PACKS)
    assert [p.decision for p in rebuilt] == [p.decision for p in original]
    # the traction line moves to review: RETRACTED + HELD, version 2, after restoration too
    statuses = [
        (p.decision.charge_id, p.decision.status, p.decision.decision_version) for p in rebuilt
    ]
    assert ("C1", DecisionStatus.RETRACTED, 2) in statuses
    assert ("C1", DecisionStatus.HELD, 2) in statuses


def test_a_json_visit_of_version_0_1_restores_and_its_versions_continue() -> None:
    """charge-capture 0.1 wrote visits as JSON; a changelog it wrote restores into this one,
    and the next decision of its charge is a new version (its fingerprint is 0.1's)."""
    import json

    from rules.model import ChargeEvent
    from tests.factories import event_dict
    from worker.state.changelog import visit_key_bytes

    line = ChargeEvent.model_validate(event_dict(units=3)).model_dump(mode="json")
    legacy = {
        "charges": [line],
        "seen": [line["event_id"]],
        "published": {line["charge_id"]: [1, "CORRECTED", "corrected", "ab" * 12]},
    }
    state = PartitionState(0, RETENTION)
    key = VisitKey(line["patient_id"], dt.date.fromisoformat(line["date_of_service"]))
    state.restore(visit_key_bytes(key), json.dumps(legacy).encode())
    assert state.book.home == {line["charge_id"]: key} and len(state.visits) == 1
    (visit,) = state.book.visits.values()
    assert visit.charges[line["charge_id"]].units == 3
    cmt = other_line("98941", "C2", event_id="E-C2")
    published = _emit(state, cmt, _source(1, "E-C2"), PACKS)
    versions = {(p.decision.charge_id, p.decision.decision_version) for p in published}
    assert (line["charge_id"], 2) in versions and ("C2", 1) in versions
    (write,) = [w for w in state.take_writes() if w.key == visit_key_bytes(key)]
    assert write.value is not None and write.value[0] == VISIT_FORMAT  # written anew as Avro


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


# -- versions across expiry -----------------------------------------------------------------

MARCH = "2026-03-02"


def _at(when: str) -> dict[str, str]:
    return {"occurred_at": when}


def _advance(state: PartitionState, day: str) -> None:
    """Move the partition's event time to `day` with another patient's visit on that day."""
    moment = _at(f"{day}T09:00:00Z")
    other = charge(charge_id="C8", event_id="E8", patient_id="P2", date_of_service=day, **moment)
    _fold(state, [other])


def _decisions(pubs: list[Publication]) -> list[tuple[str, DecisionStatus, int, str]]:
    return [
        (p.decision.charge_id, p.decision.status, p.decision.decision_version, p.ledger.value)
        for p in pubs
    ]


def _expired_march_visit() -> PartitionState:
    """C1 decided twice in March (v1 ACCEPTED, v2 CORRECTED), then event time moves to mid
    April, past the 30-day retention of that visit."""
    state = PartitionState(0, RETENTION)
    _fold(
        state, [charge(event_id="E1"), charge(event_id="E2", units=3, **_at(f"{MARCH}T15:05:00Z"))]
    )
    _advance(state, "2026-04-15")
    assert state.is_expired(VisitKey("P00000001", dt.date(2026, 3, 2)))
    return state


def test_events_for_an_expired_visit_continue_the_charges_versions() -> None:
    state = _expired_march_visit()
    first = _emit(
        state, charge(event_id="E3", **_at("2026-04-16T10:00:00.100Z")), _source(3, "E3"), PACKS
    )
    second = _emit(
        state,
        charge(event_id="E4", units=2, **_at("2026-04-16T10:00:00.900Z")),
        _source(4, "E4"),
        PACKS,
    )
    assert _decisions(first) == [("C1", DecisionStatus.ACCEPTED, 3, "corrected")]
    assert _decisions(second) == [("C1", DecisionStatus.CORRECTED, 4, "corrected")]
    assert all(EXPIRED_FLAG in p.decision.flags for p in (*first, *second))
    # the same event again (a retry at another offset) changes nothing
    again = charge(event_id="E4", units=2, **_at("2026-04-16T10:00:00.900Z"))
    assert _emit(state, again, _source(5, "E4"), PACKS) == []
    # an event older than the one the last decision came from changes nothing either
    stale = charge(event_id="E0", units=5, **_at(f"{MARCH}T14:00:00Z"))
    assert _emit(state, stale, _source(6, "E0"), PACKS) == []


def test_a_held_charge_released_after_expiry_is_retracted_from_review() -> None:
    state = PartitionState(0, RETENTION)
    undocumented = charge(event_id="E1", documentation={"progress_note": False})
    assert _decisions(_fold(state, [undocumented])) == [("C1", DecisionStatus.HELD, 1, "held")]
    _advance(state, "2026-05-01")
    fixed = charge(event_id="E2", **_at("2026-05-02T09:00:00Z"))
    assert _decisions(_emit(state, fixed, _source(9, "E2"), PACKS)) == [
        ("C1", DecisionStatus.RETRACTED, 2, "held"),
        ("C1", DecisionStatus.ACCEPTED, 2, "corrected"),
    ]


def test_a_charge_moved_out_of_an_expired_visit_keeps_counting_swept_or_not() -> None:
    moved = charge(event_id="E5", date_of_service="2026-04-14", **_at("2026-04-16T08:00:00Z"))
    outcomes = []
    for swept in (False, True):
        state = _expired_march_visit()
        if swept:
            state.sweep()
        outcomes.append(_decisions(_emit(state, moved, _source(5, "E5"), PACKS)))
    assert outcomes[0] == outcomes[1] == [("C1", DecisionStatus.ACCEPTED, 3, "corrected")]


def test_retired_charges_survive_restoration() -> None:
    state = _expired_march_visit()
    state.sweep()
    assert set(state.retired) == {"C1"}
    restored = _restored(state)
    assert restored.retired == state.retired
    late = charge(event_id="E3", units=4, **_at("2026-04-16T10:00:00Z"))
    assert [p.decision for p in _emit(restored, late, _source(3, "E3"), PACKS)] == [
        p.decision for p in _emit(state, late, _source(3, "E3"), PACKS)
    ]


def test_a_date_of_service_beyond_the_version_memory_is_undecidable() -> None:
    state = PartitionState(0, RETENTION, version_memory=dt.timedelta(days=400))
    _advance(state, "2027-06-01")
    with pytest.raises(UndecidableRecord) as caught:
        _emit(state, charge(event_id="E1"), _source(1, "E1"), PACKS)
    assert caught.value.kind == ErrorKind.VALIDATION
    assert "400 days" in caught.value.message


# -- event time ---------------------------------------------------------------------------


def test_an_occurred_at_after_its_record_was_produced_is_dead_lettered() -> None:
    """A mistyped future capture time would move event time (expiring the partition) and win
    every later edit of the charge; the record's Kafka timestamp exposes it."""
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(event_id="E1")])
    before = state.watermark
    typo = charge(charge_id="C2", event_id="E2", patient_id="P2", **_at("2099-03-02T15:00:00Z"))
    captured = dt.datetime(2026, 3, 2, 16, 0, tzinfo=dt.UTC)
    with pytest.raises(UndecidableRecord, match="occurred_at is more than a day after"):
        _emit(state, typo, _source(2, "E2"), PACKS, record_time=captured)
    assert state.watermark == before and "C2" not in state.book.home
    skewed = charge(charge_id="C3", event_id="E3", **_at("2026-03-03T12:00:00Z"))
    assert _emit(state, skewed, _source(3, "E3"), PACKS, record_time=captured) != []


def test_dates_at_the_end_of_the_calendar_are_decided_not_crashed_on() -> None:
    """9999-12-31 is a common "unknown" placeholder: date arithmetic must not overflow."""
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(event_id="E1")])
    placeholder = charge(charge_id="C2", event_id="E2", date_of_service="9999-12-31")
    (decision,) = [p.decision for p in _emit(state, placeholder, _source(2, "E2"), PACKS)]
    assert decision.status == DecisionStatus.HELD  # INVALID_CHARGE: after the capture time
    state.sweep()
    # captured "at the end of time": event time jumps there, and March is beyond any memory
    late = charge(charge_id="C3", event_id="E3", **_at("9999-12-31T23:00:00Z"))
    with pytest.raises(UndecidableRecord, match="date of service is more than"):
        _emit(state, late, _source(3, "E3"), PACKS, record_time=None)
    state.sweep()
    assert [w.key for w in state.take_writes()][-1] == META_KEY


def test_only_the_expired_visit_is_flagged_when_a_charge_moves_into_it() -> None:
    state = _expired_march_visit()
    april = {"date_of_service": "2026-04-14", **_at("2026-04-15T13:00:00Z")}
    duplicate = {"date_of_service": "2026-04-14", **_at("2026-04-15T13:30:00Z")}
    _fold(state, [charge(charge_id="C5", event_id="E5", **april)])
    _fold(state, [charge(charge_id="C6", event_id="E6", **duplicate)])  # HELD: TRACTION_DUPLICATE
    back = charge(charge_id="C5", event_id="E7", **_at("2026-04-15T14:00:00Z"))  # to March
    by_day: dict[str, list[tuple[str, bool]]] = {}
    for p in _emit(state, back, _source(7, "E7"), PACKS):
        day = p.decision.date_of_service.isoformat()
        by_day.setdefault(day, []).append((p.decision.status.value, bool(p.decision.flags)))
    assert by_day["2026-03-02"] == [("ACCEPTED", True)]
    # C6 stands alone in April now: released from review, in a live visit, so not flagged
    assert by_day["2026-04-14"] == [("RETRACTED", False), ("ACCEPTED", False)]


def test_a_rekeyed_event_does_not_move_event_time() -> None:
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(event_id="E1")])
    before = state.watermark
    late = charge(charge_id="C2", event_id="E2", patient_id="P2", **_at("2026-06-01T00:00:00Z"))
    assert _emit(state, late, _source(2, "E2"), PACKS, rekeyed=True) != []
    assert state.watermark == before


def test_a_charge_captured_before_its_date_of_service_is_remembered_from_that_date() -> None:
    """A mistyped capture year (a fixable INVALID_CHARGE hold) must not make the retired
    record be forgotten while events for its date of service are still decided."""
    state = PartitionState(0, RETENTION, version_memory=dt.timedelta(days=40))
    typo = charge(event_id="E1", **_at("2024-03-02T15:00:00Z"))
    assert _decisions(_fold(state, [typo])) == [("C1", DecisionStatus.HELD, 1, "held")]
    _advance(state, "2026-04-08")
    state.sweep()
    assert set(state.retired) == {"C1"}
    fixed = charge(event_id="E2", **_at("2026-04-09T09:00:00Z"))
    assert _decisions(_emit(state, fixed, _source(9, "E2"), PACKS)) == [
        ("C1", DecisionStatus.RETRACTED, 2, "held"),
        ("C1", DecisionStatus.ACCEPTED, 2, "corrected"),
    ]


@pytest.mark.parametrize("patient_id", ["P1\x1f2026-03-02", "\x00retired", "P1\n"])
def test_a_patient_id_with_control_characters_is_not_decidable(patient_id: str) -> None:
    # It would collide with the state store's key separators; such an event is dead-lettered.
    with pytest.raises(ValidationError, match="patient_id"):
        charge(patient_id=patient_id)


def test_state_built_under_another_partition_layout_is_refused() -> None:
    built = PartitionState(0, RETENTION, layout="murmur2/6")
    _fold(built, [charge(event_id="E1")])
    changelog = list(built.take_writes())
    for layout, refused in (("murmur2/6", False), ("crc32/6", True), ("murmur2/12", True)):
        fresh = PartitionState(0, RETENTION, layout=layout)
        if refused:
            with pytest.raises(TopicLayoutError, match="murmur2/6"):
                for write in changelog:
                    fresh.restore(write.key, write.value)
        else:
            for write in changelog:
                fresh.restore(write.key, write.value)
            assert fresh.book.visits.keys() == built.book.visits.keys()
    unrecorded = PartitionState(0, RETENTION, layout="crc32/6")  # meta from before layouts
    unrecorded.restore(META_KEY, b'{"watermark": null}')
    assert unrecorded.watermark is None


def test_an_event_that_loses_to_the_current_one_leaves_no_state_behind() -> None:
    """Memory-only traces of a losing event would make a restored worker decide differently."""
    state = PartitionState(0, RETENTION)
    _fold(state, [charge(event_id="E2", **_at(f"{MARCH}T16:00:00Z"))])
    older = charge(event_id="E1", date_of_service="2026-03-03", **_at(f"{MARCH}T15:00:00Z"))
    assert _emit(state, older, _source(1, "E1"), PACKS) == []
    assert list(state.book.visits) == [VisitKey("P00000001", dt.date(2026, 3, 2))]
    visit = state.book.visits[VisitKey("P00000001", dt.date(2026, 3, 2))]
    assert [c.event_id for c in visit.charges.values()] == ["E2"]


def test_a_date_of_service_before_every_rule_pack_is_undecidable() -> None:
    """No pack in force: dead-lettered with the dates, never decided by another date's pack,
    and it records nothing (no event time, no visit)."""
    state = PartitionState(0, RETENTION)
    early = charge(event_id="E1", date_of_service="2001-01-02", occurred_at="2001-01-02T10:00:00Z")
    with pytest.raises(UndecidableRecord, match=r"2001-01-02.*2015-10-01") as raised:
        _emit(state, early, _source(0, "E1"), PACKS)
    assert raised.value.kind is ErrorKind.VALIDATION
    assert state.watermark is None and not state.book.visits


def test_a_restore_indexes_each_line_and_its_hold_as_the_full_lines_say() -> None:
    """The restore's skim of a visit record (charge ids, held times) agrees with reading its
    lines in full, over a generated day with holds in it."""
    from rules.charge import charge_from_dict
    from worker.offline.sample import generate_events

    state = PartitionState(0, RETENTION)
    _fold(state, [charge_from_dict(e) for e in generate_events(300, 5)])
    codec = default_visit_codec()
    held = 0
    for write in state.take_writes():
        if write.key[:1] == b"\x00" or write.value is None:
            continue
        full = [
            (line.charge_id, line.occurred_at if _is_held(line) else None)
            for line in codec.read_lines(write.value)
        ]
        assert codec.held_index(write.value) == full
        value = write.value
        held += sum(1 for _, at in full if at is not None)
    assert held > 0  # the day has held charges: the HELD branch was read
    with pytest.raises(ValueError, match="do not read"):
        codec.held_index(value[: len(value) // 2])


def _is_held(line: Any) -> bool:
    return line.published is not None and line.published.status == DecisionStatus.HELD
