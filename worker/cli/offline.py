"""`charge-capture check` and `generate`: verbs that need no broker."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from rules.pack import load_packs
from worker.cli import values
from worker.cli.options import add_options

CHECK_EPILOG = """\
Input: one ChargeEvent JSON per line (fields as in schemas/charge_event.avsc; dates YYYY-MM-DD,
timestamps ISO-8601 text, never epoch numbers), at most 1 MiB per line; `-` reads stdin.
A line that is not a valid event is reported on stderr with its number and skipped.
Exit codes: 0 when at least one event was decided (even if some lines were rejected);
65 when nothing was decided (the file is empty or every line was rejected); 66 when the file
cannot be read (missing, a directory, binary or gzip); 73 when --out cannot be written; 78 for
a broken rule pack.
"""


def add_offline_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check",
        help="decide a JSON-lines file of ChargeEvents offline",
        description="Decide a JSON-lines file of ChargeEvents with the rules, offline; one "
        "final decision per charge.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", type=Path, help="JSON-lines ChargeEvents (- for stdin)")
    check.add_argument(
        "--out", type=Path, metavar="FILE", help="decisions JSON-lines file (default: stdout)"
    )
    add_options(check, "check")
    check.set_defaults(func=cmd_check)

    generate = sub.add_parser(
        "generate",
        help="print a reproducible day of sample charges",
        description="Print a day of sample ChargeEvents as JSON lines: the same --visits and "
        "--seed always give the same output.",
    )
    generate.add_argument(
        "--visits", type=values.integer(0), default=1000, help="patient visits (default: 1000)"
    )
    generate.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    generate.add_argument(
        "--now",
        action="store_true",
        help="date the visits today and stamp occurred_at just before now, in the day's "
        "order, so event-to-decision latency is measurable (not reproducible)",
    )
    generate.set_defaults(func=cmd_generate)


def cmd_check(args: argparse.Namespace) -> int:
    from worker.offline.check import check_file

    check_file(args.file, args.out, load_packs(args.config.rules_dir))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from worker.offline.sample import generate_events, stamp_near, write_jsonl

    if not args.now:
        write_jsonl(generate_events(args.visits, args.seed), sys.stdout)
        return 0
    now = dt.datetime.now(dt.UTC)
    events = generate_events(args.visits, args.seed, day=now.date())
    write_jsonl(stamp_near(events, now), sys.stdout)
    return 0
