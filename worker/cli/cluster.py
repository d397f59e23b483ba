"""`charge-capture topics` and `produce`: verbs that need a real cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rules.model import ChargeEvent
from worker.cli.options import add_arguments, cluster_config
from worker.config import WorkerConfig
from worker.kafka import clients
from worker.kafka.admin import ensure_topics
from worker.serde.codec import Codec


def add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="create/verify the topics")
    add_arguments(topics)
    topics.set_defaults(func=cmd_topics)

    produce = sub.add_parser("produce", help="publish JSON-lines ChargeEvents as framed Avro")
    add_arguments(produce)
    produce.add_argument("file", type=Path)
    produce.set_defaults(func=cmd_produce)


def cmd_topics(args: argparse.Namespace) -> int:
    config = cluster_config(args, "topics")
    if config is None:
        return 2
    created = ensure_topics(config)
    print(json.dumps({"created": created, "verified": True}))
    return 0


def produce_events(config: WorkerConfig, events: list[ChargeEvent]) -> int:
    """Publish `events` to the input topic, keyed by patient id; the count sent."""
    codec = Codec()
    producer = clients.bulk_producer(config)
    try:
        for event in events:
            producer.send(
                config.input_topic,
                key=event.patient_id.encode(),
                value=codec.encode_event(event),
            )
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return len(events)


def cmd_produce(args: argparse.Namespace) -> int:
    config = cluster_config(args, "produce")
    if config is None:
        return 2
    with args.file.open(encoding="utf-8") as lines:
        events = [ChargeEvent.model_validate_json(line) for line in lines if line.strip()]
    count = produce_events(config, events)
    print(json.dumps({"produced": count, "topic": config.input_topic}))
    return 0
