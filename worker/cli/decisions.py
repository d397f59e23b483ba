"""`charge-capture decisions`: what the worker decided, read back from the output topics."""

from __future__ import annotations

import argparse
import sys
import threading

from worker.cli.options import add_options, cluster_config
from worker.cli.stream import stop_on_signals
from worker.errors import ConfigError
from worker.kafka.admin import missing_topics
from worker.kafka.reading import follow, read_to_end
from worker.processing.table import decisions_of, latest_decisions
from worker.serde.codec import Codec

EPILOG = """\
Prints one ChargeDecision JSON per line on stdout (the shape of `replay --output file:`),
decoded from the Confluent-framed Avro of charges.corrected and charges.held: every decision
record in the order read (each partition in offset order), or with --latest only the current
decision of each charge (highest decision_version), sorted by charge id. A count and any log
lines go to stderr. The lines carry the charges' data (patient ids included): they are for the
operator's terminal or a file, not for logs.
Exit codes: 0 done (or stopped by Ctrl-C/SIGTERM with --follow); 2 usage; 69 no broker answers;
78 an output topic is missing (run `charge-capture topics`) or security settings the broker
refuses.
"""


def add_decisions_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "decisions",
        help="print the decisions on the output topics as JSON lines",
        description="Read the decisions back from the output topics, as JSON lines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    own = parser.add_argument_group("decisions")
    own.add_argument(
        "--charge-id",
        action="append",
        metavar="ID",
        help="only this charge's decisions (repeatable)",
    )
    mode = own.add_mutually_exclusive_group()
    mode.add_argument(
        "--latest", action="store_true", help="only the current decision of each charge"
    )
    mode.add_argument(
        "--follow",
        action="store_true",
        help="keep printing new decisions as they arrive, until Ctrl-C or SIGTERM",
    )
    add_options(parser, "decisions")
    parser.set_defaults(func=cmd_decisions)


def cmd_decisions(args: argparse.Namespace) -> int:
    config = cluster_config(args, "decisions")
    topics = [config.corrected_topic, config.held_topic]
    missing = missing_topics(config, topics)
    if missing:
        raise ConfigError(
            f"topic {', '.join(missing)} does not exist on {config.bootstrap_servers}: "
            "create the topics with `charge-capture topics`"
        )
    charge_ids = set(args.charge_id) if args.charge_id else None
    codec = Codec()
    out = sys.stdout
    if args.latest:
        latest, _ = latest_decisions(config, topics, codec)
        chosen = sorted(c for c in latest if charge_ids is None or c in charge_ids)
        for charge_id in chosen:
            out.write(latest[charge_id].model_dump_json() + "\n")
        print(f"{len(chosen)} charges", file=sys.stderr)
        return 0
    if args.follow:
        stop = threading.Event()
        stop_on_signals(stop)
        records = follow(config, topics, lambda: not stop.is_set())
    else:
        records = read_to_end(config, topics)
    count = 0
    for decision in decisions_of(records, codec, charge_ids):
        out.write(decision.model_dump_json() + "\n")
        count += 1
        if args.follow:
            out.flush()
    print(f"{count} decision records", file=sys.stderr)
    return 0
