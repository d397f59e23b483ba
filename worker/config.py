"""Worker configuration from flags and CHARGE_CAPTURE_* environment variables."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import sys
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker import logs
from worker.state import PartitionState

ENV_PREFIX = "CHARGE_CAPTURE_"


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


class Partitioner(StrEnum):
    """How the input topic's producers place keys (see worker/state.py: home_partition)."""

    MURMUR2 = "murmur2"
    CRC32 = "crc32"


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
    replication_factor: int = 1
    processing_guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    commit_interval_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    max_poll_records: int = 1000
    compression_type: str | None = None  # producer compression: gzip, snappy, lz4, zstd
    transaction_timeout_ms: int = 30_000
    call_deadline_s: float = 30.0  # every transactional call; past it the instance fails
    retention_days: int = 30
    input_partitioner: Partitioner = Partitioner.MURMUR2
    version_memory_days: int = 400  # see worker/state.py: Retired
    http_port: int = 9464
    rules_dir: Path | None = None
    log_level: str = "INFO"
    security: Security = field(default_factory=Security)

    @property
    def group(self) -> str:
        return self.group_id or self.app_id

    def new_state(self, partition: int, partitions: int = 0) -> PartitionState:
        return PartitionState(
            partition,
            retention=dt.timedelta(days=self.retention_days),
            # Never shorter than the retention: a live visit's events are always decidable.
            version_memory=dt.timedelta(days=max(self.version_memory_days, self.retention_days)),
            layout=f"{self.input_partitioner.value}/{partitions}" if partitions else "",
        )

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


_SIMPLE = [
    ("bootstrap_servers", str, "Kafka bootstrap servers (run, demo: embedded broker if none)"),
    ("app_id", str, "application id: prefix of the changelog/repartition topics"),
    ("group_id", str, "consumer group (default: app id)"),
    ("instance_id", str, "stable instance id for the transactional.id (default: hostname)"),
    ("input_topic", str, None),
    ("corrected_topic", str, None),
    ("held_topic", str, None),
    ("dlq_topic", str, None),
    ("partitions", int, "partitions when creating topics"),
    ("replication_factor", int, "replication factor when creating topics"),
    ("commit_interval_ms", int, "poll timeout = longest wait before a batch is committed"),
    ("session_timeout_ms", int, None),
    ("heartbeat_interval_ms", int, None),
    ("max_poll_records", int, None),
    ("compression_type", str, "producer compression (none by default; lz4, zstd, gzip)"),
    ("transaction_timeout_ms", int, None),
    ("call_deadline_s", float, "deadline of each transactional call"),
    ("retention_days", int, "event-time retention of visit state after the date of service"),
    (
        "input_partitioner",
        Partitioner,
        "how the input's producers place keys: murmur2 (Java, kafka-python) or crc32 "
        "(librdkafka/confluent-kafka); events off their patient's partition are re-keyed",
    ),
    (
        "version_memory_days",
        int,
        "how long after a charge's last event its decision version is kept once its visit "
        "expired; events for dates of service older than this are dead-lettered",
    ),
    ("http_port", int, "port of /metrics, /healthz, /readyz (0 = off)"),
    ("rules_dir", Path, "rule-pack directory (default: built-in)"),
    ("log_level", str, None),
]
_SECURITY = [
    ("security_protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("sasl_mechanism", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ("sasl_username", None),
    ("sasl_password", "prefer the env var CHARGE_CAPTURE_SASL_PASSWORD"),
    ("ssl_cafile", None),
    ("ssl_certfile", None),
    ("ssl_keyfile", None),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every field; defaults come from the environment, then the dataclass."""
    for name, kind, help_text in _SIMPLE:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    parser.add_argument(
        "--processing-guarantee", choices=[g.value for g in Guarantee], default=None
    )
    for name, help_text in _SECURITY:
        parser.add_argument("--" + name.replace("_", "-"), default=None, help=help_text)


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper())


def from_args(args: argparse.Namespace) -> WorkerConfig:
    config = WorkerConfig()
    for name, kind, _ in _SIMPLE:
        value = getattr(args, name, None)
        if value is None and _env(name) is not None:
            value = kind(_env(name))
        if value is not None:
            setattr(config, name, value)
    guarantee = getattr(args, "processing_guarantee", None) or _env("processing_guarantee")
    if guarantee:
        config.processing_guarantee = Guarantee(guarantee)
    for name, _ in _SECURITY:
        value = getattr(args, name, None) or _env(name)
        if value:
            setattr(config.security, name, value)
    return config


def cluster_config(args: argparse.Namespace, verb: str) -> WorkerConfig | None:
    """The configuration of a command that needs a real cluster (no embedded broker), logging
    configured; None, with the reason on stderr, when no bootstrap servers are set."""
    config = from_args(args)
    logs.configure(config.log_level)
    if not config.bootstrap_servers:
        print(f"{verb}: no --bootstrap-servers configured", file=sys.stderr)
        return None
    return config
