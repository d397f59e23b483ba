"""Streaming sub-commands of `charge-capture` (run, demo, topics, produce, replay)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

EnvLookup = Callable[..., str | None]


def add_streaming_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], env: EnvLookup
) -> None:
    demo = sub.add_parser("demo", help="a generated day of charges decided end to end")
    demo.add_argument("--visits", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import io

    from rules.pack import load_packs
    from worker.check import format_summary, run_check
    from worker.sample import generate_events, write_jsonl

    day = io.StringIO()
    write_jsonl(generate_events(args.visits, args.seed), day)
    day.seek(0)
    report = run_check(day, io.StringIO(), load_packs())
    print(format_summary(report))
    return 0
