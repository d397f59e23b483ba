"""The `charge-capture` command line: one module per verb group, options in one place.

A user's mistake ends in one line on stderr and a documented exit code (docs/operations.md,
"Exit codes (CLI)"), never a traceback: usage errors exit 2 the argparse way, a FatalError
with its own code, a broken rule pack 78.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import NoReturn, cast

from kafka.errors import KafkaError

from rules.pack import PackError
from worker.errors import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE, FatalError

Command = Callable[[argparse.Namespace], int]
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class Parser(argparse.ArgumentParser):
    """argparse with its error on one line: the usage of `run` alone is a screenful."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, self.usage_line(message))

    def usage_line(self, message: str) -> str:
        return f"{self.prog}: error: {message} (see {self.prog} --help)\n"


def version() -> str:
    try:
        return metadata.version("charge-capture")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    # The verb modules import Kafka clients and the rules: load them when the parser is built.
    from worker.cli.cluster import add_cluster_commands
    from worker.cli.decisions import add_decisions_command
    from worker.cli.demo import add_demo_command
    from worker.cli.offline import add_offline_commands
    from worker.cli.replay import add_replay_command
    from worker.cli.stream import add_stream_commands

    parser = Parser(
        prog="charge-capture",
        description="CPT 97012 charge-capture rules: offline check and Kafka stream worker. "
        "`charge-capture VERB --help` lists a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"charge-capture {version()}")
    # The verbs' parsers are Parser too (argparse makes them of the parent's class).
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="VERB"),
    )
    add_offline_commands(sub)
    add_stream_commands(sub)
    add_demo_command(sub)
    add_cluster_commands(sub)
    add_replay_command(sub)
    add_decisions_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from worker.cli.options import UsageError, from_args

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    verb: Parser = getattr(args, "_parser", parser)
    if extra:  # said by the verb, whose --help lists what it takes
        verb.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Command = args.func
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `run --processes` repeats
    try:
        if hasattr(args, "_options"):
            args.config = from_args(args)
        return func(args)
    except UsageError as error:  # a value only wrong in its context, or from a variable
        print(verb.usage_line(str(error)), end="", file=sys.stderr)
        return EXIT_USAGE
    except PackError as error:  # a broken rule pack: one line, no traceback
        return _fail(str(error), EXIT_CONFIG)
    except FatalError as error:
        return _fail(str(error), error.exit_code)
    except KafkaError as error:  # past the probe: a request that failed or timed out
        return _fail(f"Kafka: {type(error).__name__}: {error}", EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `charge-capture decisions | head`: the reader has had enough
        _silence_stdout()
        return 0


def _fail(message: str, code: int) -> int:
    print(f"charge-capture: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
