"""The visit store's decoded set and the Avro bodies it copies into changelog values."""

from __future__ import annotations

import datetime as dt

from rules.charge import Charge, DecisionSource, charge_from_dict
from rules.pack import load_packs
from tests.factories import event_dict
from worker.state.store import PartitionState
from worker.state.visit_format import default_visit_codec
from worker.state.visits import BODY_LIMIT_FACTOR, VisitStore

PACKS = load_packs()


def _charge(n: int) -> Charge:
    return charge_from_dict(event_dict(charge_id=f"C{n}", event_id=f"E{n}", patient_id=f"P{n}"))


def test_the_latest_bodies_survive_a_full_generation() -> None:
    store = VisitStore(default_visit_codec(), hot_limit=2)
    per_generation = BODY_LIMIT_FACTOR * 2
    charges = [_charge(n) for n in range(2 * per_generation + 1)]
    for n, charge in enumerate(charges):
        store.remember(charge, f"body-{n}".encode())  # not the charge's encoding: a marker
    # The last full generation and the new one are both found; the one before is not.
    for n in range(per_generation, len(charges)):
        assert store.body(charges[n]) == f"body-{n}".encode()
    encoded = default_visit_codec().encode_charge(charges[0])
    assert store.body(charges[0]) == encoded != b"body-0"


def test_shrinking_the_decoded_set_keeps_every_decided_visit() -> None:
    state = PartitionState(0, dt.timedelta(days=30), hot_visits=8)
    warm = PartitionState(0, dt.timedelta(days=30), hot_visits=8)
    events = [_charge(n) for n in range(8)]
    for offset, event in enumerate(events):
        source = DecisionSource(topic="t", partition=0, offset=offset, event_id=event.event_id)
        for target in (state, warm):
            target.decide(event, source, PACKS)
    state.visits.resize(2)  # six changed visits are encoded and leave the decoded set
    assert state.visits.hot_limit == 2 and len(state.visits._hot) == 2
    assert list(state.take_writes()) == list(warm.take_writes())
    for key in warm.visits:
        assert state.visits[key].charges == warm.visits[key].charges
