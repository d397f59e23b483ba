"""Visit state and the decision-record contract (versions, RETRACTED, VOIDED)."""

from __future__ import annotations

from rules.charge import Charge, DecisionSource
from rules.model import DecisionStatus
from rules.pack import load_packs
from rules.visit import Ledger, Publication, VisitBook, emitted
from tests.factories import charge, other_line

PACKS = load_packs()


def feed(book: VisitBook, event: Charge, offset: int = 0) -> list[Publication]:
    """The records one event emits on its own (each event its own batch)."""
    source = DecisionSource(
        topic="charges.captured", partition=0, offset=offset, event_id=event.event_id
    )
    out: list[Publication] = []
    for key in book.apply(event):
        visit = book.visits[key]
        out += visit.publish_changes(PACKS.for_date(key.date_of_service), source)
    return emitted(out)


def summary(pubs: list[Publication]) -> list[tuple[str, str, str, int]]:
    return [
        (p.ledger.value, p.decision.charge_id, p.decision.status.value, p.decision.decision_version)
        for p in pubs
    ]


def test_late_cmt_line_moves_traction_to_held_with_a_retraction() -> None:
    book = VisitBook()
    assert summary(feed(book, charge(event_id="E1"))) == [("corrected", "C1", "ACCEPTED", 1)]
    pubs = feed(book, other_line("98941", "C2", event_id="E2"), offset=1)
    assert summary(pubs) == [
        ("corrected", "C1", "RETRACTED", 2),
        ("held", "C1", "HELD", 2),
        ("corrected", "C2", "ACCEPTED", 1),
    ]
    held = pubs[1].decision
    assert held.holds[0].rule_id == "DISTINCT_MODIFIER_MISSING"
    assert held.source.event_id == "E2" and held.source.offset == 1


def test_void_gives_voided_on_the_ledger_that_last_held_it() -> None:
    book = VisitBook()
    feed(book, charge(event_id="E1", units=0))  # HELD: INVALID_CHARGE
    void = charge(event_id="E2", event_type="VOID", occurred_at="2026-03-02T16:00:00Z")
    assert summary(feed(book, void)) == [("held", "C1", "VOIDED", 2)]
    assert feed(book, void) == []  # repeated event_id: nothing


def test_void_of_unknown_charge_is_announced_on_the_billable_ledger() -> None:
    book = VisitBook()
    void = charge(event_id="E9", event_type="VOID")
    assert summary(feed(book, void)) == [("corrected", "C1", "VOIDED", 1)]


def test_older_upsert_after_a_newer_one_changes_nothing() -> None:
    book = VisitBook()
    feed(book, charge(event_id="E2", units=1, occurred_at="2026-03-02T16:00:00Z"))
    assert feed(book, charge(event_id="E1", units=3, occurred_at="2026-03-02T15:00:00Z")) == []


def test_unchanged_resend_with_new_event_id_is_not_a_new_decision() -> None:
    book = VisitBook()
    feed(book, charge(event_id="E1"))
    assert feed(book, charge(event_id="E2", occurred_at="2026-03-02T17:00:00Z")) == []


def test_correction_of_a_held_line_moves_it_back_with_retraction_on_held() -> None:
    book = VisitBook()
    feed(book, charge(event_id="E1", units=0))
    fixed = charge(event_id="E2", units=1, occurred_at="2026-03-02T16:00:00Z")
    assert summary(feed(book, fixed)) == [
        ("held", "C1", "RETRACTED", 2),
        ("corrected", "C1", "ACCEPTED", 2),
    ]


def test_charge_moving_to_another_date_keeps_its_version_count() -> None:
    book = VisitBook()
    feed(book, charge(event_id="E1"))
    moved = charge(event_id="E2", date_of_service="2026-03-01", occurred_at="2026-03-02T16:00Z")
    (pub,) = feed(book, moved)
    assert pub.decision.decision_version == 2 and str(pub.decision.date_of_service) == "2026-03-01"
    assert all(not v.charges for k, v in book.visits.items() if str(k[1]) == "2026-03-02")


def test_ledger_of_status() -> None:
    assert Ledger.of(DecisionStatus.HELD) is Ledger.REVIEW
    assert Ledger.of(DecisionStatus.CORRECTED) is Ledger.BILLABLE
