"""The live worker's sensor counts a batch at once, into the series prometheus_client would give."""

from __future__ import annotations

import datetime as dt
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rules.charge import Correction, Decision, DecisionSource, Hold, RulePackRef
from rules.model import DecisionStatus
from tests.factories import charge
from worker.observability.metrics import (
    EVENT_TO_DECISION_BUCKETS,
    BulkHistogram,
    Metrics,
    PrometheusSensor,
)

BOUNDS = list(EVENT_TO_DECISION_BUCKETS)
values = st.lists(
    st.one_of(st.sampled_from(BOUNDS), st.floats(0, 200_000, allow_nan=False)), max_size=60
)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@settings(max_examples=100, deadline=None)
@given(values, st.integers(1, 7))
def test_a_bulk_histogram_exposes_what_prometheus_clients_histogram_does(
    observed: list[float], chunk: int
) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("lag_seconds", "Lag.", buckets=EVENT_TO_DECISION_BUCKETS, registry=theirs)
    bulk = BulkHistogram("lag_seconds", "Lag.", EVENT_TO_DECISION_BUCKETS, ours)
    for value in observed:
        histogram.observe(value)
    for start in range(0, len(observed), chunk):
        bulk.observe_many(observed[start : start + chunk])
    expected, got = _samples(theirs), _samples(ours)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_sum"):  # summed in another order: equal up to rounding
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert got[key] == value, key


def _decision(status: DecisionStatus, *, holds: tuple[str, ...] = (), fixes: int = 0) -> Decision:
    billed = charge()
    return Decision(
        charge_id=billed.charge_id,
        patient_id=billed.patient_id,
        date_of_service=billed.date_of_service,
        status=status,
        charge=billed,
        corrections=tuple(
            Correction(rule_id="TRACTION_UNITS", field="units", before="2", after="1", message="")
            for _ in range(fixes)
        ),
        holds=tuple(Hold(rule_id=r, message="", related_charge_ids=()) for r in holds),
        decision_version=1,
        rule_pack=RulePackRef(id="p", version="1"),
        source=DecisionSource(topic="t", partition=0, offset=0, event_id="e"),
    )


def test_the_sensor_counts_a_batch_into_the_metrics_once_it_is_emitted() -> None:
    metrics = Metrics()
    sensor = PrometheusSensor(metrics)
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    batch = [
        _decision(DecisionStatus.ACCEPTED),
        _decision(DecisionStatus.CORRECTED, fixes=1),
        _decision(DecisionStatus.HELD, holds=("TRACTION_DUPLICATE", "NCCI_PTP")),
        _decision(DecisionStatus.HELD, holds=("TRACTION_DUPLICATE",)),
        # A retraction's findings are not counted again: they were the retracted decision's.
        _decision(DecisionStatus.RETRACTED, holds=("NCCI_PTP",)),
    ]
    for decision in batch:
        sensor.decided(decision, an_hour_ago)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(f"charge_capture_{name}", labels)

    assert value("decisions_total", status="HELD") == 0  # not before the batch is emitted
    sensor.emitted()
    assert value("decisions_total", status="HELD") == 2
    assert value("decisions_total", status="ACCEPTED") == 1
    assert value("decisions_total", status="RETRACTED") == 1
    assert value("holds_total", rule_id="TRACTION_DUPLICATE") == 2
    assert value("holds_total", rule_id="NCCI_PTP") == 1
    assert value("corrections_total", rule_id="TRACTION_UNITS") == 1
    histogram = "event_to_decision_seconds"
    assert value(f"{histogram}_count") == 5
    assert value(f"{histogram}_bucket", le="900.0") == 0
    assert value(f"{histogram}_bucket", le="3600.0") == 0  # an hour and a little more
    assert value(f"{histogram}_bucket", le="14400.0") == 5
    sensor.emitted()  # a second batch with nothing in it adds nothing
    assert value("decisions_total", status="HELD") == 2
    assert value(f"{histogram}_count") == 5
