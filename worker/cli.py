"""The `charge-capture` command line: check, generate, and the streaming commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rules.pack import PackError, load_packs

Command = Callable[[argparse.Namespace], int]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"CHARGE_CAPTURE_{name}", default)


def cmd_check(args: argparse.Namespace) -> int:
    from worker.check import check_file

    check_file(args.file, args.out, load_packs(args.rules))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from worker.sample import generate_events, write_jsonl

    write_jsonl(generate_events(args.visits, args.seed), sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charge-capture",
        description="CPT 97012 charge-capture rules: offline check and Kafka stream worker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="decide a JSON-lines file of ChargeEvents offline")
    check.add_argument("file", type=Path)
    check.add_argument("--out", type=Path, help="decisions JSON-lines file (default stdout)")
    check.add_argument("--rules", type=Path, help="rule-pack directory (default: built-in)")
    check.set_defaults(func=cmd_check)

    generate = sub.add_parser("generate", help="print a reproducible day of sample charges")
    generate.add_argument("--visits", type=int, default=1000)
    generate.add_argument("--seed", type=int, default=1)
    generate.set_defaults(func=cmd_generate)

    _add_streaming_commands(sub)
    return parser


def _add_streaming_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """run/demo/topics/produce/replay: their options live beside their implementation."""
    from worker.commands import add_streaming_commands

    add_streaming_commands(sub, _env)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except PackError as error:  # a broken rule pack: one line, no traceback
        print(f"charge-capture: {error}", file=sys.stderr)
        return 78  # EX_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
