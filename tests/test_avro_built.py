"""The built Avro readers and writers (worker/serde/avro_built.py, written by
worker.state.avro_build): present for every function the hot path asks for, in use, and
the same in what they read and write as the functions generated at start-up."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.charge import DecisionSource, charge_from_dict
from rules.pack import load_packs
from rules.visit import emitted
from worker.offline.sample import generate_events
from worker.serde import avro_built, avro_fast
from worker.serde.codec import Codec
from worker.state import avro_build
from worker.state.store import PartitionState
from worker.state.visit_format import VisitCodec


def test_the_built_module_is_what_the_build_would_write() -> None:
    # A change to schemas/ or to the generator without `python -m worker.state.avro_build`
    # leaves the hot path on interpreted code: fail here, not in a benchmark.
    assert avro_build.main(["--check"]) == 0
    missing = [key for key, _ in avro_build.requested() if key not in avro_built.FUNCTIONS]
    assert missing == []


def test_the_codecs_use_the_built_functions() -> None:
    codec, visits = Codec(), VisitCodec()
    for function in (codec._read_event._read, codec._write_charge, visits._read_charge):
        assert _built(function), function


def _built(function: object) -> bool:
    # Interpreted, a built function is `build_<key>.<locals>.read`; compiled by mypyc, an
    # instance of `read_build_<key>_obj`.
    name = getattr(function, "__qualname__", type(function).__name__)
    return "build_" in name


def test_built_and_generated_functions_read_and_write_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built, built_visits = Codec(), VisitCodec()
    monkeypatch.setattr(avro_fast, "_built", dict)
    generated, generated_visits = Codec(), VisitCodec()
    assert not _built(generated._read_event._read)

    packs, state = load_packs(), PartitionState(0, dt.timedelta(days=30))
    for offset, event in enumerate(generate_events(150, seed=11)):
        charge = charge_from_dict(event)
        source = DecisionSource(topic="in", partition=0, offset=offset, event_id=charge.event_id)
        for decision in emitted(state.decide(charge, source, packs)):
            out = decision.decision
            assert built.encode_decision(out) == generated.encode_decision(out)
        value = built.encode_event(charge)
        assert value == generated.encode_event(charge)
        assert built.read_event(value) == generated.read_event(value)
    assert len(state.visits) == 150
    published = 0
    for visit in state.visits.values():
        published += len(visit.published)
        raw = built_visits.encode(visit)
        assert raw == generated_visits.encode(visit)
        ours, theirs = built_visits.decode(visit.key, raw), generated_visits.decode(visit.key, raw)
        assert (ours.charges, ours.published) == (theirs.charges, theirs.published)
        assert ours.charges == visit.charges
        assert built_visits.read_lines(raw) == generated_visits.read_lines(raw)
    assert published > 0
