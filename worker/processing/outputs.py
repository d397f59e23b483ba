"""Where decisions, dead letters and re-keyed events go: one interface, three outputs.

- `TopicOutputs`: Kafka topics through a producer: the live worker's (inside its transaction)
  or replay's shadow topics (a bulk producer; failed sends are collected, since `flush()`
  raises for none of them);
- `FileOutputs`: one full ChargeDecision JSON per line (replay to a file);
- `NullOutputs`: nothing (replay's warmup folds state without emitting).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from kafka import KafkaProducer

from rules.charge import Decision
from rules.model import DeadLetter, ErrorKind
from rules.visit import Ledger
from worker.config import WorkerConfig
from worker.kafka.fast_send import FastSend
from worker.kafka.partitioner import key_partition
from worker.kafka.records import Record, kafka_time
from worker.serde.codec import Codec, decision_json
from worker.serde.framing import DEAD_LETTER, DECISION


class Outputs(Protocol):
    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        """`charge_body`: the billed charge's Avro body when it is at hand (spliced in)."""

    def dead_letter(self, record: Record, kind: ErrorKind, message: str) -> None: ...

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        """Send `record` to its patient's partition `home` of the repartition topic."""


def dead_letter_for(record: Record, kind: ErrorKind, message: str) -> DeadLetter:
    """The DLQ record for a consumed Kafka record that cannot be decided."""
    timestamp = kafka_time(record.timestamp) if record.timestamp else None
    return DeadLetter(
        key=record.key,
        value=record.value,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=timestamp,
        error_kind=kind,
        error_message=message,
    )


@dataclass(frozen=True)
class OutputTopics:
    corrected: str
    held: str
    dlq: str
    repartition: str | None = None  # None: events are never re-keyed through Kafka here

    @classmethod
    def live(cls, config: WorkerConfig) -> OutputTopics:
        return cls(
            config.corrected_topic, config.held_topic, config.dlq_topic, config.repartition_topic
        )

    def for_ledger(self, ledger: Ledger) -> str:
        return self.held if ledger is Ledger.REVIEW else self.corrected

    def schemas(self) -> dict[str, str]:
        """Each topic written with a schema of ours, and that record (a registry's subjects);
        the repartition topic carries the input's bytes, with their ids."""
        return {self.corrected: DECISION, self.held: DECISION, self.dlq: DEAD_LETTER}


class TopicOutputs:
    def __init__(
        self, producer: KafkaProducer, topics: OutputTopics, codec: Codec, *, collect: bool
    ) -> None:
        self.producer = producer
        self.fast = FastSend(producer)
        self.topics = topics
        self.codec = codec
        self._partitions: dict[str, int] = {}  # partition count per output topic
        # Outside a transaction nothing else notices a failed send: collect each failure.
        self.failed: list[BaseException] | None = [] if collect else None

    def _send(self, topic: str, key: bytes | None, value: bytes, **options: Any) -> None:
        if "partition" in options:
            future = self.fast.send(topic, key=key, value=value, **options)
        else:
            future = self.producer.send(topic, key=key, value=value, **options)
        if self.failed is not None:
            future.add_errback(self.failed.append)

    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        topic, key = self.topics.for_ledger(ledger), decision.charge_id.encode()
        value = self.codec.encode_decision(decision, charge_body, topic)
        # The default partitioner's placement, computed here: kafka-python's pure-Python
        # murmur2 is a third of the cost of a send.
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(self.producer.partitions_for(topic))
        self._send(topic, key, value, partition=key_partition(key, count))

    def dead_letter(self, record: Record, kind: ErrorKind, message: str) -> None:
        dlq = self.topics.dlq
        letter = self.codec.encode_dead_letter(dead_letter_for(record, kind, message), dlq)
        self._send(dlq, record.key, letter)

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        assert self.topics.repartition is not None, "these outputs re-key nothing"
        # The re-keyed copy keeps the record's bytes and timestamp, so it means the same
        # wherever it is read.
        timestamp = record.timestamp if record.timestamp >= 0 else None
        assert record.value is not None
        self._send(
            self.topics.repartition, patient, record.value, partition=home, timestamp_ms=timestamp
        )


class FileOutputs:
    """One full ChargeDecision JSON per line, in processing order; the DLQ is a count only."""

    def __init__(self, path: Path) -> None:
        self._stream: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self._write = self._stream.write

    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        self._write(decision_json(decision))
        self._write("\n")

    def dead_letter(self, record: Record, kind: ErrorKind, message: str) -> None:
        return None

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        raise AssertionError("file outputs re-key nothing: replay decides re-keyed events")

    def close(self) -> None:
        self._stream.close()


class NullOutputs:
    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        return None

    def dead_letter(self, record: Record, kind: ErrorKind, message: str) -> None:
        return None

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        return None
