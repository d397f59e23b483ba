"""worker.kafka.fast_send refuses what kafka-python's `send` refuses for its size, and only that."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError

from tests.brokers import BrokerInfo
from worker.kafka.admin import TopicSpec, create_topics
from worker.kafka.fast_send import FastSend
from worker.kafka.reading import read_to_end

MAX_REQUEST = 64 * 1024


@pytest.fixture
def topic(broker: BrokerInfo, topic_prefix: str) -> str:
    name = f"{topic_prefix}.sizes"
    create_topics(broker.bootstrap_servers, [TopicSpec(name, 1)])
    return name


@pytest.fixture
def fast(broker: BrokerInfo) -> Iterator[FastSend]:
    producer = KafkaProducer(
        # Batches wait for flush(), so a second record joins the first one's batch.
        bootstrap_servers=broker.bootstrap_servers,
        max_request_size=MAX_REQUEST,
        linger_ms=60_000,
    )
    yield FastSend(producer)
    producer.close(timeout=5)


@pytest.mark.parametrize(
    ("value_bytes", "headers"),
    [
        (MAX_REQUEST - 70, None),  # over once kafka-python's record overhead is added
        (MAX_REQUEST - 200, [("h", b"x" * 200)]),  # the headers tip it over
    ],
)
def test_a_record_over_max_request_size_with_its_overhead_is_refused_as_send_refuses_it(
    fast: FastSend, topic: str, value_bytes: int, headers: list[tuple[str, bytes]] | None
) -> None:
    with pytest.raises(MessageSizeTooLargeError, match="max_request_size"):
        fast.producer.send(topic, key=b"key", value=b"v" * value_bytes, headers=headers)
    with pytest.raises(MessageSizeTooLargeError, match="max_request_size"):
        fast.send(topic, 0, b"key", b"v" * value_bytes, headers)


def test_records_that_fit_are_sent_and_none_is_refused(
    fast: FastSend, topic: str, broker: BrokerInfo
) -> None:
    """The first record of a batch goes through the accumulator, the next onto the batch
    directly (batch_append); both are written, and neither errback hears of a refusal."""
    refused: list[BaseException] = []
    value = b"v" * 1000
    fast.send(topic, 0, b"first", value, None, errback=refused.append)
    fast.send(topic, 0, b"second", b"small", [("h", b"x")], errback=refused.append)
    assert len(fast.producer._accumulator._batches[fast._tps[(topic, 0)]]) == 1  # one batch
    fast.producer.flush(timeout=30)
    read = list(read_to_end(broker.bootstrap_servers, [topic], isolation_level="read_uncommitted"))
    assert [(r.key, len(r.value or b"")) for r in read] == [(b"first", len(value)), (b"second", 5)]
    assert refused == []
