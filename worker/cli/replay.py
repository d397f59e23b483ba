"""`charge-capture replay`: its options and the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rules.pack import load_packs
from worker.cli.options import UsageError, add_options, cluster_config
from worker.config import WorkerConfig
from worker.errors import EXIT_UNAVAILABLE, FatalError, ReplayError, SchemaUnavailable
from worker.replay.plan import (
    DEFAULT_DIFF_OUT,
    ReplayOptions,
    check_range,
    parse_output,
    parse_position,
)
from worker.replay.report import format_report
from worker.replay.run import run_replay

DEFAULT_OUTPUT = "file:replay-decisions.jsonl"

DESCRIPTION = """\
Re-decide a historical range of the input topic with fresh in-memory state (never the live
changelog) and no consumer group (nothing is committed), into shadow topics or a file, and
optionally diff against the decisions the live worker recorded.

Range ends (per partition; offsets are clamped to what the partition holds):
  --from beginning | offset:P:N | timestamp:ISO    (default beginning)
  --to   end | offset:P:N | timestamp:ISO          (default end; exclusive)
  `end` is the highwater seen when the replay starts, so it finishes while the live worker
  keeps writing. offset:P:N applies to partition P; the other partitions run from the
  beginning / to the end. timestamp:ISO starts each partition at its first record at or after
  that time (offsets_for_times). On the embedded Tansu broker that index is the broker's
  receive time, not the record timestamp.

Partial visits: a replay that does not start at the beginning of a partition can see only the
later events of a visit. Those decisions are flagged PARTIAL_VISIT and counted in the report;
the records before the start are scanned (decoded, not decided) to find exactly which visits
had earlier events. --warmup beginning|offset:P:N|timestamp:ISO instead rebuilds state from
that earlier point without emitting decisions for it; then only visits with events before the
warmup point are flagged (none with --warmup beginning).

Outputs: --output topics:PREFIX writes PREFIX+charges.corrected / .held / .dlq (created if
missing; a prefix that maps onto a live topic is refused); --output file:PATH writes one full
ChargeDecision JSON per line in replay order (partition by partition, offset order), so two
replays of the same range and pack give byte-identical files; undecodable records are then
only counted. Each decision's source is the original topic/partition/offset.

Exit codes: 0 done; 1 the replay could not finish (outputs incomplete, a read stalled); 2 usage
(a bad range end, a range that ends before it starts, an output onto a live topic); 69 no
broker answers; 78 a broken rule pack or security settings the broker refuses.
"""


def add_replay_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay",
        help="re-decide a topic range with fresh state; diff against live decisions",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, "replay")
    parser.add_argument(
        "--topic", default=None, help="source topic (default: --input-topic, charges.captured)"
    )
    parser.add_argument(
        "--from",
        dest="range_from",
        default="beginning",
        metavar="beginning|offset:P:N|timestamp:ISO",
        help="start of the replayed range (default beginning)",
    )
    parser.add_argument(
        "--to",
        dest="range_to",
        default="end",
        metavar="end|offset:P:N|timestamp:ISO",
        help="end of the range, exclusive (default: the highwater when the replay starts; a "
        "transaction still open there holds the read until it ends)",
    )
    parser.add_argument(
        "--warmup",
        default=None,
        metavar="beginning|offset:P:N|timestamp:ISO",
        help="rebuild state from this earlier point without emitting decisions for it",
    )
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="topics:PREFIX|file:PATH",
        help=f"where the decisions go (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--diff",
        action="store_true",
        help="compare with the latest live decisions (charges.corrected + charges.held)",
    )
    parser.add_argument(
        "--diff-out",
        type=Path,
        default=DEFAULT_DIFF_OUT,
        help=f"JSON-lines file of the changed charges (default {DEFAULT_DIFF_OUT})",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress on stderr (auto: when stderr is a terminal)",
    )
    parser.set_defaults(func=cmd_replay)


def options_from_args(args: argparse.Namespace, config: WorkerConfig) -> ReplayOptions:
    """The replay's options; UsageError for a bad range end or output."""
    try:
        start = parse_position(args.range_from, ("beginning", "offset", "timestamp"))
        end = parse_position(args.range_to, ("end", "offset", "timestamp"))
        warmup = args.warmup and parse_position(args.warmup, ("beginning", "offset", "timestamp"))
        check_range(start, end, warmup or None)
        output = parse_output(args.output)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return ReplayOptions(
        config=config,
        output=output,
        topic=args.topic,
        start=start,
        end=end,
        warmup=warmup or None,
        rules_dir=config.rules_dir,
        diff=args.diff,
        diff_out=args.diff_out,
        progress={"auto": None, "on": True, "off": False}[args.progress],
    )


def cmd_replay(args: argparse.Namespace) -> int:
    options = options_from_args(args, args.config)
    options.packs = load_packs(options.rules_dir)  # a broken pack fails before any reading
    options.config = cluster_config(args, "replay")
    try:
        report = run_replay(options)
    except ValueError as error:  # found against the topic: a partition it lacks, a clash
        raise UsageError(str(error)) from None
    except (ReplayError, TimeoutError) as error:
        print(f"charge-capture: replay failed: {error}", file=sys.stderr)
        return 1
    except FatalError as error:  # the schema registry refused our schemas, or stayed silent
        print(f"replay: {error}", file=sys.stderr)
        return error.exit_code
    except SchemaUnavailable as error:  # reading the live decisions for --diff
        print(f"replay: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(format_report(report), file=sys.stderr)
    return 0
