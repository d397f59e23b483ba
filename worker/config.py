"""The worker's configuration: one dataclass, filled from flags and CHARGE_CAPTURE_* variables
by worker.cli.options."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker.kafka.partitioner import Partitioner


class Guarantee(StrEnum):
    EXACTLY_ONCE = "exactly-once"
    AT_LEAST_ONCE = "at-least-once"


@dataclass
class Security:
    """Passed through to kafka-python (SASL/SSL)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def kafka_kwargs(self) -> dict[str, Any]:
        names = {"sasl_username": "sasl_plain_username", "sasl_password": "sasl_plain_password"}
        return {
            names.get(f.name, f.name): getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name)
        }


@dataclass
class WorkerConfig:
    bootstrap_servers: str | None = None
    app_id: str = "charge-capture"
    group_id: str | None = None  # default: app_id
    instance_id: str = field(default_factory=socket.gethostname)
    input_topic: str = "charges.captured"
    corrected_topic: str = "charges.corrected"
    held_topic: str = "charges.held"
    dlq_topic: str = "charges.dlq"
    partitions: int = 6
    replication_factor: int = -1  # when creating topics; -1: the cluster's default
    processing_guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    commit_interval_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    max_poll_records: int = 1000
    # Work per poll is also bounded in time: past it the rest of a polled batch is read again
    # by the next poll, so kafka-python's I/O thread and the commit are never held off long.
    max_batch_ms: int = 500
    compression_type: str | None = None  # none, gzip, lz4, zstd; None: each client's default
    transaction_timeout_ms: int = 30_000
    call_deadline_s: float = 30.0  # every transactional call; past it the producer is rebuilt
    # How long brokers may not answer before the worker gives up (exit 69); shorter outages
    # are waited out in-process (docs/operations.md "Broker outages").
    max_broker_outage_s: float = 300.0
    retention_days: int = 30
    input_partitioner: Partitioner = Partitioner.MURMUR2
    version_memory_days: int = 400  # see worker.state.store: Retired
    hot_visits: int = 1024  # decoded visits kept per partition (worker.state.visits)
    http_port: int = 9464
    processes: int = 1  # `run --processes`: worker processes as one unit (worker.cli.supervisor)
    rules_dir: Path | None = None
    log_level: str = "INFO"
    kafka_log_level: str = "WARNING"  # kafka-python's own loggers (rate-limited either way)
    security: Security = field(default_factory=Security)
    # Confluent Schema Registry (worker.serde.registry_source); no URL: schemas/registry.json.
    # Its password is read from CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD only, never a flag.
    schema_registry_url: str | None = None
    schema_registry_user: str | None = None
    schema_registry_ca_file: str | None = None
    auto_register_schemas: bool = True  # as the Confluent serializers; off: ids looked up
    schema_registry_outage_s: float = 300.0  # longest wait for a silent registry; then exit 69

    @property
    def group(self) -> str:
        return self.group_id or self.app_id

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}.state-changelog"

    @property
    def repartition_topic(self) -> str:
        return f"{self.app_id}.repartition"

    @property
    def transactional_id(self) -> str:
        # Stable per instance, so a restarted instance fences its own zombie.
        return f"{self.app_id}-{self.instance_id}"
