"""Worker pieces that need no broker: call deadlines and gauges derived from state."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from rules.charge import DecisionSource
from rules.pack import load_packs
from tests.factories import charge
from worker.errors import CallDeadlineExceeded
from worker.kafka.deadlines import with_deadline
from worker.runtime.gauges import oldest_held_age
from worker.state.store import PartitionState


def test_with_deadline_returns_value_and_propagates_errors() -> None:
    assert with_deadline(lambda: 42, 1.0, "answer") == 42
    with pytest.raises(ZeroDivisionError):
        with_deadline(lambda: 1 // 0, 1.0, "divide")


def test_with_deadline_fails_a_call_that_never_returns() -> None:
    never = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallDeadlineExceeded, match="commit_transaction"):
        with_deadline(never.wait, 0.2, "commit_transaction")
    assert time.monotonic() - started < 5  # failed at the deadline, did not hang
    never.set()


def test_oldest_held_age_is_event_time_since_the_held_line() -> None:
    state = PartitionState(0, dt.timedelta(days=30))
    packs = load_packs()
    held = charge(event_id="E1", charge_id="H1", units=0, occurred_at="2026-03-02T10:00:00Z")
    later = charge(
        event_id="E2", charge_id="A1", patient_id="P2", occurred_at="2026-03-02T12:30:00Z"
    )
    for offset, event in enumerate([held, later]):
        source = DecisionSource(topic="t", partition=0, offset=offset, event_id=event.event_id)
        state.decide(event, source, packs)
    assert oldest_held_age({0: state}) == pytest.approx(2.5 * 3600)
    assert oldest_held_age({}) == 0.0
