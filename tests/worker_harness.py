"""Run the real worker in-process against the test broker, on topics of its own."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from kafka import KafkaProducer

from tests.brokers import BrokerInfo
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.observability.health import Health
from worker.observability.metrics import Metrics
from worker.runtime.worker import Worker


def isolated_config(broker: BrokerInfo | str, prefix: str, **overrides: Any) -> WorkerConfig:
    """A worker configuration on topics, group and transactional id of this test alone."""
    config = WorkerConfig(
        bootstrap_servers=broker if isinstance(broker, str) else broker.bootstrap_servers,
        app_id=f"{prefix}-app",
        instance_id="test",
        input_topic=f"{prefix}.charges.captured",
        corrected_topic=f"{prefix}.charges.corrected",
        held_topic=f"{prefix}.charges.held",
        dlq_topic=f"{prefix}.charges.dlq",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        http_port=0,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def worker_config(broker: BrokerInfo, prefix: str, **overrides: Any) -> WorkerConfig:
    """`isolated_config` with its topics created."""
    config = isolated_config(broker, prefix, **overrides)
    ensure_topics(config)
    return config


def config_flags(config: WorkerConfig, *, worker: bool = True) -> list[str]:
    """The command-line flags that point a `charge-capture` command at `config`'s topics;
    `worker=False` leaves out the group and instance id, which only run and demo take."""
    assert config.bootstrap_servers
    flags = [
        "--bootstrap-servers", config.bootstrap_servers,
        "--app-id", config.app_id,
        "--input-topic", config.input_topic,
        "--corrected-topic", config.corrected_topic,
        "--held-topic", config.held_topic,
        "--dlq-topic", config.dlq_topic,
    ]  # fmt: skip
    if worker:
        flags += ["--group-id", config.group, "--instance-id", config.instance_id]
    return flags


@contextlib.contextmanager
def running_worker(config: WorkerConfig, **worker_options: Any) -> Iterator[Worker]:
    worker = Worker(config, metrics=Metrics(), health=Health(), **worker_options)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)


def send_raw(
    config: WorkerConfig,
    items: list[tuple[bytes | None, bytes | None]],
    topic: str | None = None,
    partition: int | None = None,
) -> None:
    """Produce raw key/value bytes (for malformed records), to the input topic by default."""
    producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers)
    try:
        for key, value in items:
            producer.send(topic or config.input_topic, key=key, value=value, partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
