"""The broker seam and the kafka-python transaction calls the worker relies on.

Runs against whichever broker `open_test_broker()` picks; assertions are what both Apache Kafka
and Tansu 0.6 do, and the parts only Apache Kafka does are marked apache_kafka_only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError
from kafka.structs import OffsetAndMetadata

from tests.brokers import BrokerInfo
from tests.helpers import wait_until
from worker.kafka.admin import TopicSpec, create_topics
from worker.kafka.embedded import EmbeddedBroker

pytestmark = pytest.mark.broker

# Tansu joins a group in about session_timeout_ms / 2.
GROUP_SETTINGS: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
TIMEOUT_S = 30.0


def _consumer(info: BrokerInfo, **config: Any) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=info.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **config,
    )


def _poll_until(consumer: KafkaConsumer, done: Any, timeout_s: float = TIMEOUT_S) -> list[Any]:
    """Poll records until done(records) holds; poll() itself blocks, so no sleeping here."""
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while not done(records):
        assert time.monotonic() < deadline, f"only {len(records)} records after {timeout_s}s"
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


@pytest.fixture
def producer(broker: BrokerInfo) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    yield p
    p.close(timeout=5)


def test_embedded_broker_start_stop_without_with() -> None:
    embedded = EmbeddedBroker().start()
    try:
        assert embedded.bootstrap_servers.startswith("127.0.0.1:")
        assert embedded._proc is not None
        proc = embedded._proc
    finally:
        embedded.stop()
    assert proc.poll() is not None
    embedded.stop()  # idempotent


def test_create_topics_partitions_and_idempotence(broker: BrokerInfo, topic_prefix: str) -> None:
    specs = [
        TopicSpec(f"{topic_prefix}.a", 6),
        TopicSpec(f"{topic_prefix}.b", 1, {"cleanup.policy": "compact"}),
    ]
    assert sorted(create_topics(broker.bootstrap_servers, specs)) == [s.name for s in specs]

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    try:
        for spec in specs:
            partitions = consumer.partitions_for_topic(spec.name)
            assert partitions == set(range(spec.partitions))
    finally:
        consumer.close()

    assert create_topics(broker.bootstrap_servers, specs) == []
    with pytest.raises(ValueError, match="partition counts"):
        create_topics(broker.bootstrap_servers, [TopicSpec(specs[0].name, 3)])


def test_transactional_consume_produce_round_trip(
    broker: BrokerInfo, topic_prefix: str, producer: KafkaProducer
) -> None:
    src, dst, group = f"{topic_prefix}.in", f"{topic_prefix}.out", f"{topic_prefix}.g"
    create_topics(broker.bootstrap_servers, [TopicSpec(src, 3), TopicSpec(dst, 3)])
    sent = {(f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(20)}
    for key, value in sent:
        producer.send(src, key=key, value=value)
    producer.flush(timeout=TIMEOUT_S)

    consumer = _consumer(broker, group_id=group, **GROUP_SETTINGS)
    tx = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=f"{group}.tx")
    try:
        consumer.subscribe([src])
        records = _poll_until(consumer, lambda rs: len(rs) >= len(sent))
        offsets = {
            TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, "", -1)
            for r in sorted(records, key=lambda r: r.offset)
        }

        tx.init_transactions()
        tx.begin_transaction()
        for r in records:
            tx.send(dst, key=r.key, value=r.value)
        tx.send_offsets_to_transaction(offsets, consumer.group_metadata())
        tx.commit_transaction()

        for tp, om in offsets.items():
            assert consumer.committed(tp) == om.offset
    finally:
        tx.close(timeout=5)
        consumer.close()

    reader = _consumer(broker)
    try:
        reader.assign([TopicPartition(dst, p) for p in range(3)])
        out = _poll_until(reader, lambda rs: len(rs) >= len(sent))
        assert {(r.key, r.value) for r in out} == sent
    finally:
        reader.close()


def _fence(broker: BrokerInfo, dst: str, txn_id: str) -> tuple[KafkaProducer, KafkaProducer]:
    """Leave `first` with an open, flushed transaction, then take its id over with `second`."""
    first = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=txn_id)
    first.init_transactions()
    first.begin_transaction()
    first.send(dst, key=b"k", value=b"fenced")
    first.flush(timeout=TIMEOUT_S)
    second = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=txn_id)
    second.init_transactions()
    return first, second


def _commit_within(producer: KafkaProducer, timeout_s: float) -> None:
    """commit_transaction() with a deadline: the same two steps, but a bounded wait.

    kafka-python's commit_transaction() waits on its TransactionalRequestResult without a
    timeout; Tansu answers a fenced EndTxn by dropping the connection, which kafka-python
    retries forever, so the unbounded call never returns.
    """
    result = producer._transaction_manager.begin_commit()
    producer._sender.wakeup()
    if not result.wait(timeout_ms=timeout_s * 1000):
        raise TimeoutError(f"commit_transaction did not finish in {timeout_s}s")


def test_second_producer_fences_first(broker: BrokerInfo, topic_prefix: str) -> None:
    dst = f"{topic_prefix}.out"
    create_topics(broker.bootstrap_servers, [TopicSpec(dst, 1)])
    first, second = _fence(broker, dst, f"{topic_prefix}.tx")
    try:
        # The worker's next transactional step after producing is send_offsets_to_transaction;
        # both brokers answer the stale epoch with an error kafka-python maps to this fatal one.
        with pytest.raises((ProducerFencedError, InvalidProducerEpochError)):
            first.send_offsets_to_transaction(
                {TopicPartition(dst, 0): OffsetAndMetadata(1, "", -1)}, f"{topic_prefix}.g"
            )
        # Fatal: the fenced instance cannot even abort (raises at once, nothing is sent); it
        # must be closed and replaced.
        with pytest.raises(KafkaError, match="ProducerFenced"):
            first.abort_transaction()
        second.begin_transaction()
        second.send(dst, key=b"k", value=b"winner")
        second.commit_transaction()
    finally:
        first.close(timeout=2)
        second.close(timeout=5)


def test_fenced_commit_fails_within_deadline(broker: BrokerInfo, topic_prefix: str) -> None:
    dst = f"{topic_prefix}.out"
    create_topics(broker.bootstrap_servers, [TopicSpec(dst, 1)])
    first, second = _fence(broker, dst, f"{topic_prefix}.tx")
    try:
        # Apache Kafka: ProducerFencedError. Tansu 0.6: the EndTxn is retried forever, so only
        # the deadline ends it -- which is why the worker bounds every transactional call.
        expected: tuple[type[BaseException], ...] = (ProducerFencedError, InvalidProducerEpochError)
        if broker.is_tansu:
            expected = (TimeoutError,)
        with pytest.raises(expected):
            _commit_within(first, timeout_s=3)
    finally:
        first.close(timeout=2)
        second.close(timeout=5)


@pytest.mark.apache_kafka_only
def test_fenced_transaction_is_invisible_to_read_committed(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    # Tansu 0.6 sends no aborted-transaction list in fetch responses, so the fenced producer's
    # open transaction (aborted by the second init_transactions) leaks to read_committed readers.
    dst = f"{topic_prefix}.out"
    create_topics(broker.bootstrap_servers, [TopicSpec(dst, 1)])
    first, second = _fence(broker, dst, f"{topic_prefix}.tx")
    try:
        second.begin_transaction()
        second.send(dst, key=b"k", value=b"winner")
        second.commit_transaction()
    finally:
        first.close(timeout=5)
        second.close(timeout=5)

    reader = _consumer(broker)
    try:
        reader.assign([TopicPartition(dst, 0)])
        # Read up to the committed sentinel rather than "wait and see nothing arrives".
        out = _poll_until(reader, lambda rs: any(r.value == b"winner" for r in rs))
        assert [r.value for r in out] == [b"winner"]
    finally:
        reader.close()


def test_wait_until_times_out_with_message() -> None:
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, timeout_s=0.1, interval_s=0.01, message="never")
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), timeout_s=5, interval_s=0.01)


def test_apache_kafka_container_advertises_its_bound_host_port() -> None:
    """The testcontainers path (no Docker here) must advertise the port clients connect to."""
    from tests.brokers import TESTCONTAINERS_DEFAULT_IMAGE, apache_kafka_env

    env = apache_kafka_env(45678)
    assert TESTCONTAINERS_DEFAULT_IMAGE.startswith("apache/kafka:")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:45678"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # Single node: the internal topics transactions need must not ask for three replicas.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
