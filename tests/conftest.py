"""Shared fixtures: one broker per test session, unique topic names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.brokers import BrokerInfo, open_test_broker
from tests.registry_helpers import ID_BASE
from tests.schema_registry_server import SchemaRegistryServer


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerInfo]:
    """KAFKA_BOOTSTRAP_SERVERS, else testcontainers Kafka, else embedded Tansu."""
    with open_test_broker() as info:
        yield info


@pytest.fixture
def topic_prefix() -> str:
    """Tests share one broker, so every topic/group/transactional id gets a unique prefix."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _skip_apache_kafka_only(request: pytest.FixtureRequest) -> None:
    # Resolve the broker only for marked tests: unit tests must not start one.
    if request.node.get_closest_marker("apache_kafka_only") is None:
        return
    info: BrokerInfo = request.getfixturevalue("broker")
    if not info.filters_aborted_transactions:
        pytest.skip(
            f"needs Apache Kafka transaction semantics; the {info.kind} broker at "
            f"{info.bootstrap_servers} (Tansu) does not filter aborted transactions "
            "— run against Apache Kafka (KAFKA_BOOTSTRAP_SERVERS or a Docker engine)"
        )


@pytest.fixture
def server() -> Iterator[SchemaRegistryServer]:
    """A Schema Registry (the test server of the documented API), ids from 100001 as a real
    registry's. tests/test_metrics_http.py has its own `server`: the worker's HTTP port."""
    with SchemaRegistryServer(id_base=ID_BASE) as running:
        yield running
