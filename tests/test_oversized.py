"""Inputs of 1 MB and 5 MB (the broker's and the worker's producer at their default limits):
each becomes a dead letter, nothing restarts, the events after them are decided, and the group's
committed offsets never pass an input without its output.

A batch publishes each charge's latest decision, so an input's own decision may be superseded in
its batch by one a later line of the visit caused (sourced at that later record): an input is
answered for by a decision whose source is that record or whose billed line is its event."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from rules.model import ChargeEvent, ErrorKind
from tests.brokers import BrokerInfo
from tests.factories import charge
from tests.helpers import metric_total, wait_until
from tests.worker_harness import running_worker, worker_config
from worker.config import WorkerConfig
from worker.kafka.partitioner import home_partition
from worker.kafka.reading import read_to_end
from worker.processing.outputs import DLQ_VALUE_BYTES
from worker.runtime.worker import Worker
from worker.serde.codec import Codec

pytestmark = pytest.mark.broker
CODEC = Codec()


def big_inputs() -> list[ChargeEvent]:
    """~1 MB of diagnosis codes on one line, ~5 MB of modifiers on another."""
    return [
        charge(event_id="X1", charge_id="X1", diagnosis_codes=["M54.50"] * 150_000),
        charge(event_id="X5", charge_id="X5", modifiers=["GP"] * 1_750_000),
    ]


def send(config: WorkerConfig, events: list[ChargeEvent]) -> None:
    """As an upstream producer allowed large records would: compressed, so the broker's default
    1 MB limit (which counts compressed batches) takes them."""
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        max_request_size=16 * 1024 * 1024,
        compression_type="gzip",
    )
    try:
        for event in events:
            value = CODEC.encode_event(event)
            producer.send(config.input_topic, key=event.patient_id.encode(), value=value)
            producer.flush(timeout=60)  # one at a time: the order within the partition is known
    finally:
        producer.close(timeout=5)


class OffsetsNeverPassOutputs(threading.Thread):
    """While the worker runs: each time, the group's committed offset of the input partition,
    then the outputs as of then; every input offset below the committed one must have an
    output (a decision whose source is that record, or its dead letter)."""

    def __init__(self, config: WorkerConfig, partition: int, offsets: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.config, self.tp = config, TopicPartition(config.input_topic, partition)
        self.offsets = offsets  # input offset of each event id
        self.halt = threading.Event()
        self.samples: list[int] = []
        self.violations: list[tuple[int, list[int]]] = []

    def run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap_servers,
            group_id=self.config.group,
            enable_auto_commit=False,
        )
        try:
            while not self.halt.wait(0.3):
                try:
                    committed = consumer.committed(self.tp, timeout_ms=5000) or 0
                except Exception:  # the group's coordinator not known yet: sample again
                    continue
                covered = outputs_by_offset(self.config, self.tp.partition, self.offsets)
                missing = [o for o in range(committed) if o not in covered]
                self.samples.append(committed)
                if missing:
                    self.violations.append((committed, missing))
        finally:
            consumer.close(autocommit=False)


def outputs_by_offset(
    config: WorkerConfig, partition: int, event_offsets: dict[str, int]
) -> set[int]:
    """The input offsets of `partition` answered for by an output."""
    assert config.bootstrap_servers
    offsets = set()
    for record in read_to_end(
        config.bootstrap_servers, [config.corrected_topic, config.held_topic]
    ):
        decision = CODEC.decode_decision(record.value)
        source = decision.source
        if source.topic == config.input_topic and source.partition == partition:
            offsets.add(source.offset)
            offsets.add(event_offsets[decision.charge.event_id])
    for record in read_to_end(config.bootstrap_servers, [config.dlq_topic]):
        letter = CODEC.decode_dead_letter(record.value)
        if letter.source_partition == partition:
            offsets.add(letter.source_offset)
    return offsets


@pytest.fixture
def watched(broker: BrokerInfo, topic_prefix: str) -> Iterator[WorkerConfig]:
    yield worker_config(broker, topic_prefix)


def _restarts(worker: Worker) -> float:
    return metric_total(worker.metrics.registry, "charge_capture_instance_restarts_total")


@pytest.mark.parametrize("where", ["input limit", "producer limit"])
def test_1_and_5_mb_inputs_are_dead_lettered_without_a_restart(
    watched: WorkerConfig, where: str
) -> None:
    config = watched
    # All on one patient, so one partition holds them in this order.
    before = [charge(event_id=f"B{n}", charge_id=f"B{n}") for n in range(3)]
    after = [charge(event_id=f"A{n}", charge_id=f"A{n}") for n in range(3)]
    partition = home_partition(b"P00000001", config.partitions, config.input_partitioner)
    sent = [*before, *big_inputs(), *after]
    event_offsets = {event.event_id: offset for offset, event in enumerate(sent)}
    with running_worker(config) as worker:
        if where == "producer limit":
            # No input cap: the decision itself (it embeds the line) is too large to send.
            worker.processor.max_input_bytes = None
        watcher = OffsetsNeverPassOutputs(config, partition, event_offsets)
        watcher.start()
        send(config, sent)
        wait_until(
            lambda: (
                len(outputs_by_offset(config, partition, event_offsets)) == 8 and worker.caught_up()
            ),
            120,
            message="not every input has its output",
        )
        watcher.halt.set()
        watcher.join(timeout=30)
        assert worker.restarts == 0 and _restarts(worker) == 0
    assert not watcher.violations, watcher.violations
    assert watcher.samples, "the committed offsets were never sampled"

    letters = {
        (letter := CODEC.decode_dead_letter(r.value)).source_offset: letter
        for r in read_to_end(str(config.bootstrap_servers), [config.dlq_topic])
    }
    assert sorted(letters) == [3, 4]
    for offset, event in zip((3, 4), big_inputs(), strict=True):
        letter, whole = letters[offset], CODEC.encode_event(event)
        assert letter.error_kind == ErrorKind.TOO_LARGE
        assert letter.value_length == len(whole) > 1_000_000
        assert letter.value_sha256 == hashlib.sha256(whole).hexdigest()
        assert letter.value == whole[:DLQ_VALUE_BYTES]
        text = "input limit" if where == "input limit" else "MessageSizeTooLargeError"
        assert text in letter.error_message, letter.error_message
    decided = {
        CODEC.decode_decision(r.value).charge_id
        for r in read_to_end(
            str(config.bootstrap_servers), [config.corrected_topic, config.held_topic]
        )
    }
    assert decided == {"B0", "B1", "B2", "A0", "A1", "A2"}


def test_a_decision_the_topic_refuses_is_dead_lettered(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    """The broker's own per-topic limit (max.message.bytes), seen only when the batch is
    acknowledged: the refusal is laid at the input it came from, and its dead letter, refused
    too, is sent again without the value."""
    if broker.is_tansu:
        pytest.skip("Tansu does not enforce a topic's max.message.bytes")
    config = worker_config(broker, topic_prefix)
    small = {"max.message.bytes": "50000"}
    specs = [config.corrected_topic, config.held_topic, config.dlq_topic]
    assert config.bootstrap_servers
    for topic in specs:  # worker_config created them already: lower their limit
        _set_topic_config(config, topic, small)
    wide = charge(event_id="W1", charge_id="W1", modifiers=["GP"] * 30_000)  # ~90 KB
    after = charge(event_id="A1", charge_id="A1")
    with running_worker(config) as worker:
        send(config, [wide, after])
        wait_until(worker.caught_up, 120, message="not caught up")
        assert worker.restarts == 0
    (letter,) = [
        CODEC.decode_dead_letter(r.value)
        for r in read_to_end(config.bootstrap_servers, [config.dlq_topic])
    ]
    assert letter.error_kind == ErrorKind.TOO_LARGE and letter.value is None
    assert letter.value_length == len(CODEC.encode_event(wide))


def _set_topic_config(config: WorkerConfig, topic: str, settings: dict[str, str]) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    from worker.kafka import clients

    admin = clients.admin(config, 30)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=settings)])
    finally:
        admin.close()
