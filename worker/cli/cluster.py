"""`charge-capture topics` and `produce`: verbs that need a real cluster."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from rules.charge import Charge
from rules.model import ChargeEvent
from worker.cli.options import add_options, cluster_config
from worker.config import WorkerConfig
from worker.errors import (
    EXIT_UNAVAILABLE,
    ConfigError,
    FatalError,
    NothingUsable,
    SchemaUnavailable,
    TopicLayoutError,
)
from worker.kafka import clients
from worker.kafka.admin import ensure_topics, missing_topics
from worker.offline import jsonlines
from worker.serde.codec import Codec
from worker.serde.framing import EVENT
from worker.serde.registry_source import codec_for

TOPICS_EPILOG = """\
Creates the missing topics of the data flow (input, outputs, DLQ, the app's changelog and
repartition topics) with --partitions and --replication-factor (-1: the brokers' default, what
a production cluster sets); verifies the partition counts of those that exist. Idempotent.
Exit codes: 0 done; 2 usage; 69 no broker answers; 78 security settings the broker refuses, or
topics that exist with other partition counts.
"""

PRODUCE_EPILOG = """\
Reads JSON-lines ChargeEvents as `check` does (a bad line is reported with its number and
skipped) and publishes each as Confluent-framed Avro keyed by patient_id.
Exit codes: 0 when at least one event was produced; 65 when no line was usable; 66 when the
file cannot be read; 1 when sends failed; 69 no broker (or schema registry) answers; 78 the
input topic is missing
(run `charge-capture topics`) or security settings the broker refuses.
"""


def add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser(
        "topics",
        help="create/verify the topics",
        description="Create or verify the topics of the data flow.",
        epilog=TOPICS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(topics, "topics")
    topics.set_defaults(func=cmd_topics)

    produce = sub.add_parser(
        "produce",
        help="publish JSON-lines ChargeEvents as framed Avro",
        description="Publish a JSON-lines file of ChargeEvents to the input topic.",
        epilog=PRODUCE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    produce.add_argument("file", type=Path, help="JSON-lines ChargeEvents (- for stdin)")
    add_options(produce, "produce")
    produce.set_defaults(func=cmd_produce)


def cmd_topics(args: argparse.Namespace) -> int:
    config = cluster_config(args, "topics")
    try:
        created = ensure_topics(config)
    except ValueError as error:  # a topic exists with another partition count
        raise TopicLayoutError(str(error)) from None
    print(json.dumps({"created": created, "verified": True}))
    return 0


class ProduceFailed(FatalError):
    """Some events were not acknowledged by the cluster."""


class RegistryUnreachable(FatalError):
    """The schema registry did not answer a one-off command."""

    exit_code = EXIT_UNAVAILABLE


def produce_events(
    config: WorkerConfig, events: Iterable[ChargeEvent | Charge], codec: Codec | None = None
) -> int:
    """Publish `events` to the input topic, keyed by patient id; the count sent.

    With a schema registry they are framed with its id of our charge_event schema under
    `<input topic>-value` (registered unless auto-register is off): SchemaRegistrySetupError
    or BrokerUnavailable-like SchemaUnavailable when that id cannot be had. ProduceFailed
    when any send was not acknowledged (the first error named)."""
    own = codec is None
    codec = codec or codec_for(config, writes={config.input_topic: EVENT})
    failed: list[BaseException] = []
    sent = 0
    try:
        codec.open()
        producer = clients.bulk_producer(config)
        try:
            for event in events:
                future = producer.send(
                    config.input_topic,
                    key=event.patient_id.encode(),
                    value=codec.encode_event(event, config.input_topic),
                )
                future.add_errback(failed.append)
                sent += 1
            producer.flush(timeout=120)
        finally:
            producer.close(timeout=10)
    finally:
        if own:
            codec.close()
    if failed:
        first = failed[0]
        raise ProduceFailed(
            f"{len(failed)} of {sent} events were not produced to {config.input_topic} "
            f"(first: {type(first).__name__}: {first})"
        )
    return sent


def cmd_produce(args: argparse.Namespace) -> int:
    source = jsonlines.open_input(args.file)  # an unreadable file fails before the network
    with source:
        config = cluster_config(args, "produce")
        if missing_topics(config, [config.input_topic]):
            raise ConfigError(
                f"topic {config.input_topic} does not exist on {config.bootstrap_servers}: "
                "create it with `charge-capture topics`"
            )
        rejected: list[str] = []
        try:
            count = produce_events(config, jsonlines.read_events(source, rejected))
        except SchemaUnavailable as silent:  # a one-off command: no waiting for the registry
            raise RegistryUnreachable(str(silent)) from silent
    for problem in rejected:
        print(f"rejected {problem}", file=sys.stderr)
    summary = {"produced": count, "rejected_lines": len(rejected), "topic": config.input_topic}
    print(json.dumps(summary))
    if count == 0:
        reason = "every line was rejected" if rejected else "it holds no event"
        raise NothingUsable(f"{args.file}: nothing produced: {reason}")
    return 0
