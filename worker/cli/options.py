"""Command-line options: every WorkerConfig field as a flag and a CHARGE_CAPTURE_* variable.

A flag wins over its environment variable, which wins over the dataclass default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worker.config import Guarantee, WorkerConfig
from worker.errors import EXIT_CONFIG
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
    _registry_from_args(args, config)
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


# -- Confluent Schema Registry -------------------------------------------------------------
# One block, added by each verb that reads or writes framed Avro (run, demo, produce, replay).

_REGISTRY = [
    (
        "schema_registry_url",
        str,
        "Confluent Schema Registry URL (several: comma-separated); default none: the local "
        "schemas/registry.json ids",
    ),
    (
        "schema_registry_user",
        str,
        "registry basic-auth user; the password is read from "
        "CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD only",
    ),
    ("schema_registry_ca_file", str, "CA bundle (file or directory) of an https registry"),
    (
        "schema_registry_outage_s",
        float,
        "how long a registry may not answer before the worker exits (69); meanwhile batches "
        "wait, nothing is dead-lettered for it (default 300)",
    ),
]
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS.update({"0": False, "false": False, "no": False, "off": False})


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("schema registry")
    for name, kind, help_text in _REGISTRY:
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=help_text)
    group.add_argument(
        "--auto-register-schemas",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="register our schemas under <topic>-value at start (default, as the Confluent "
        "serializers); --no-auto-register-schemas only looks their ids up and stops (78) if "
        "one is missing",
    )


def _registry_from_args(args: argparse.Namespace, config: WorkerConfig) -> None:
    for name, kind, _ in _REGISTRY:
        value = getattr(args, name, None)
        if value is None and _env(name) is not None:
            value = kind(_env(name))
        if value is not None:
            setattr(config, name, value)
    auto = getattr(args, "auto_register_schemas", None)
    text = _env("auto_register_schemas")
    if auto is None and text is not None:
        auto = _BOOLEANS.get(text.strip().lower())
        if auto is None:
            print(
                f"charge-capture: {ENV_PREFIX}AUTO_REGISTER_SCHEMAS={text!r}: expected true or "
                "false",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_CONFIG)
    if auto is not None:
        config.auto_register_schemas = auto
