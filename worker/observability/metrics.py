"""Prometheus metrics of the worker, and the sensor that feeds them from the processing path.

Naming follows Prometheus practice: one prefix (``charge_capture_``), base units (seconds,
records), ``_total`` on counters. Labels are only ever bounded, non-PHI values (topic, partition,
decision status, rule id, error kind, ...): never a patient, charge, encounter or diagnosis value,
which would be both PHI and unbounded cardinality. docs/metrics.md lists every metric.

Every ``Metrics`` instance owns a private ``CollectorRegistry`` so tests and several workers in
one process never collide on the global default registry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from rules.charge import Decision
from rules.model import DecisionStatus, ErrorKind
from worker.kafka.records import Record
from worker.observability.health import Health
from worker.observability.logs import fields

log = logging.getLogger("charge_capture.worker")

PREFIX = "charge_capture"

# Bounded label values, pre-created at 0 (see Metrics._counter).
DECISION_STATUSES = ("ACCEPTED", "CORRECTED", "HELD", "RETRACTED", "VOIDED")
DLQ_ERROR_KINDS = tuple(kind.value for kind in ErrorKind)
TRANSACTION_OUTCOMES = ("committed", "aborted")
REBALANCE_KINDS = ("assigned", "revoked", "lost")
# Why the instance started over (worker.runtime.worker): new clients, or a new producer with
# the partitions' state restored in place.
RESTART_REASONS = (
    "broker_unavailable",  # clients could not be opened or a client call failed on the broker
    "call_deadline",  # a transactional call passed its deadline, or its transaction expired
    "batch_failed",  # a batch failed for a reason no record explains
    "fenced",  # another producer took this transactional.id
    "restore_failed",  # reading committed offsets or the changelog failed
)

# Per-batch wall time: a healthy batch takes milliseconds, a slow broker or a big restore seconds.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event time -> decision: sub-second when live, but late events and replays legitimately reach
# hours or a day, and those must land in a bucket rather than all in +Inf.
EVENT_TO_DECISION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    86400.0,
)
# Restoring a partition's visit state from the changelog: sub-second for small partitions, minutes
# for a large or never-compacted changelog.
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _package_version() -> str:
    try:
        return metadata.version("charge-capture")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """All worker metrics, registered on one private registry (``self.registry``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        # -- processing
        self.events_consumed = counter("events_consumed_total", "Input records consumed.", "topic")
        self.decisions = counter(
            "decisions_total", "Charge decisions emitted, by status.", "status", DECISION_STATUSES
        )
        self.holds = counter(
            "holds_total", "Holds raised on emitted decisions, by rule.", "rule_id"
        )
        self.corrections = counter(
            "corrections_total", "Corrections applied on emitted decisions, by rule.", "rule_id"
        )
        self.dlq_records = counter(
            "dlq_records_total",
            "Records sent to the dead-letter topic, by error kind.",
            "error_kind",
            DLQ_ERROR_KINDS,
        )
        self.batch_seconds = histogram(
            "batch_processing_seconds",
            "Wall time to decide one polled batch and commit its transaction.",
            BATCH_BUCKETS,
        )
        self.event_to_decision_seconds = BulkHistogram(
            f"{PREFIX}_event_to_decision_seconds",
            "Event time (occurred_at) to decision emitted.",
            EVENT_TO_DECISION_BUCKETS,
            self.registry,
        )
        # -- Kafka
        self.transactions = counter(
            "transactions_total", "Kafka transactions, by outcome.", "outcome", TRANSACTION_OUTCOMES
        )
        self.rebalances = counter(
            "rebalances_total", "Consumer-group rebalance callbacks.", "kind", REBALANCE_KINDS
        )
        self.instance_restarts = counter(
            "instance_restarts_total",
            "Times the instance started over (new clients, or a new producer and state restored), "
            "by reason.",
            "reason",
            RESTART_REASONS,
        )
        self.broker_unreachable = gauge(
            "broker_unreachable_seconds",
            "How long no broker has answered (0 while one does).",
        )
        self.partitions_assigned = gauge(
            "partitions_assigned", "Input partitions currently assigned."
        )
        self.consumer_lag = gauge(
            "consumer_lag_records",
            "Input records not yet committed (highwater minus committed offset).",
            "topic",
            "partition",
        )
        # -- state
        self.state_visits = gauge(
            "state_visits", "Visits (patient and date of service) held in state."
        )
        self.restore_seconds = histogram(
            "restore_seconds",
            "Time to restore one partition's state from the changelog.",
            RESTORE_BUCKETS,
        )
        self.restore_records = counter(
            "restore_records_total", "Changelog records read while restoring."
        )
        self.oldest_held_age = gauge(
            "oldest_held_charge_age_seconds", "Event-time age of the oldest charge currently HELD."
        )
        # -- health
        self.last_progress = gauge(
            "last_progress_timestamp_seconds", "Unix time of the last processed batch or idle poll."
        )
        self.ready = gauge("ready", "1 when /readyz answers OK.")
        # Info exposes charge_capture_build_info{version="..."} 1.
        self.build_info = Info(f"{PREFIX}_build", "Build information.", registry=self.registry)
        self.build_info.info({"version": _package_version()})

    def _counter(
        self, name: str, doc: str, label: str | None = None, preset: Iterable[str] = ()
    ) -> Counter:
        """A counter, with the series of `preset` label values created at 0, so rate() and
        increase() see a series from the first scrape (one that first appears at 1 looks like
        "no increase" to PromQL)."""
        labels = [label] if label else []
        metric = Counter(f"{PREFIX}_{name}", doc, labels, registry=self.registry)
        for value in preset:
            metric.labels(value)
        return metric

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", doc, list(labels), registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(f"{PREFIX}_{name}", doc, buckets=buckets, registry=self.registry)

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop lag series of revoked/lost partitions.

        Otherwise a partition that moved to another instance would keep reporting its last lag
        here forever, double-counting it and tripping the lag alerts.
        """
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(topic, str(partition))

    def bind_health(self, health: Health) -> None:
        """Make ``charge_capture_ready`` always agree with ``/readyz``."""
        self.ready.set_function(lambda: 1.0 if health.readiness()[0] else 0.0)


class BulkHistogram(Collector):
    """A Prometheus histogram that takes a batch's observations in one call.

    prometheus_client's Histogram takes a lock and walks its buckets in Python for every
    observation: about 2.4 µs, once per decision. This one counts a whole batch's values into
    buckets with `bisect` first and merges them under one lock (`observe_many`). It is
    exposed as a custom collector, prometheus_client's documented way to serve values kept
    elsewhere: the same `_bucket` (cumulative, `le` formatted as prometheus_client formats
    it), `_count` and `_sum` series, without `_created`.
    """

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = (*buckets, math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()  # the HTTP thread collects while the worker observes
        registry.register(self)

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        bounds = self._bounds
        counts = [0] * len(bounds)
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # a bucket holds values <= its bound
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = self._counts, self._sum
        buckets = [
            (floatToGoString(bound), float(count))  # type: ignore[no-untyped-call]
            for bound, count in zip(self._bounds, itertools.accumulate(counts), strict=True)
        ]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class PrometheusSensor:
    """The processing path's sensor (worker.processing.sensor.Sensor) for the live worker."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # Labelled children, looked up once.
        self._decisions = {s: metrics.decisions.labels(status=s.value) for s in DecisionStatus}
        # What the batch being emitted decided, counted into the metrics once it is all
        # emitted (`emitted`): per decision, a Prometheus update takes a lock and, for a
        # histogram, a walk of its buckets in Python (about 5 µs a decision in all).
        self._statuses: dict[DecisionStatus, int] = dict.fromkeys(DecisionStatus, 0)
        self._holds: dict[str, int] = {}
        self._corrections: dict[str, int] = {}
        self._occurred: list[dt.datetime] = []

    def consumed(self, topic: str, records: int) -> None:
        self.metrics.events_consumed.labels(topic=topic).inc(records)

    def decided(self, decision: Decision, occurred_at: dt.datetime) -> None:
        status = decision.status
        self._statuses[status] += 1
        if status is not DecisionStatus.RETRACTED and status is not DecisionStatus.VOIDED:
            fixes, holds = self._corrections, self._holds
            for correction in decision.corrections:
                fixes[correction.rule_id] = fixes.get(correction.rule_id, 0) + 1
            for hold in decision.holds:
                holds[hold.rule_id] = holds.get(hold.rule_id, 0) + 1
        self._occurred.append(occurred_at)

    def emitted(self) -> None:
        metrics = self.metrics
        for status, count in self._statuses.items():
            if count:
                self._decisions[status].inc(count)
                self._statuses[status] = 0
        for rule_id, count in self._corrections.items():
            metrics.corrections.labels(rule_id=rule_id).inc(count)
        for rule_id, count in self._holds.items():
            metrics.holds.labels(rule_id=rule_id).inc(count)
        self._corrections.clear()
        self._holds.clear()
        now = time.time()
        lags = (now - occurred_at.timestamp() for occurred_at in self._occurred)
        metrics.event_to_decision_seconds.observe_many(lag if lag > 0 else 0.0 for lag in lags)
        self._occurred.clear()

    def dead_lettered(self, record: Record, kind: ErrorKind, message: str) -> None:
        self.metrics.dlq_records.labels(error_kind=kind.value).inc()
        # Where and why, never the record's content: the message names fields, not values.
        log.warning(
            "dead-lettered",
            extra=fields(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error_kind=kind.value,
                error=message,
            ),
        )
