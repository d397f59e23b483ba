"""Every Kafka client the worker builds, with the cluster's address and security settings.

One place for client settings, so the worker, replay, the table readers and the CLI verbs
talk to a cluster the same way (SASL/SSL included).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from worker.config import Guarantee, WorkerConfig
from worker.kafka import fast_records
from worker.kafka.assignor import CopartitionedCooperativeStickyAssignor

# kafka-python backs off reconnects exponentially up to 30 s by default: after an outage a
# client would sit out up to half a minute with the broker back. A 1 s ceiling resumes work
# within seconds and is still no reconnect storm (one attempt a second per client).
RECONNECT_BACKOFF_MAX_MS = 1000
# A constructor blocks until it has bootstrapped; the worker probes the bootstrap list first
# and retries, so a short wait here keeps SIGTERM and the outage clock responsive.
BOOTSTRAP_TIMEOUT_MS = 5000


def common(config: WorkerConfig, role: str) -> dict[str, Any]:
    """Address, client id and SASL/SSL settings every client of `config` shares."""
    assert config.bootstrap_servers, "no bootstrap servers configured"
    return {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": f"{config.app_id}-{role}",
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        **config.security.kafka_kwargs(),
    }


def compression(config: WorkerConfig, default: str | None) -> str | None:
    """kafka-python's compression_type: the configured one ("none" is none), else `default`."""
    chosen = config.compression_type or default
    return None if chosen in (None, "none") else chosen


def _never_create_topics(client: Any) -> Any:
    """kafka-python 3.0.12 accepts `allow_auto_create_topics` but does not hand it to the
    cluster metadata that makes the requests (they always ask for auto-creation): set it there
    too. Before the first topic is asked about: bootstrap requests name no topic."""
    cluster = getattr(client, "_metadata", None) or getattr(
        getattr(client, "_manager", None), "cluster", None
    )
    if cluster is not None and isinstance(getattr(cluster, "config", None), dict):
        cluster.config["allow_auto_create_topics"] = False
    return client


def _worker_client(config: WorkerConfig) -> dict[str, Any]:
    """What the live worker's own clients add: they never create a topic (a metadata request
    for a missing topic would, on a broker with auto.create.topics.enable, create it with the
    broker's defaults: the wrong partition count for co-partitioned state), and bootstrap
    briefly."""
    return {"allow_auto_create_topics": False, "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}


def isolation(config: WorkerConfig) -> str:
    """Exactly-once reads only committed records; at-least-once reads whatever is there."""
    exactly_once = config.processing_guarantee == Guarantee.EXACTLY_ONCE
    return "read_committed" if exactly_once else "read_uncommitted"


def group_consumer(config: WorkerConfig) -> KafkaConsumer:
    """The worker's member of the consumer group: offsets are committed in transactions."""
    fast_records.install()
    consumer = KafkaConsumer(
        **common(config, config.instance_id),
        **_worker_client(config),
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
    return _never_create_topics(consumer)


def worker_producer(config: WorkerConfig) -> KafkaProducer:
    """The worker's producer: transactional under exactly-once, idempotent otherwise."""
    # No compression by default: kafka-python compresses in Python on its sender thread,
    # which competes with decisions for the GIL (measured slower on a local broker).
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": compression(config, default=None),
        # send() waits this long for metadata or buffer space; the worker loads the metadata
        # of its output topics before its first batch, so a send only waits in an outage.
        "max_block_ms": 5000,
        **_worker_client(config),
    }
    if config.processing_guarantee == Guarantee.EXACTLY_ONCE:
        options.update(
            transactional_id=config.transactional_id,
            transaction_timeout_ms=config.transaction_timeout_ms,
        )
    else:
        options.update(enable_idempotence=True)
    return _never_create_topics(KafkaProducer(**common(config, config.instance_id), **options))


def reader(config: WorkerConfig, role: str, **overrides: Any) -> KafkaConsumer:
    """A consumer outside any group (partitions assigned directly, nothing committed)."""
    fast_records.install()
    options: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "allow_auto_create_topics": False,  # reading never creates what it reads
        **overrides,
    }
    return _never_create_topics(KafkaConsumer(**common(config, role), **options))


def restorer(config: WorkerConfig) -> KafkaConsumer:
    """The worker's changelog reader for restores: large fetches, since a restore reads whole
    partitions, and a short fetch wait: a broker holds a fetch whose partitions are all read
    to their end for the whole wait, and each restore ends on such fetches (measured: 100k
    visits restored in 2.8 s instead of 3.7 s on the embedded broker)."""
    return reader(
        config,
        f"{config.instance_id}-restore",
        isolation_level=isolation(config),
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        fetch_max_wait_ms=50,
    )


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
