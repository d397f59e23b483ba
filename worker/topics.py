"""The topics of the data flow (DESIGN §1), and reading a topic range to its end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from rules.model import ChargeDecision
from rules.visit import table_rank
from worker.broker import TopicSpec, create_topics
from worker.config import WorkerConfig
from worker.serde import Codec


def topic_specs(config: WorkerConfig) -> list[TopicSpec]:
    n = config.partitions
    return [
        TopicSpec(config.input_topic, n),
        # The repartition topic must match the input's partition count: partition p of both
        # feeds one state store.
        TopicSpec(config.repartition_topic, n),
        TopicSpec(config.corrected_topic, n, {"cleanup.policy": "compact,delete"}),
        TopicSpec(config.held_topic, n, {"cleanup.policy": "compact,delete"}),
        TopicSpec(config.dlq_topic, n),
        TopicSpec(config.changelog_topic, n, {"cleanup.policy": "compact"}),
    ]


def ensure_topics(config: WorkerConfig) -> list[str]:
    assert config.bootstrap_servers
    return create_topics(
        config.bootstrap_servers, topic_specs(config), **config.security.kafka_kwargs()
    )


def bulk_producer(config: WorkerConfig) -> KafkaProducer:
    """An idempotent producer for bulk writes outside the worker's transactions (produce,
    replay's shadow topics): large lz4 batches, every replica acknowledging."""
    assert config.bootstrap_servers
    return KafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        compression_type="lz4",
        enable_idempotence=True,
        **config.security.kafka_kwargs(),
    )


def read_to_end(
    bootstrap_servers: str,
    topics: list[str],
    *,
    isolation_level: str = "read_committed",
    timeout_s: float = 60.0,
    **client: Any,
) -> Iterator[Any]:
    """Every record of `topics` from the beginning up to the end they had when reading began.

    The end of each partition is the first highwater a fetch response shows (not ListOffsets
    LATEST, which Tansu answers wrongly, DESIGN §8), frozen so that a topic still being written
    (a live worker's outputs) is read to a point rather than chased. `timeout_s` bounds a
    stall (no record and no partition finished), not the whole read, so long histories work.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        **client,
    )
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:  # none of the topics exists: nothing to read
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        pending = set(tps)
        ends: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout_s
        while pending:
            batches = consumer.poll(timeout_ms=200, max_records=10_000)
            progressed = bool(batches)
            for records in batches.values():
                yield from records
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    ends.setdefault(tp, highwater)
                if tp in ends and consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    progressed = True
            if progressed:
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                stuck = sorted(f"{tp.topic}[{tp.partition}]" for tp in pending)
                raise TimeoutError(f"reading {', '.join(stuck)} made no progress for {timeout_s} s")
    finally:
        consumer.close(autocommit=False)


def latest_decisions(
    bootstrap_servers: str, topics: list[str], codec: Codec | None = None, **client: Any
) -> tuple[dict[str, ChargeDecision], Counter[str]]:
    """Latest decision per charge over the output topics, and the records seen by status.

    Latest = highest decision_version; on a tie the decision beats the RETRACTED record of
    the ledger it left, so the table is correct whatever the topic read order.
    """
    codec = codec or Codec()
    latest: dict[str, ChargeDecision] = {}
    published: Counter[str] = Counter()
    seen: set[tuple[str, int, str, str]] = set()
    for record in read_to_end(bootstrap_servers, topics, **client):
        decision = codec.decode_decision(record.value)
        identity = (decision.charge_id, decision.decision_version, decision.status, record.topic)
        if identity in seen:  # a leaked aborted copy (Tansu): identical by construction
            continue
        seen.add(identity)
        published[decision.status.value] += 1
        current = latest.get(decision.charge_id)
        if current is None or table_rank(decision) > table_rank(current):
            latest[decision.charge_id] = decision
    return latest, published
