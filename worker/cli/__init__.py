"""The `charge-capture` command line: one module per verb group, options in one place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rules.pack import PackError
from worker.errors import EXIT_CONFIG

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    # The verb modules import Kafka clients and the rules: load them when the parser is built.
    from worker.cli.cluster import add_cluster_commands
    from worker.cli.offline import add_offline_commands
    from worker.cli.replay import add_replay_arguments
    from worker.cli.stream import add_stream_commands

    parser = argparse.ArgumentParser(
        prog="charge-capture",
        description="CPT 97012 charge-capture rules: offline check and Kafka stream worker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_offline_commands(sub)
    add_stream_commands(sub)
    add_cluster_commands(sub)
    replay = sub.add_parser(
        "replay", help="re-decide a topic range with fresh state; diff against live decisions"
    )
    add_replay_arguments(replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except PackError as error:  # a broken rule pack: one line, no traceback
        print(f"charge-capture: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
