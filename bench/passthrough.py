"""Ceiling benchmark: kafka-python's own transactional consume -> produce passthrough.

The worker cannot be faster than copying bytes through the same transaction protocol, so this
number is the yardstick for the worker's events/s (decode, rules and state come on top).

    python -m bench.passthrough --events 100000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bench.common import bench_broker
from worker.kafka.admin import TopicSpec, create_topics


@dataclass(frozen=True)
class PassthroughResult:
    events: int
    elapsed_s: float  # first record received -> last commit done (excludes the group join)
    join_s: float  # subscribe -> first record received
    transactions: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def passthrough_beside(
    bootstrap_servers: str, input_topic: str, name: str, partitions: int, expected: int
) -> PassthroughResult:
    """The passthrough of `input_topic` into a new topic `name`.passthrough, as the ceiling
    a benchmark measures the worker against (its group and transactional id from `name`)."""
    copy_topic = f"{name}.passthrough"
    create_topics(bootstrap_servers, [TopicSpec(copy_topic, partitions)])
    return run_passthrough(
        bootstrap_servers,
        input_topic,
        copy_topic,
        expected,
        group_id=copy_topic,
        transactional_id=f"{copy_topic}.tx",
    )


def run_passthrough(
    bootstrap_servers: str,
    in_topic: str,
    out_topic: str,
    expected: int,
    *,
    group_id: str,
    transactional_id: str,
    commit_interval_ms: int = 100,
    timeout_s: float = 600.0,
    on_joined: Callable[[], None] | None = None,
) -> PassthroughResult:
    """Copy `expected` records in_topic -> out_topic, one transaction per commit interval.

    Each copy keeps its input's CreateTime, so a reader of out_topic sees how long a record
    took through it. `on_joined` is called once the group has given the copy its partitions.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        max_poll_records=2000,
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        transactional_id=transactional_id,
        linger_ms=5,
        batch_size=256 * 1024,
    )
    try:
        producer.init_transactions()
        consumer.subscribe([in_topic])
        subscribed = time.monotonic()
        deadline = subscribed + timeout_s
        started: float | None = None
        copied = transactions = 0
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        txn_started: float | None = None
        while copied < expected or txn_started is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"copied {copied}/{expected} in {timeout_s}s")
            if on_joined is not None and consumer.assignment():
                on_joined()
                on_joined = None
            wait_ms = commit_interval_ms
            if txn_started is not None:  # until the open transaction is due
                wait_ms -= int((time.monotonic() - txn_started) * 1000)
            batches = consumer.poll(timeout_ms=max(wait_ms, 0)) if copied < expected else {}
            for tp, records in batches.items():
                if started is None:
                    started = time.monotonic()
                if txn_started is None:
                    producer.begin_transaction()
                    txn_started = time.monotonic()
                for r in records:
                    producer.send(out_topic, key=r.key, value=r.value, timestamp_ms=r.timestamp)
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
                copied += len(records)
            due = txn_started is not None and (
                copied >= expected or (time.monotonic() - txn_started) * 1000 >= commit_interval_ms
            )
            if due:
                producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
                producer.commit_transaction()
                transactions += 1
                offsets, txn_started = {}, None
        assert started is not None
        return PassthroughResult(
            events=copied,
            elapsed_s=time.monotonic() - started,
            join_s=started - subscribed,
            transactions=transactions,
        )
    finally:
        producer.close(timeout=5)
        consumer.close()


def preload(bootstrap_servers: str, topic: str, events: int, *, value_size: int = 600) -> float:
    """Produce `events` values keyed by 1000 patients; returns events/s of the preload.

    kafka-python's send() is pure-Python bound (~15k/s on one core); lz4 made it slower on
    loopback, so no compression.
    """
    rng = random.Random(42)
    keys = [f"patient-{i:04d}".encode() for i in range(1000)]
    # Hex text compresses about 2:1, closer to Avro charge events than pure random bytes.
    values = [rng.randbytes(value_size // 2).hex().encode() for _ in range(1024)]
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks=1,
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    began = time.monotonic()
    try:
        for i in range(events):
            producer.send(topic, key=keys[rng.randrange(1000)], value=values[i % 1024])
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=5)
    return events / (time.monotonic() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--commit-interval-ms", type=int, default=100)
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    in_topic, out_topic = f"bench.{run}.in", f"bench.{run}.out"
    with bench_broker() as (bootstrap, broker_kind):
        print(broker_kind, file=sys.stderr)
        create_topics(
            bootstrap,
            [TopicSpec(in_topic, args.partitions), TopicSpec(out_topic, args.partitions)],
        )
        rate = preload(bootstrap, in_topic, args.events)
        print(f"preloaded {args.events} events at {rate:,.0f} events/s", file=sys.stderr)
        result = run_passthrough(
            bootstrap,
            in_topic,
            out_topic,
            args.events,
            group_id=f"bench.{run}",
            transactional_id=f"bench.{run}.tx",
            commit_interval_ms=args.commit_interval_ms,
        )
    summary: dict[str, Any] = {
        "events": result.events,
        "elapsed_s": round(result.elapsed_s, 2),
        "join_s": round(result.join_s, 2),
        "transactions": result.transactions,
        "events_per_s": round(result.events_per_s),
    }
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
