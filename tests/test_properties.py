"""Property tests: decisions depend on the set of events and the pack, nothing else."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.charge import Charge, charge_from_dict
from rules.engine import Verdict
from rules.pack import load_packs
from rules.visit import VisitBook, decide_events
from tests.factories import event_dict

PACKS = load_packs()
CODES = ["97012", "97012", "97012", "98941", "97140", "97110", "97035", "9701"]
MODS = ["GP", "GY", "59", "XS", "XU", "KX", "G"]
PAYERS = [
    {"payer_id": "MEDICARE", "name": "Medicare", "plan_type": "MEDICARE"},
    {"payer_id": "UHC", "name": "UHC", "plan_type": "COMMERCIAL"},
    {"payer_id": "AETNA", "name": "Aetna", "plan_type": "COMMERCIAL"},
]
METHODS = ["MECHANICAL_DEVICE", "ROLLER_TABLE", "FLEXION_DISTRACTION", "DECOMPRESSION_DEVICE"]


@st.composite
def visit_events(draw: st.DrawFn) -> list[Charge]:
    """Events of 1-3 visits: several charges, re-upserts, voids and redeliveries."""
    events: list[Charge] = []
    n_charges = draw(st.integers(1, 5))
    for number in range(n_charges):
        for version in range(draw(st.integers(1, 3))):
            minute = draw(st.integers(0, 59))
            code = draw(st.sampled_from(CODES))
            fields: dict[str, Any] = {
                "event_id": f"E{number}-{version}",
                "event_type": "VOID" if draw(st.integers(0, 6)) == 0 else "UPSERT",
                "charge_id": f"C{number}",
                "patient_id": draw(st.sampled_from(["P1", "P2"])),
                "date_of_service": draw(st.sampled_from(["2026-03-02", "2026-03-01"])),
                "occurred_at": f"2026-03-02T15:{minute:02d}:00Z",
                "cpt_code": code,
                "units": draw(st.integers(0, 3)),
                "modifiers": draw(st.lists(st.sampled_from(MODS), max_size=5, unique=True)),
                "payer": draw(st.sampled_from(PAYERS)),
                "traction": {"method": draw(st.sampled_from(METHODS))} if code == "97012" else None,
            }
            events.append(charge_from_dict(event_dict(**fields)))
    redelivered = draw(st.lists(st.sampled_from(events), max_size=3))
    return events + redelivered


def final(events: list[Charge]) -> dict[str, Verdict | None]:
    return {cid: d.verdict for cid, d in decide_events(events, PACKS).items()}


@settings(max_examples=150, deadline=None)
@given(visit_events(), st.randoms(use_true_random=False))
def test_every_arrival_order_gives_the_same_final_decisions(events: list[Charge], rnd: Any) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert final(shuffled) == final(events)


@settings(max_examples=100, deadline=None)
@given(visit_events(), st.data())
def test_replaying_any_event_twice_changes_nothing(events: list[Charge], data: Any) -> None:
    again = data.draw(st.sampled_from(events))
    position = data.draw(st.integers(0, len(events)))
    assert final([*events[:position], again, *events[position:]]) == final(events)


@settings(max_examples=60, deadline=None)
@given(visit_events(), st.randoms(use_true_random=False))
def test_streamed_publications_end_at_the_batch_decision(events: list[Charge], rnd: Any) -> None:
    """The worker's per-event path ends where deciding the final set once ends."""
    shuffled = list(events)
    rnd.shuffle(shuffled)
    book = VisitBook()
    latest: dict[str, tuple[int, str]] = {}
    from rules.charge import DecisionSource

    for offset, event in enumerate(shuffled):
        src = DecisionSource(topic="t", partition=0, offset=offset, event_id=event.event_id)
        for key in book.apply(event):
            for pub in book.visits[key].publish_changes(PACKS.for_date(key[1]), src):
                if pub.decision.status != "RETRACTED":
                    version = pub.decision.decision_version
                    assert version > latest.get(pub.decision.charge_id, (0, ""))[0]
                    latest[pub.decision.charge_id] = (version, pub.decision.status)
    expected = {cid: (v.status if v else "VOIDED") for cid, v in final(events).items()}
    assert {cid: status for cid, (_, status) in latest.items()} == expected


def test_decisions_do_not_depend_on_wall_clock(monkeypatch: Any) -> None:
    events = [
        charge_from_dict(event_dict(units=2)),
        charge_from_dict(event_dict(charge_id="C2", cpt_code="97140")),
    ]
    before = final(events)

    class FrozenEarlier(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return dt.datetime(2001, 1, 1, tzinfo=tz)  # before every date of service

    monkeypatch.setattr(dt, "datetime", FrozenEarlier)
    monkeypatch.setattr(dt, "date", type("D", (dt.date,), {"today": lambda: dt.date(2001, 1, 1)}))
    assert final(events) == before
