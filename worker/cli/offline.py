"""`charge-capture check` and `generate`: verbs that need no broker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rules.pack import load_packs


def add_offline_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="decide a JSON-lines file of ChargeEvents offline")
    check.add_argument("file", type=Path)
    check.add_argument("--out", type=Path, help="decisions JSON-lines file (default stdout)")
    check.add_argument("--rules", type=Path, help="rule-pack directory (default: built-in)")
    check.set_defaults(func=cmd_check)

    generate = sub.add_parser("generate", help="print a reproducible day of sample charges")
    generate.add_argument("--visits", type=int, default=1000)
    generate.add_argument("--seed", type=int, default=1)
    generate.set_defaults(func=cmd_generate)


def cmd_check(args: argparse.Namespace) -> int:
    from worker.offline.check import check_file

    check_file(args.file, args.out, load_packs(args.rules))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from worker.offline.sample import generate_events, write_jsonl

    write_jsonl(generate_events(args.visits, args.seed), sys.stdout)
    return 0
