"""What a replay read, decided and changed: its report, fed by the processing path's sensor."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from rules.charge import Decision
from rules.model import ErrorKind
from rules.visit import table_rank
from worker.kafka.records import Record
from worker.replay.diff import DiffReport, format_diff
from worker.replay.plan import PartitionRange

PARTIAL_VISIT_FLAG = "PARTIAL_VISIT"


@dataclass
class ReplayReport:
    topic: str
    output: str
    ranges: list[PartitionRange] = field(default_factory=list)
    records: int = 0  # records of the replayed range read
    warmup_records: int = 0
    scanned_records: int = 0  # read before the context start only to find partial visits
    decisions: int = 0  # decision records emitted (RETRACTED included)
    dlq: int = 0
    partial_visit_decisions: int = 0
    warmup: bool = False
    started_at_beginning: bool = True
    final_by_status: Counter[str] = field(default_factory=Counter)
    replay_seconds: float = 0.0  # the replayed range: read, decode, decide, write
    seconds: float = 0.0  # everything, from connecting to the report
    diff: DiffReport | None = None

    @property
    def events_per_s(self) -> float:
        return self.records / self.replay_seconds if self.replay_seconds > 0 else 0.0

    @property
    def charges(self) -> int:
        return sum(self.final_by_status.values())


class ReportSensor:
    """The processing path's sensor for a replay: counts into the report and keeps the latest
    decision per charge for the diff."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report
        self.latest: dict[str, Decision] = {}

    def consumed(self, topic: str, records: int) -> None:
        return None

    def decided(self, decision: Decision, occurred_at: dt.datetime) -> None:
        self.report.decisions += 1
        current = self.latest.get(decision.charge_id)
        if current is None or table_rank(decision) > table_rank(current):
            self.latest[decision.charge_id] = decision

    def emitted(self) -> None:
        return None

    def dead_lettered(self, record: Record, kind: ErrorKind, message: str) -> None:
        self.report.dlq += 1


def format_report(report: ReplayReport) -> str:
    rows = [
        f"replay of {report.topic} -> {report.output}",
        f"{'partition':<10}{'from':>12}{'to':>12}{'records':>10}{'warmup':>10}",
    ]
    for r in report.ranges:
        rows.append(
            f"{r.partition:<10}{r.start:>12}{r.end:>12}{r.records:>10}{r.warmup_records:>10}"
        )
    rows += [
        "",
        f"records read        {report.records}",
        f"warmup records      {report.warmup_records}",
        f"decisions           {report.decisions}  ({report.charges} charges)",
        f"dead-lettered       {report.dlq}",
        f"partial-visit decisions {report.partial_visit_decisions}"
        + (
            f"  (flagged {PARTIAL_VISIT_FLAG}; visits with events before the start, "
            f"found by scanning {report.scanned_records} earlier records)"
            if report.partial_visit_decisions or report.scanned_records
            else ""
        ),
        f"events/s            {report.events_per_s:,.0f}  "
        f"({report.replay_seconds:.2f} s replaying, {report.seconds:.2f} s in all)",
        "",
        f"{'status (final per charge)':<34}{'charges':>9}",
    ]
    rows += [f"{s:<34}{n:>9}" for s, n in sorted(report.final_by_status.items())]
    if report.diff is not None:
        rows += ["", *format_diff(report.diff)]
    return "\n".join(rows)
