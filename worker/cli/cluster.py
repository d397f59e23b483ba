"""`charge-capture topics` and `produce`: verbs that need a real cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rules.model import ChargeEvent
from worker.cli.options import add_arguments, add_registry_arguments, cluster_config
from worker.config import WorkerConfig
from worker.errors import EXIT_UNAVAILABLE, FatalError, SchemaUnavailable
from worker.kafka import clients
from worker.kafka.admin import ensure_topics
from worker.serde.codec import Codec
from worker.serde.framing import EVENT
from worker.serde.registry_source import codec_for


def add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="create/verify the topics")
    add_arguments(topics)
    topics.set_defaults(func=cmd_topics)

    produce = sub.add_parser("produce", help="publish JSON-lines ChargeEvents as framed Avro")
    add_arguments(produce)
    add_registry_arguments(produce)
    produce.add_argument("file", type=Path)
    produce.set_defaults(func=cmd_produce)


def cmd_topics(args: argparse.Namespace) -> int:
    config = cluster_config(args, "topics")
    if config is None:
        return 2
    created = ensure_topics(config)
    print(json.dumps({"created": created, "verified": True}))
    return 0


def produce_events(
    config: WorkerConfig, events: list[ChargeEvent], codec: Codec | None = None
) -> int:
    """Publish `events` to the input topic, keyed by patient id; the count sent.

    With a schema registry they are framed with its id of our charge_event schema under
    `<input topic>-value` (registered unless auto-register is off). Raises ConfigError
    (SchemaRegistrySetupError) or SchemaUnavailable when that id cannot be had.
    """
    own = codec is None
    codec = codec or codec_for(config, writes={config.input_topic: EVENT})
    try:
        codec.open()
        producer = clients.bulk_producer(config)
        try:
            for event in events:
                producer.send(
                    config.input_topic,
                    key=event.patient_id.encode(),
                    value=codec.encode_event(event, config.input_topic),
                )
            producer.flush(timeout=120)
        finally:
            producer.close(timeout=10)
    finally:
        if own:
            codec.close()
    return len(events)


def cmd_produce(args: argparse.Namespace) -> int:
    config = cluster_config(args, "produce")
    if config is None:
        return 2
    with args.file.open(encoding="utf-8") as lines:
        events = [ChargeEvent.model_validate_json(line) for line in lines if line.strip()]
    try:
        count = produce_events(config, events)
    except FatalError as error:
        print(f"produce: {error}", file=sys.stderr)
        return error.exit_code
    except SchemaUnavailable as error:  # a one-off command: no waiting for the registry
        print(f"produce: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(json.dumps({"produced": count, "topic": config.input_topic}))
    return 0
