"""Which broker the tests talk to: KAFKA_BOOTSTRAP_SERVERS, else Apache Kafka in
testcontainers where a Docker engine answers, else the embedded Tansu broker.

Test-only: the package keeps just the embedded broker a user runs (worker.kafka.embedded).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from worker.errors import BrokerStartError
from worker.kafka.embedded import EmbeddedBroker, answers_kafka, free_loopback_port

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
IS_TANSU_ENV = "CHARGE_CAPTURE_BROKER_IS_TANSU"
# Apache Kafka's own image, single-node KRaft. testcontainers-python's KafkaContainer drives
# the Confluent image's start scripts, so apache/kafka runs as a generic container configured
# by environment; a confluentinc/cp-kafka image named in the env var still uses KafkaContainer.
TESTCONTAINERS_IMAGE_ENV = "CHARGE_CAPTURE_TEST_KAFKA_IMAGE"
TESTCONTAINERS_DEFAULT_IMAGE = "apache/kafka:3.9.1"


def apache_kafka_env(host_port: int) -> dict[str, str]:
    """Single-node KRaft settings; setting any KAFKA_* variable replaces the image defaults."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
        # Clients reach the broker through the host port bound below, so it is advertised.
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


@contextlib.contextmanager
def _kafka_container(image: str) -> Iterator[str]:
    """Kafka in testcontainers; yields its bootstrap servers once it answers requests."""
    if "confluentinc" in image:
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(image).with_kraft() as confluent:
            yield confluent.get_bootstrap_server()
        return
    from testcontainers.core.container import DockerContainer

    port = free_loopback_port()
    container = DockerContainer(image).with_bind_ports(9092, port)
    for name, value in apache_kafka_env(port).items():
        container = container.with_env(name, value)
    with container:
        bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not answers_kafka(bootstrap, timeout_s=2):
            if time.monotonic() > deadline:
                raise BrokerStartError(f"{image} did not answer on {bootstrap} within 120 s")
        yield bootstrap


class BrokerKind(StrEnum):
    EXTERNAL = "external"
    TESTCONTAINERS = "testcontainers"
    EMBEDDED = "embedded"


@dataclass
class BrokerInfo:
    bootstrap_servers: str
    kind: BrokerKind

    @property
    def is_tansu(self) -> bool:
        """An external broker is assumed to be Apache Kafka unless the env var says otherwise."""
        if self.kind is BrokerKind.EXTERNAL:
            return os.environ.get(IS_TANSU_ENV, "") == "1"
        return self.kind is BrokerKind.EMBEDDED

    @property
    def filters_aborted_transactions(self) -> bool:
        """Whether read_committed consumers really skip aborted records (Tansu 0.6 does not)."""
        return not self.is_tansu


def docker_available() -> bool:
    """A Docker engine answers a ping (fast False when there is no socket)."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def open_test_broker() -> Iterator[BrokerInfo]:
    """KAFKA_BOOTSTRAP_SERVERS, else Kafka in testcontainers, else embedded Tansu."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield BrokerInfo(external, BrokerKind.EXTERNAL)
        return
    if docker_available():
        image = os.environ.get(TESTCONTAINERS_IMAGE_ENV, TESTCONTAINERS_DEFAULT_IMAGE)
        with _kafka_container(image) as bootstrap:
            yield BrokerInfo(bootstrap, BrokerKind.TESTCONTAINERS)
        return
    with EmbeddedBroker() as broker:
        yield BrokerInfo(broker.bootstrap_servers, BrokerKind.EMBEDDED)
