"""Where decisions, dead letters and re-keyed events go: one interface, three outputs.

- `TopicOutputs`: Kafka topics through a producer: the live worker's (inside its transaction)
  or replay's shadow topics (a bulk producer; failed sends are collected, since `flush()`
  raises for none of them);
- `FileOutputs`: one full ChargeDecision JSON per line (replay to a file);
- `NullOutputs`: nothing (replay's warmup folds state without emitting).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import kafka.errors as kafka_errors
from kafka import KafkaProducer

from rules.charge import Decision
from rules.model import DeadLetter, ErrorKind
from rules.visit import Ledger
from worker.config import WorkerConfig
from worker.errors import RecordFailed
from worker.kafka.batch_append import Errback
from worker.kafka.fast_send import FastSend
from worker.kafka.partitioner import key_partition
from worker.kafka.records import Record, kafka_time
from worker.observability.logs import describe_error
from worker.serde.codec import Codec, decision_json
from worker.serde.framing import DEAD_LETTER, DECISION

Where = tuple[str, int, int]  # (topic, partition, offset) of an input record
# A send the broker refused: the input record it came from, whether it was that record's dead
# letter, and the error.
Refusal = tuple[Where, bool, BaseException]

# A DLQ record carries at most this much of the input's value (and of its key), so a dead
# letter for a 5 MB input still fits the broker's default 1 MB limit; when cut, value_length
# and value_sha256 say what the whole was.
DLQ_VALUE_BYTES = 256 * 1024
DLQ_KEY_BYTES = 4 * 1024

# Errors of one record, not of the broker or the producer: the record is dead-lettered.
_TOO_LARGE = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError)
_UNPRODUCIBLE = (
    kafka_errors.InvalidRecordError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.CorruptRecordError,
)


def refusal_kind(error: BaseException) -> ErrorKind | None:
    """The dead-letter kind of a produce error that is the record's own fault, else None."""
    if isinstance(error, _TOO_LARGE):
        return ErrorKind.TOO_LARGE
    if isinstance(error, _UNPRODUCIBLE):
        return ErrorKind.UNPRODUCIBLE
    return None


class Outputs(Protocol):
    origin: Where | None  # the input record the next output answers for

    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        """`charge_body`: the billed charge's Avro body when it is at hand (spliced in)."""

    def dead_letter(
        self, record: Record, kind: ErrorKind, message: str, *, bare: bool = False
    ) -> None: ...

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        """Send `record` to its patient's partition `home` of the repartition topic."""


def dead_letter_for(
    record: Record, kind: ErrorKind, message: str, *, bare: bool = False
) -> DeadLetter:
    """The DLQ record for a consumed Kafka record that cannot be decided.

    A value over DLQ_VALUE_BYTES is cut to it (`bare`: left out), with its length and digest."""
    timestamp = kafka_time(record.timestamp) if record.timestamp else None
    value, length, digest = record.value, None, None
    if value is not None and (bare or len(value) > DLQ_VALUE_BYTES):
        length, digest = len(value), hashlib.sha256(value).hexdigest()
        value = None if bare else value[:DLQ_VALUE_BYTES]
    return DeadLetter(
        key=dead_letter_key(record),
        value=value,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=timestamp,
        error_kind=kind,
        error_message=message,
        value_length=length,
        value_sha256=digest,
    )


def dead_letter_key(record: Record) -> bytes | None:
    key = record.key
    return key if key is None or len(key) <= DLQ_KEY_BYTES else key[:DLQ_KEY_BYTES]


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
    """Outputs sent through a producer.

    With `refused` (the live worker), every send remembers the input record it came from
    (`origin`, set before each record is processed): a send the broker refuses later, or one
    too large to send at all, is attributed to that record so it can be dead-lettered."""

    def __init__(
        self,
        producer: KafkaProducer,
        topics: OutputTopics,
        codec: Codec,
        *,
        collect: bool,
        refused: list[Refusal] | None = None,
        partitions: dict[str, int] | None = None,
    ) -> None:
        self.producer = producer
        self.fast = FastSend(producer)
        self.topics = topics
        self.codec = codec
        # Partition count per output topic (shared across outputs over new producers).
        self._partitions: dict[str, int] = partitions if partitions is not None else {}
        # Outside a transaction nothing else notices a failed send: collect each failure.
        self.failed: list[BaseException] | None = [] if collect else None
        self.refused = refused
        self.origin: Where | None = None

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        dead_letter: bool = False,
        **options: Any,
    ) -> None:
        origin = self.origin
        errback = self._errback(origin, dead_letter)
        try:
            if "partition" in options:
                self.fast.send(topic, key=key, value=value, errback=errback, **options)
            else:
                future = self.producer.send(topic, key=key, value=value, **options)
                if errback is not None:
                    future.add_errback(errback)
        except _TOO_LARGE as error:
            if origin is None:
                raise
            cause = f"its outputs are too large: {describe_error(error)}"
            raise RecordFailed(origin, cause, ErrorKind.TOO_LARGE, bare=dead_letter) from error

    def _errback(self, origin: Where | None, dead_letter: bool) -> Errback | None:
        """What to do if the broker refuses a record sent now: outside a transaction nothing
        else notices, so the error is collected; the live worker notes the input it came from."""
        failed, refused = self.failed, self.refused
        if refused is None or origin is None:
            return None if failed is None else failed.append

        def note(error: BaseException) -> None:
            refused.append((origin, dead_letter, error))
            if failed is not None:
                failed.append(error)

        return note

    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        topic, key = self.topics.for_ledger(ledger), decision.charge_id.encode()
        value = self.codec.encode_decision(decision, charge_body, topic)
        # The default partitioner's placement, computed here: kafka-python's pure-Python
        # murmur2 is a third of the cost of a send.
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(self.producer.partitions_for(topic))
        self._send(topic, key, value, partition=key_partition(key, count))

    def dead_letter(
        self, record: Record, kind: ErrorKind, message: str, *, bare: bool = False
    ) -> None:
        dlq = self.topics.dlq
        letter = dead_letter_for(record, kind, message, bare=bare)
        value = self.codec.encode_dead_letter(letter, dlq)
        self._send(dlq, letter.key, value, dead_letter=True)

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
        self.origin: Where | None = None
        self._stream: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self._write = self._stream.write

    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        self._write(decision_json(decision))
        self._write("\n")

    def dead_letter(
        self, record: Record, kind: ErrorKind, message: str, *, bare: bool = False
    ) -> None:
        return None

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        raise AssertionError("file outputs re-key nothing: replay decides re-keyed events")

    def close(self) -> None:
        self._stream.close()


class NullOutputs:
    origin: Where | None = None

    def decision(self, ledger: Ledger, decision: Decision, charge_body: bytes | None) -> None:
        return None

    def dead_letter(
        self, record: Record, kind: ErrorKind, message: str, *, bare: bool = False
    ) -> None:
        return None

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        return None
