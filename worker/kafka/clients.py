"""Every Kafka client the worker builds, with the cluster's address and security settings.

One place for client settings, so the worker, replay, the table readers and the CLI verbs
talk to a cluster the same way (SASL/SSL included).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from worker.config import Guarantee, WorkerConfig
from worker.kafka.assignor import CopartitionedCooperativeStickyAssignor


def common(config: WorkerConfig, role: str) -> dict[str, Any]:
    """Address, client id and SASL/SSL settings every client of `config` shares."""
    assert config.bootstrap_servers, "no bootstrap servers configured"
    return {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": f"{config.app_id}-{role}",
        **config.security.kafka_kwargs(),
    }


def compression(config: WorkerConfig, default: str | None) -> str | None:
    """kafka-python's compression_type: the configured one ("none" is none), else `default`."""
    chosen = config.compression_type or default
    return None if chosen in (None, "none") else chosen


def isolation(config: WorkerConfig) -> str:
    """Exactly-once reads only committed records; at-least-once reads whatever is there."""
    exactly_once = config.processing_guarantee == Guarantee.EXACTLY_ONCE
    return "read_committed" if exactly_once else "read_uncommitted"


def group_consumer(config: WorkerConfig) -> KafkaConsumer:
    """The worker's member of the consumer group: offsets are committed in transactions."""
    return KafkaConsumer(
        **common(config, config.instance_id),
        group_id=config.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation(config),
        partition_assignment_strategy=(CopartitionedCooperativeStickyAssignor,),
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        max_poll_records=config.max_poll_records,
        # Tansu holds a fetch for the full wait even when data arrives: keep it within the
        # commit interval so an idle-then-busy partition is not half a second late.
        fetch_max_wait_ms=max(config.commit_interval_ms, 10),
    )


def worker_producer(config: WorkerConfig) -> KafkaProducer:
    """The worker's producer: transactional under exactly-once, idempotent otherwise."""
    # No compression by default: kafka-python compresses in Python on its sender thread,
    # which competes with decisions for the GIL (measured slower on a local broker).
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": compression(config, default=None),
    }
    if config.processing_guarantee == Guarantee.EXACTLY_ONCE:
        options.update(
            transactional_id=config.transactional_id,
            transaction_timeout_ms=config.transaction_timeout_ms,
        )
    else:
        options.update(enable_idempotence=True)
    return KafkaProducer(**common(config, config.instance_id), **options)


def reader(config: WorkerConfig, role: str, **overrides: Any) -> KafkaConsumer:
    """A consumer outside any group (partitions assigned directly, nothing committed)."""
    options: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        **overrides,
    }
    return KafkaConsumer(**common(config, role), **options)


def bulk_producer(config: WorkerConfig) -> KafkaProducer:
    """An idempotent producer for bulk writes outside the worker's transactions (produce,
    replay's shadow topics): large batches, lz4 unless configured otherwise, every replica
    acknowledging."""
    return KafkaProducer(
        **common(config, "bulk"),
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        compression_type=compression(config, default="lz4"),
        enable_idempotence=True,
    )


def admin(config: WorkerConfig, timeout_s: float) -> KafkaAdminClient:
    timeout_ms = int(timeout_s * 1000)
    return KafkaAdminClient(
        **common(config, "admin"),
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
    )
