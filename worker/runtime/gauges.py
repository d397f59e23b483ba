"""Gauges derived from the worker's state and its consumer: lag, visits, oldest held charge."""

from __future__ import annotations

import time
from collections.abc import Mapping

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from worker.observability.metrics import Metrics
from worker.state.store import PartitionState

HELD_SCAN_INTERVAL_S = 15.0  # the scan walks every held charge: a gauge need not be fresher


def oldest_held_age(states: Mapping[int, PartitionState]) -> float:
    """Event-time age of the oldest charge now HELD: partition watermark minus the
    occurred_at of the held line. Event time, so a replayed backlog reads honestly."""
    oldest = 0.0
    for state in states.values():
        if state.watermark is not None and state.held:
            held_since = min(state.held.values())
            oldest = max(oldest, (state.watermark - held_since).total_seconds())
    return oldest


class Gauges:
    def __init__(self, metrics: Metrics, inputs: tuple[str, str]) -> None:
        self.metrics = metrics
        self.inputs = inputs
        self._next_held_scan = 0.0

    def update(
        self,
        consumer: KafkaConsumer,
        states: Mapping[int, PartitionState],
        committed: Mapping[TopicPartition, int],
    ) -> None:
        now = time.monotonic()
        if now >= self._next_held_scan:
            self._next_held_scan = now + HELD_SCAN_INTERVAL_S
            self.metrics.oldest_held_age.set(oldest_held_age(states))
        visits = 0
        for number, state in states.items():
            visits += len(state.visits)
            for topic in self.inputs:
                tp = TopicPartition(topic, number)
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    done = max(committed.get(tp, 0), _fetch_position(consumer, tp))
                    lag = max(highwater - done, 0)
                    self.metrics.consumer_lag.labels(topic=topic, partition=str(number)).set(lag)
        self.metrics.state_visits.set(visits)


def _fetch_position(consumer: KafkaConsumer, tp: TopicPartition) -> int:
    """The consumer's fetch position, read from its subscription state.

    Between batches every record up to it is committed, and it has stepped over transaction
    markers that the committed offset (last record + 1) stops short of: on a transactional
    topic lag would otherwise never reach 0. `position()` itself may make a coordinator round
    trip, so the (kafka-python internal) state is read directly; 0 when it is unknown.
    """
    state = getattr(consumer, "_subscription", None)
    assigned = state.assignment.get(tp) if state is not None else None
    position = getattr(assigned, "position", None)
    return int(position.offset) if position is not None else 0
