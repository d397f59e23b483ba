"""What the benchmarks share: the broker they measure against."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

import rules
from worker.kafka.embedded import EmbeddedBroker

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def rules_core() -> str:
    """Which build of the rules core the figures are of (`make bench-compiled`: compiled)."""
    return "compiled (mypyc)" if rules.compiled() else "python"


@contextlib.contextmanager
def bench_broker() -> Iterator[tuple[str, str]]:
    """(bootstrap servers, description): KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external, f"external broker at {external}; rules core {rules_core()}"
        return
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        started = f"up in {broker.startup_s:.2f} s"
        yield servers, f"embedded Tansu at {servers} ({started}); rules core {rules_core()}"


def committed_tail(
    bootstrap_servers: str,
    topics: list[str],
    starts: Mapping[tuple[str, int], int],
    ready: Any,
    done: Any,
) -> Iterator[tuple[int, list[Any]]]:
    """What a read_committed reader of `topics` receives from `starts` (topic, partition ->
    offset; 0 where missing): (wall ms on arrival, records) per partition per poll. `ready`
    is set once it reads; it ends once `done` is set and nothing came for 2 s."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=10,
    )
    try:
        tps = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts.get((tp.topic, tp.partition), 0))
        ready.set()
        quiet_since = time.monotonic()
        while not done.is_set() or time.monotonic() - quiet_since < 2.0:
            polled = consumer.poll(timeout_ms=50)
            if polled:
                quiet_since = time.monotonic()
            now_ms = int(time.time() * 1000)
            for records in polled.values():
                yield now_ms, records
    finally:
        consumer.close(autocommit=False)
