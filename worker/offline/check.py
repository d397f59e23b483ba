"""`charge-capture check`: the visit logic over a JSON-lines file, offline, in file order."""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from rules.charge import Charge, Correction, Hold
from rules.engine import Verdict
from rules.model import DecisionStatus
from rules.pack import PackSet
from rules.visit import decide_events
from worker.errors import NothingUsable, OutputUnwritable
from worker.offline import jsonlines


@dataclass
class CheckReport:
    events: int = 0
    rejected: list[str] = field(default_factory=list)  # "line N: reason"
    by_status: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def read_events(lines: IO[Any], report: CheckReport, packs: PackSet) -> Iterator[Charge]:
    for event in jsonlines.read_events(lines, report.rejected, _in_force(packs)):
        report.events += 1
        yield event


def _in_force(packs: PackSet) -> Callable[[Charge], object]:
    """Refuses an event no pack is in force for (PackNotInForce: its date and the earliest)."""
    return lambda event: packs.for_date(event.date_of_service)


class CheckLine(msgspec.Struct, frozen=True, gc=False):
    """One line of `check`'s output: a charge's final decision (fields in output order)."""

    charge_id: str
    status: str
    cpt_code: str
    modifiers: tuple[str, ...]
    units: int
    corrections: tuple[Correction, ...]
    holds: tuple[Hold, ...]


def decision_line(charge: Charge, verdict: Verdict | None) -> CheckLine:
    """The output line of a charge's final decision (None: voided)."""
    if verdict is None:
        voided = DecisionStatus.VOIDED.value
        return CheckLine(
            charge.charge_id, voided, charge.cpt_code, charge.modifiers, charge.units, (), ()
        )
    billed = verdict.billed
    return CheckLine(
        billed.charge_id,
        verdict.status.value,
        billed.cpt_code,
        billed.modifiers,
        billed.units,
        verdict.corrections,
        verdict.holds,
    )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic GC while folding a file.

    The fold creates millions of long-lived, acyclic objects (events, visits); the generational
    collector would rescan them again and again, which more than doubled the run time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_check(source: IO[Any], out: IO[str], packs: PackSet) -> CheckReport:
    with gc_paused():
        return _run_check(source, out, packs)


def _run_check(source: IO[Any], out: IO[str], packs: PackSet) -> CheckReport:
    report = CheckReport()
    started = time.perf_counter()
    finals = decide_events(read_events(source, report, packs), packs)
    by_status, by_rule, write = report.by_status, report.by_rule, out.write
    for charge_id in sorted(finals):
        line = decision_line(*finals[charge_id])
        by_status[line.status] += 1
        for correction in line.corrections:
            by_rule[correction.rule_id] += 1
        for hold in line.holds:
            by_rule[hold.rule_id] += 1
        write(_encode(line).decode())
        write("\n")
    report.seconds = time.perf_counter() - started
    return report


_encode = msgspec.json.encode  # the same compact JSON as json.dumps, in a fraction of the time


def format_summary(report: CheckReport) -> str:
    rate = report.events / report.seconds if report.seconds else 0.0
    rows = [
        f"events read {report.events}, rejected lines {len(report.rejected)}, "
        f"{report.seconds:.2f} s ({rate:,.0f} events/s)",
        "",
        f"{'status':<34}{'charges':>9}",
    ]
    rows += [f"{status:<34}{n:>9}" for status, n in sorted(report.by_status.items())]
    rows += ["", f"{'rule_id':<34}{'lines':>9}"]
    rows += [f"{rule:<34}{n:>9}" for rule, n in sorted(report.by_rule.items())]
    return "\n".join(rows)


def check_file(path: Path, out_path: Path | None, packs: PackSet) -> CheckReport:
    """Decide the events of `path` into `out_path` (None: stdout); rejected lines and the
    summary go to stderr. NothingUsable (exit 65) when no event was decided."""
    with jsonlines.open_input(path) as source:
        if out_path is None:
            report = run_check(source, sys.stdout, packs)
        else:
            try:
                out = out_path.open("w", encoding="utf-8")
            except OSError as error:
                raise OutputUnwritable(f"{out_path}: {error.strerror}") from None
            with out:
                report = run_check(source, out, packs)
    for problem in report.rejected:
        print(f"rejected {problem}", file=sys.stderr)
    print(format_summary(report), file=sys.stderr)
    if report.events == 0:
        reason = "every line was rejected" if report.rejected else "it holds no event"
        raise NothingUsable(f"{path}: nothing decided: {reason}")
    return report
