"""Throughput of `charge-capture check` over the generator's output (issue: >= 50k events/s).

    python -m bench.check_throughput [--events 100000] [--seed 1] [--runs 3]

Generates a reproducible day, writes it to a temp file, then runs the same code path as the
CLI (`run_check`) in this one process and prints events/s for each run and the best.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

from bench.common import rules_core
from rules.pack import load_packs
from worker.offline.check import run_check
from worker.offline.sample import generate_events, write_jsonl

EVENTS_PER_VISIT = 2.86  # the generator's mean; sized so --events is close to the target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    visits = int(args.events / EVENTS_PER_VISIT)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as day:
        write_jsonl(generate_events(visits, args.seed), day)
    packs = load_packs()
    rates = []
    try:
        for run in range(1, args.runs + 1):
            with open(day.name, encoding="utf-8") as source:
                started = time.perf_counter()
                report = run_check(source, io.StringIO(), packs)
                seconds = time.perf_counter() - started
            rates.append(report.events / seconds)
            print(f"run {run}: {report.events} events in {seconds:.2f} s = {rates[-1]:,.0f} ev/s")
    finally:
        os.unlink(day.name)
    print(
        f"check throughput (best of {args.runs}, one process, one core, rules core "
        f"{rules_core()}): {max(rates):,.0f} ev/s"
    )


if __name__ == "__main__":
    main()
