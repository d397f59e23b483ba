"""A cheaper `KafkaProducer.send` for the worker's checkpoints (kafka-python 3.0).

Profiled, kafka-python's `send` is the worker's largest single cost: per record it validates
headers, asks the cluster metadata, runs the pure-Python murmur2 partitioner, takes the
transaction manager's lock three times and logs at DEBUG with eagerly formatted arguments.
At a checkpoint the worker already knows each record's partition, that the topics exist and
that a transaction is open, so `FastSend` appends to the producer's own record accumulator
directly, tells the transaction manager about a partition once per transaction, and wakes the
sender thread as `send` does. What it skips is checked once per batch (metadata) or is caught
at commit (a failed transaction), which aborts the batch like any other failure.

It wakes the sender thread only when a record starts a new producer batch (the one before is
then ready to drain). `send` also wakes it on every record appended while a partition has more
than one batch queued, which is every record of a checkpoint's burst: a syscall each and the
sender thread contending for the GIL, 24 → 15 µs of main-thread CPU per record measured. A
batch left full is still sent when linger.ms expires or the transaction commits (a flush).

A record that fits the open batch of its partition goes onto it directly
(worker.kafka.batch_append), past the accumulator's per-record layers; the first record of a
batch, and every record when that module's check fails, goes through the accumulator.

It reaches into three private attributes of KafkaProducer (`_accumulator`, `_sender`,
`_transaction_manager`), pinned by the dependency (kafka-python >=3.0,<4); when any is missing
it falls back to `send`, so an upgrade degrades speed, not correctness.
"""

from __future__ import annotations

import time

from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

from worker.kafka import batch_append
from worker.kafka.batch_append import Errback

Headers = list[tuple[str, bytes]]


class FastSend:
    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._accumulator = getattr(producer, "_accumulator", None)
        self._sender = getattr(producer, "_sender", None)
        self._transactions = getattr(producer, "_transaction_manager", None)
        self._max_size = int(producer.config["max_request_size"])
        # Key, value and header bytes that fit for certain: kafka-python's estimate adds at
        # most 93 bytes to key and value (batch header, record overhead, two length varints),
        # 5 for the header count, and a header's UTF-8 name and value with two varints.
        self._sure_fit = self._max_size - 128
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._added: set[TopicPartition] = set()  # partitions known to the open transaction
        self._fast = self._accumulator is not None and self._sender is not None
        # Onto the open batch directly, where that writes what kafka-python would.
        self._direct = self._fast and batch_append.check(int(producer.config["batch_size"]))

    def begin(self) -> None:
        """A transaction begins: its partitions are announced again as they are used."""
        self._added.clear()

    def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        errback: Errback | None = None,
    ) -> None:
        """Like `KafkaProducer.send` with an explicit partition; `errback` is called with the
        error if the record is refused once sent (it runs in the sender thread, as a future's
        errback does). A record too large to send at all raises here, as `send` does."""
        if not self._fast:
            future = self.producer.send(
                topic,
                key=key,
                value=value,
                partition=partition,
                headers=headers,
                timestamp_ms=timestamp_ms,
            )
            if errback is not None:
                future.add_errback(errback)
            return
        size = (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            for name, data in headers:  # at most 4 bytes a character, 10 for two varints
                size += 4 * len(name) + (len(data) if data else 0) + 10
        if size > self._sure_fit:
            self._check_size(key, value, headers)
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        if self._transactions is not None and tp not in self._added:
            if self._transactions.is_transactional():
                self._transactions.maybe_add_partition_to_transaction(tp)
            self._added.add(tp)
        assert self._accumulator is not None and self._sender is not None
        if self._direct and batch_append.append(
            self._accumulator, tp, key, value, headers or [], timestamp_ms, errback
        ):
            return
        future, _, new_batch, _ = self._accumulator.append(
            tp, timestamp_ms, key, value, headers or [], now=time.monotonic()
        )
        if errback is not None:
            future.add_errback(errback)
        if new_batch:  # the batch before it is ready to drain (see the module's docstring)
            self._sender.wakeup()

    def _check_size(self, key: bytes | None, value: bytes | None, headers: Headers | None) -> None:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self._max_size:  # the error and message `send` gives
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the maximum "
                "request size you have configured with the max_request_size configuration"
            )
