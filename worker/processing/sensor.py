"""What the processing path reports as it goes: one small interface, two implementations.

The live worker's sensor feeds the Prometheus counters and the log
(worker.observability.metrics.PrometheusSensor); replay's feeds its report
(worker.replay.report.ReportSensor). The path calls the sensor and never knows which it has.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from rules.charge import Decision
from rules.model import ErrorKind
from worker.kafka.records import Record


class Sensor(Protocol):
    def consumed(self, topic: str, records: int) -> None:
        """`records` input records of `topic` were read and processed."""

    def decided(self, decision: Decision, occurred_at: dt.datetime) -> None:
        """A decision record (RETRACTED and VOIDED included) was emitted for an event that
        occurred at `occurred_at`."""

    def emitted(self) -> None:
        """The batch's decisions are all emitted (a sensor may count a batch at once)."""

    def dead_lettered(self, record: Record, kind: ErrorKind, message: str) -> None:
        """`record` went to the dead-letter output."""


class NullSensor:
    """Observes nothing (replay's warmup, tools)."""

    def consumed(self, topic: str, records: int) -> None:
        return None

    def decided(self, decision: Decision, occurred_at: dt.datetime) -> None:
        return None

    def emitted(self) -> None:
        return None

    def dead_lettered(self, record: Record, kind: ErrorKind, message: str) -> None:
        return None
