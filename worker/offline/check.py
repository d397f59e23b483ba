"""`charge-capture check`: the visit logic over a JSON-lines file, offline, in file order."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
from msgspec import DecodeError, ValidationError
from msgspec.structs import asdict

from rules.charge import Charge, charge_from_json, describe_invalid
from rules.engine import Verdict
from rules.model import DecisionStatus
from rules.pack import PackNotInForce, PackSet
from rules.visit import decide_events


@dataclass
class CheckReport:
    events: int = 0
    rejected: list[str] = field(default_factory=list)  # "line N: reason"
    by_status: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def read_events(lines: IO[str], report: CheckReport, packs: PackSet) -> Iterator[Charge]:
    in_force: set[dt.date] = set()  # dates of service a pack is in force on, seen so far
    for number, line in enumerate(lines, start=1):
        try:
            event = charge_from_json(line)
            if event.date_of_service not in in_force:
                packs.for_date(event.date_of_service)
                in_force.add(event.date_of_service)
        except (ValidationError, DecodeError) as error:
            if line.strip():  # blank lines are skipped
                report.rejected.append(f"line {number}: {describe_invalid(error)}")
            continue
        except PackNotInForce as missing:
            report.rejected.append(f"line {number}: {missing}")
            continue
        report.events += 1
        yield event


def decision_line(charge: Charge, verdict: Verdict | None) -> dict[str, Any]:
    """One line of `check`'s output: the charge's final decision."""
    if verdict is None:
        verdict = Verdict(billed=charge, corrections=(), holds=())
        status = DecisionStatus.VOIDED
    else:
        status = verdict.status
    billed, corrections, holds = verdict.billed, verdict.corrections, verdict.holds
    return {
        "charge_id": billed.charge_id,
        "status": status.value,
        "cpt_code": billed.cpt_code,
        "modifiers": list(billed.modifiers),
        "units": billed.units,
        "corrections": [asdict(c) for c in corrections],
        "holds": [asdict(h) for h in holds],
    }


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


def run_check(source: IO[str], out: IO[str], packs: PackSet) -> CheckReport:
    with gc_paused():
        return _run_check(source, out, packs)


def _run_check(source: IO[str], out: IO[str], packs: PackSet) -> CheckReport:
    report = CheckReport()
    started = time.perf_counter()
    finals = decide_events(read_events(source, report, packs), packs)
    for charge_id in sorted(finals):
        line = decision_line(*finals[charge_id])
        report.by_status[line["status"]] += 1
        for item in (*line["corrections"], *line["holds"]):
            report.by_rule[item["rule_id"]] += 1
        out.write(_json_line(line))
    report.seconds = time.perf_counter() - started
    return report


def _json_line(line: dict[str, Any]) -> str:
    return _encode(line).decode() + "\n"


_encode = msgspec.json.encode


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
    with path.open(encoding="utf-8") as source:
        if out_path is None:
            report = run_check(source, sys.stdout, packs)
        else:
            with out_path.open("w", encoding="utf-8") as out:
                report = run_check(source, out, packs)
    for problem in report.rejected:
        print(f"rejected {problem}", file=sys.stderr)
    print(format_summary(report), file=sys.stderr)
    return report
