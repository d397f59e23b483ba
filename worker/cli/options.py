"""Command-line options in groups; each verb takes the groups (or some options of a group) it
uses, so its --help lists only its own flags.

Every option is a flag and a CHARGE_CAPTURE_* variable named after the flag
(`--http-port` / `CHARGE_CAPTURE_HTTP_PORT`; `--rules` keeps `CHARGE_CAPTURE_RULES_DIR`,
the name deployments already use). A flag wins over its variable, which wins over
the WorkerConfig default. Values are checked when they are read, a variable's as strictly as
a flag's: a bad one is a usage error (exit 2) naming the flag or the variable.

Adding an option is one line: an `Option(...)` in its group below (with its field in
WorkerConfig): `Option("max_broker_outage_s", "how long ...", values.seconds,
flag="--max-broker-outage")` in WORKER gives run and demo `--max-broker-outage` and
CHARGE_CAPTURE_MAX_BROKER_OUTAGE, its default from the dataclass shown in --help. A new group
is a `Group(...)` plus its name in the `VERBS` entries that take it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from worker.cli import values
from worker.cli.optionkit import (
    ENV_PREFIX,
    Group,
    Option,
    UsageError,
    add_groups,
    apply_environment,
    fill,
)
from worker.config import Guarantee, WorkerConfig
from worker.kafka.partitioner import Partitioner
from worker.kafka.probe import probe
from worker.observability import logs

__all__ = [
    "ENV_PREFIX",
    "VERBS",
    "Group",
    "Option",
    "UsageError",
    "add_options",
    "cluster_config",
    "from_args",
]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What kafka-python implements (kafka.net.sasl); anything else fails only at bootstrap.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
COMPRESSION_TYPES = ("none", "gzip", "lz4", "zstd")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _ms(low: int) -> values.Parse:
    return values.integer(low)


CLUSTER = Group(
    "cluster and security",
    (
        Option(
            "bootstrap_servers",
            "Kafka bootstrap servers",
            values.bootstrap_servers,
            metavar="HOST:PORT[,...]",
            default="none; run and demo then start an embedded broker",
        ),
        Option(
            "security.security_protocol",
            f"how clients talk to the brokers: {', '.join(SECURITY_PROTOCOLS)}",
            values.choice(*SECURITY_PROTOCOLS, upper=True),
            metavar="PROTOCOL",
        ),
        Option(
            "security.sasl_mechanism",
            f"SASL mechanism, with SASL_PLAINTEXT or SASL_SSL: {', '.join(SASL_MECHANISMS)}",
            values.choice(*SASL_MECHANISMS, upper=True),
            metavar="MECHANISM",
            default="none",
        ),
        Option("security.sasl_username", "SASL user name", metavar="USER", default="none"),
        Option(
            "security.sasl_password",
            "SASL password; prefer the variable, a flag shows in the process list",
            metavar="PASSWORD",
            default="none",
        ),
        Option(
            "security.ssl_cafile",
            "CA bundle that signs the brokers' certificates",
            values.existing_file,
            metavar="FILE",
            default="the system's CAs",
        ),
        Option(
            "security.ssl_certfile",
            "client certificate (mutual TLS)",
            values.existing_file,
            metavar="FILE",
            default="none",
        ),
        Option(
            "security.ssl_keyfile",
            "client certificate's key",
            values.existing_file,
            metavar="FILE",
            default="none",
        ),
    ),
)

TOPICS = Group(
    "topics",
    (
        Option("app_id", "application id: prefix of the changelog and repartition topics"),
        Option("input_topic", "charge events in"),
        Option("corrected_topic", "billable decisions out"),
        Option("held_topic", "held decisions out"),
        Option("dlq_topic", "records that cannot be decided"),
        Option("partitions", "partitions of topics this verb creates", values.integer(1)),
        Option(
            "replication_factor",
            "replication factor of topics this verb creates",
            values.integer(1, also=(-1,)),
            default="-1, the brokers' default.replication.factor",
        ),
    ),
)

WORKER = Group(
    "worker tuning",
    (
        Option("group_id", "consumer group", default="the app id"),
        Option(
            "instance_id",
            "stable id of this instance, the suffix of its transactional.id: give each "
            "instance its own (a StatefulSet pod name)",
            default="the host name",
        ),
        Option(
            "processing_guarantee",
            "exactly-once (transactions) or at-least-once",
            values.enum(Guarantee),
            metavar="GUARANTEE",
        ),
        Option(
            "commit_interval_ms",
            "poll timeout: the longest wait before a batch is committed (at least 10: below "
            "that an idle worker spins)",
            _ms(10),
        ),
        Option("session_timeout_ms", "consumer group session timeout", _ms(1)),
        Option("heartbeat_interval_ms", "group heartbeat, below the session timeout", _ms(1)),
        Option("max_poll_records", "records per polled batch", values.integer(1)),
        Option("max_batch_ms", "most milliseconds spent deciding one poll's records", _ms(1)),
        Option("transaction_timeout_ms", "Kafka transaction timeout", _ms(1)),
        Option("call_deadline_s", "deadline of each transactional call", values.seconds),
        Option(
            "max_broker_outage_s",
            "seconds without an answering broker before the worker exits 69",
            values.seconds,
            flag="--max-broker-outage",
            metavar="SECONDS",
        ),
    ),
)

PRODUCER = Group(
    "producer",
    (
        Option(
            "compression_type",
            f"compression of the batches this verb writes: {', '.join(COMPRESSION_TYPES)}",
            values.choice(*COMPRESSION_TYPES),
            metavar="TYPE",
            default="none for run and demo, lz4 for produce and replay's shadow topics",
        ),
    ),
)

STATE = Group(
    "state",
    (
        Option(
            "retention_days",
            "event-time retention of visit state after the date of service",
            values.integer(1),
        ),
        Option(
            "version_memory_days",
            "how long after a charge's last event its decision version is kept once its "
            "visit expired; events for dates of service older than this are dead-lettered",
            values.integer(1),
        ),
        Option(
            "hot_visits",
            "visits per partition kept decoded for deciding; the rest are held as their "
            "changelog bytes and decoded when an event touches them",
            values.integer(16),
            metavar="N",
        ),
        Option(
            "input_partitioner",
            "how the input's producers place keys: murmur2 (Java, kafka-python) or crc32 "
            "(librdkafka, confluent-kafka); events off their patient's partition are re-keyed",
            values.enum(Partitioner),
            metavar="PARTITIONER",
        ),
    ),
)

RULES = Group(
    "rules",
    (
        Option(
            "rules_dir",
            "rule-pack directory",
            values.directory,
            flag="--rules",
            metavar="DIR",
            default="the built-in packs",
            aliases=("--rules-dir",),
            variable=ENV_PREFIX + "RULES_DIR",
        ),
    ),
)

PROCESSES = Group(
    "processes",
    (
        Option(
            "processes",
            "worker processes run as one unit, each a member of the group with its own "
            "partitions, instance id (<instance id>-K) and http port (--http-port + K - 1): "
            "one per core the machine can spare",
            values.integer(1),
            metavar="N",
        ),
    ),
)

HTTP = Group(
    "http",
    (Option("http_port", "port of /metrics, /healthz, /readyz; 0: off", values.integer(0, 65535)),),
)

LOGGING = Group(
    "logging",
    (
        Option(
            "log_level",
            f"level of the JSON log lines on stdout: {', '.join(LOG_LEVELS)}",
            values.choice(*LOG_LEVELS, upper=True),
            metavar="LEVEL",
        ),
        Option(
            "kafka_log_level",
            "level of kafka-python's own log lines, rate-limited to one per kind a minute",
            values.choice(*LOG_LEVELS, upper=True),
            metavar="LEVEL",
        ),
    ),
)

REGISTRY = Group(
    "schema registry",
    (
        Option(
            "schema_registry_url",
            "Confluent Schema Registry: schema ids of what is read and written come from it",
            metavar="URL",
            default="none: the local schemas/registry.json",
        ),
        Option(
            "schema_registry_user",
            "basic-auth user; the password only from CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD",
            metavar="USER",
            default="none",
        ),
        Option(
            "schema_registry_ca_file",
            "CA bundle that signs the registry's certificate",
            values.existing_file,
            metavar="FILE",
            default="the system's CAs",
        ),
        Option(
            "auto_register_schemas",
            "register our schemas under <topic>-value at start, as the Confluent serializers; "
            "--no-auto-register-schemas only looks their ids up and stops (78) if one is missing",
            switch=True,
        ),
        Option(
            "schema_registry_outage_s",
            "longest wait for a registry that does not answer, then exit 69",
            values.seconds,
        ),
    ),
)

_RUN = (CLUSTER, TOPICS, WORKER, PRODUCER, STATE, RULES, REGISTRY, HTTP, LOGGING)
VERBS: dict[str, tuple[Group, ...]] = {
    "run": (*_RUN, PROCESSES),
    "demo": _RUN,
    "topics": (CLUSTER, TOPICS, LOGGING),
    "produce": (CLUSTER, TOPICS.pick("input_topic"), PRODUCER, REGISTRY, LOGGING),
    "replay": (
        CLUSTER,
        TOPICS.pick("app_id", "input_topic", "corrected_topic", "held_topic", "dlq_topic"),
        PRODUCER,
        STATE,
        RULES,
        REGISTRY,
        LOGGING,
    ),
    "decisions": (CLUSTER, TOPICS.pick("corrected_topic", "held_topic"), REGISTRY, LOGGING),
    "check": (RULES,),
}
ALL_OPTIONS: tuple[Option, ...] = tuple(
    {o.field: o for g in VERBS["run"] for o in g.options}.values()
)


# -- the parser ----------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """The flags of `verb` (its groups in VERBS), each saying its default and variable."""
    groups = VERBS[verb]
    add_groups(parser, groups)
    parser.set_defaults(_options=tuple(o for g in groups for o in g.options), _parser=parser)


def _options_of(args: argparse.Namespace) -> Sequence[Option]:
    offered: Sequence[Option] | None = getattr(args, "_options", None)
    return ALL_OPTIONS if offered is None else offered


def from_args(args: argparse.Namespace) -> WorkerConfig:
    """The WorkerConfig of the options the verb offers: flag, else variable, else default.

    A Namespace that came from no parser (tests) gets every option from the environment."""
    options = _options_of(args)
    apply_environment(args, options)
    config = WorkerConfig()
    fill(config, args, options)
    _check_together(config)
    return config


def _check_together(config: WorkerConfig) -> None:
    """Settings that are each fine but do not work together."""
    if config.heartbeat_interval_ms >= config.session_timeout_ms:
        raise UsageError(
            f"--heartbeat-interval-ms {config.heartbeat_interval_ms} must be below "
            f"--session-timeout-ms {config.session_timeout_ms}"
        )
    security = config.security
    uses_sasl = security.security_protocol.startswith("SASL_")
    if security.sasl_mechanism and not uses_sasl:
        raise UsageError(
            f"--sasl-mechanism {security.sasl_mechanism} needs --security-protocol "
            f"SASL_PLAINTEXT or SASL_SSL (it is {security.security_protocol})"
        )
    if uses_sasl and not security.sasl_mechanism:
        raise UsageError(f"--security-protocol {security.security_protocol} needs --sasl-mechanism")
    last_port = config.http_port + config.processes - 1
    if config.http_port and last_port > 65535:
        raise UsageError(
            f"--http-port {config.http_port} with --processes {config.processes} needs ports "
            f"up to {last_port}, past 65535"
        )


def cluster_config(args: argparse.Namespace, verb: str) -> WorkerConfig:
    """The configuration of a one-shot verb that needs a real cluster (no embedded broker),
    its log lines on stderr (stdout is the verb's output), the cluster probed: a UsageError
    when no bootstrap servers are set, BrokerUnavailable or ConfigError (worker.kafka.probe)
    when they do not answer as set."""
    config: WorkerConfig = getattr(args, "config", None) or from_args(args)
    logs.configure(config.log_level, sys.stderr)
    if config.log_level != "DEBUG":
        # The client's own lines (retries, a slow event-loop task on a busy machine, a metadata
        # refresh cancelled by close) are noise in a one-shot command's output: what fails
        # reaches the command as an exception and is reported in one line.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if not config.bootstrap_servers:
        raise UsageError(
            f"{verb} needs a cluster: --bootstrap-servers or {ENV_PREFIX}BOOTSTRAP_SERVERS"
        )
    probe(config)
    return config
