"""Where producers put patient keys, checked against the real client libraries.

`home_partition` must agree with the partitioner of whoever produces the input topic, or the
worker would re-key every event (or, worse, split a patient's state): murmur2 for the Java
client and kafka-python, CRC32 for librdkafka (confluent-kafka) `consistent_random`.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

from tests.brokers import BrokerInfo
from tests.factories import charge, other_line
from tests.helpers import wait_until
from tests.worker_harness import running_worker, worker_config
from worker.kafka.admin import TopicSpec, create_topics
from worker.kafka.partitioner import Partitioner, home_partition
from worker.kafka.reading import read_to_end
from worker.serde.codec import Codec

pytestmark = pytest.mark.broker
KEYS = [f"P{n:08d}".encode() for n in range(60)]


def _placed(broker: BrokerInfo, topic: str) -> dict[bytes, int]:
    return {r.key: r.partition for r in read_to_end(broker.bootstrap_servers, [topic])}


def test_murmur2_is_where_kafka_python_puts_a_key(broker: BrokerInfo, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.keys"
    create_topics(broker.bootstrap_servers, [TopicSpec(topic, 6)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    for key in KEYS:
        producer.send(topic, key=key, value=b"x")
    producer.flush(timeout=30)
    producer.close(timeout=5)
    placed = _placed(broker, topic)
    assert placed == {k: home_partition(k, 6, Partitioner.MURMUR2) for k in KEYS}
    assert len(set(placed.values())) == 6


def test_crc32_is_where_librdkafka_puts_a_key(broker: BrokerInfo, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.keys"
    create_topics(broker.bootstrap_servers, [TopicSpec(topic, 6)])
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})  # consistent_random
    for key in KEYS:
        producer.produce(topic, key=key, value=b"x")
    assert producer.flush(30) == 0
    placed = _placed(broker, topic)
    assert placed == {k: home_partition(k, 6, Partitioner.CRC32) for k in KEYS}
    assert placed != {k: home_partition(k, 6, Partitioner.MURMUR2) for k in KEYS}


def test_a_librdkafka_fed_input_is_decided_in_place_with_crc32(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix, input_partitioner=Partitioner.CRC32)
    codec = Codec()
    traction = charge(event_id="E1", charge_id="T1")
    cmt = other_line("98940", "M1", event_id="E2")
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for event in (traction, cmt):
        producer.produce(config.input_topic, key=b"P00000001", value=codec.encode_event(event))
    assert producer.flush(30) == 0
    with running_worker(config) as worker:
        wait_until(lambda: len(worker.committed) > 0 and worker.caught_up(), 60)
        wait_until(
            lambda: any(
                codec.decode_decision(r.value).charge_id == "T1"
                for r in read_to_end(broker.bootstrap_servers, [config.held_topic])
            ),
            30,
            message="the traction line beside CMT was not held",
        )
    assert list(read_to_end(broker.bootstrap_servers, [config.repartition_topic])) == []
