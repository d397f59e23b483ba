"""Command-line options: every WorkerConfig field as a flag and a CHARGE_CAPTURE_* variable.

A flag wins over its environment variable, which wins over the dataclass default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worker.config import Guarantee, WorkerConfig
from worker.kafka.partitioner import Partitioner
from worker.observability import logs

ENV_PREFIX = "CHARGE_CAPTURE_"

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
    ("max_poll_records", int, "most records decided per poll"),
    ("max_batch_ms", int, "most milliseconds spent deciding one poll's records"),
    ("compression_type", str, "producer compression (none by default; lz4, zstd, gzip)"),
    ("transaction_timeout_ms", int, None),
    ("call_deadline_s", float, "deadline of each transactional call"),
    (
        "max_broker_outage_s",
        float,
        "seconds without an answering broker before the worker exits 69 (default 300)",
    ),
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
    ("kafka_log_level", str, "level of kafka-python's own log lines (default WARNING)"),
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


# Further spellings of a flag, where the field's own name reads badly on a command line.
_ALIASES = {"max_broker_outage_s": ("--max-broker-outage",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every field; defaults come from the environment, then the dataclass."""
    for name, kind, help_text in _SIMPLE:
        flags = ("--" + name.replace("_", "-"), *_ALIASES.get(name, ()))
        parser.add_argument(*flags, dest=name, type=kind, default=None, help=help_text)
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
    logs.configure(config.log_level, config.kafka_log_level)
    if not config.bootstrap_servers:
        print(f"{verb}: no --bootstrap-servers configured", file=sys.stderr)
        return None
    return config
