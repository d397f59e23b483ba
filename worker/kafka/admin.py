"""Topics of the data flow: their specs, creating the missing ones, verifying the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from worker.config import WorkerConfig
from worker.kafka import clients


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(names):
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["name"]] = len(topic["partitions"])
    return counts


def create_topics(
    bootstrap_servers: str,
    specs: list[TopicSpec],
    *,
    timeout_s: float = 30,
    replication_factor: int = -1,
    **client: Any,
) -> list[str]:
    """Create the missing topics and wait until metadata shows every one with its partitions.

    Idempotent: existing topics are left alone, but one with a different partition count is an
    error (keyed state would be split differently), not something to paper over.
    """
    if not specs:
        return []
    deadline = time.monotonic() + timeout_s
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        **client,  # SASL/SSL settings of a real cluster
    )
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created = _create(admin, missing, replication_factor, timeout_ms) if missing else []
        _await_partitions(admin, specs, created, deadline, timeout_s)
        return created
    finally:
        admin.close()


def _create(
    admin: KafkaAdminClient, missing: list[TopicSpec], replication_factor: int, timeout_ms: int
) -> list[str]:
    response = admin.create_topics(
        {
            s.name: {
                "num_partitions": s.partitions,
                # -1 = the cluster's default replication factor (KIP-464)
                "replication_factor": replication_factor,
                "configs": dict(s.configs),
            }
            for s in missing
        },
        timeout_ms=timeout_ms,
        raise_errors=False,
    )
    created: list[str] = []
    for topic in response["topics"]:
        error = kafka_errors.for_code(topic["error_code"])
        if error is kafka_errors.NoError:
            created.append(topic["name"])
        elif error is not kafka_errors.TopicAlreadyExistsError:  # lost a race: fine
            raise error(f"creating topic {topic['name']}: {topic.get('error_message')}")
    return created


def _await_partitions(
    admin: KafkaAdminClient,
    specs: list[TopicSpec],
    created: list[str],
    deadline: float,
    timeout_s: float,
) -> None:
    """Wait until metadata shows every topic with its partition count."""
    names = [s.name for s in specs]
    wanted = {s.name: s.partitions for s in specs}
    while True:
        counts = _partition_counts(admin, names)
        # Only a topic we did not just create can legitimately show a stable wrong count.
        wrong = {n: c for n, c in counts.items() if c != wanted[n] and n not in created}
        if wrong:
            raise ValueError(f"topics exist with other partition counts: {wrong}")
        if counts == wanted:
            return
        if time.monotonic() >= deadline:
            raise kafka_errors.KafkaTimeoutError(
                f"topics not visible with their partitions after {timeout_s}s: "
                f"want {wanted}, see {counts}"
            )
        time.sleep(0.05)


def partition_counts(config: WorkerConfig, names: list[str], timeout_s: float) -> dict[str, int]:
    """Partition count of each of `names` that exists (a missing topic is left out). Asks
    without auto-creation: looking must never create a topic."""
    admin = clients.admin(config, timeout_s)
    try:
        return _partition_counts(admin, names)
    finally:
        admin.close()


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


def missing_topics(config: WorkerConfig, names: list[str], timeout_s: float = 15) -> list[str]:
    """Those of `names` the cluster does not have."""
    client = clients.admin(config, timeout_s)
    try:
        existing = set(client.list_topics())
    finally:
        client.close()
    return [name for name in names if name not in existing]


def ensure_topics(config: WorkerConfig) -> list[str]:
    """Create the data flow's missing topics; verify the partition counts of the others."""
    assert config.bootstrap_servers
    return create_topics(
        config.bootstrap_servers,
        topic_specs(config),
        replication_factor=config.replication_factor,
        **config.security.kafka_kwargs(),
    )
