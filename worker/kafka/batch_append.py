"""One record onto the producer's open batch of its partition, past the accumulator's layers.

kafka-python's `RecordAccumulator.append` runs, per record, an append counter under a lock,
the partition's deque lock, `ProducerBatch.try_append`, `MemoryRecordsBuilder.append` and
`DefaultRecordBatchBuilder.append`, each with its own checks: about 6 µs of the 21-26 µs
FastSend spent per record (micro-benchmark, 60k records of 400 B with a header). `append`
does what those layers do to an open batch, under the same partition lock the sender thread
drains with, in one function the compiled build turns into C (setup.py):
- the record in the v2 wire format, appended to the batch builder's buffer, with the
  builder's counters (records, last offset delta, max timestamp) as its own append keeps them;
- the batch's next offset, largest record and last append time;
- in place of kafka-python's `FutureRecordMetadata`, a `Slot`: the record's errback, if any,
  and its index in the batch (see below).
It appends only to a batch that exists, is open and has a first record: anything else (a new
batch, one past batch.size, a batch being sent) returns False and the caller uses the
accumulator's own append.

Why slots, not futures: a `FutureRecordMetadata` costs a lock, two lists and a callback on the
batch's future per record, and the sender thread resolves each one (a RecordMetadata and its
callbacks) when the batch is acknowledged: about 4 µs of GIL time per record, 9% of the
worker's main thread measured, for results the worker never reads. It wants one thing of a
record: when the broker refuses it, the input record it came from (its errback). So a batch
carries one `Watch` on its produce future, which calls the errback of each refused slot with
the error kafka-python would have failed that record's future with (the batch's
`record_exceptions_fn` at the record's index). Kafka-python reads `_record_futures` in one
place besides, the split of a batch the broker refused as too large: it calls `rebind` on
each entry, in record order, with the record's new batch future and index; a slot then
watches that future itself. Every directly appended record gets a slot (errback or not), so
the entries stay in record order. `check` proves, once per producer, that a record appended
here gives the bytes kafka-python's own append gives; if not, or if an attribute moved in an
upgrade, FastSend does not use it (speed lost, not correctness).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition

Headers = list[tuple[str, bytes]]
Errback = Callable[[BaseException], None]
# What a batch's produce future is resolved with: (base offset, log append time, the error of
# the record at an index, or None when the batch was written).
Outcome = tuple[int, int, Callable[[int], BaseException] | None]


class Slot:
    """A directly appended record's entry in its batch's `_record_futures`."""

    def __init__(self, index: int, errback: Errback | None) -> None:
        self.index = index
        self.errback = errback

    def refused(self, error: BaseException) -> None:
        errback, self.errback = self.errback, None  # once, whoever reports it
        if errback is not None:
            errback(error)

    def settled(self, outcome: Outcome) -> None:
        errors = outcome[2]
        if errors is not None:
            self.refused(errors(self.index))

    def rebind(self, produce_future: Any, index: int) -> None:
        """Kafka-python split the batch: the record is `index` of a new batch."""
        self.index = index
        produce_future.add_callback(self.settled)
        produce_future.add_errback(self.refused)


class Watch:
    """On a batch's produce future: the refusals of the slots the batch holds."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries  # the batch's _record_futures: its first record's future, slots

    def settled(self, outcome: Outcome) -> None:
        errors = outcome[2]
        if errors is not None:
            for entry in self.entries:
                if isinstance(entry, Slot):
                    entry.refused(errors(entry.index))

    def refused(self, error: BaseException) -> None:
        for entry in self.entries:
            if isinstance(entry, Slot):
                entry.refused(error)


def _varint(value: int, out: bytearray) -> None:
    """Kafka's zigzag varint, as kafka.record.util.encode_varint writes it."""
    value = (value << 1) ^ (value >> 63)
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _varint_size(value: int) -> int:
    value = (value << 1) ^ (value >> 63)
    size = 1
    while value > 0x7F:
        size += 1
        value >>= 7
    return size


def _bytes_field(data: bytes | None, out: bytearray) -> None:
    if data is None:
        out.append(1)  # varint -1: null
    else:
        _varint(len(data), out)
        out += data


def append(
    accumulator: Any,
    tp: TopicPartition,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    timestamp_ms: int | None,
    errback: Errback | None = None,
) -> bool:
    """Appended (`errback` called if the broker refuses it), or False when the accumulator's
    own append must take it."""
    queued = accumulator._batches.get(tp)
    if not queued:
        return False
    with accumulator._tp_lock(tp):
        if not queued:  # drained meanwhile
            return False
        batch = queued[-1]
        records = batch.records
        if records._closed:  # being sent, or expired (closing drops its builder)
            return False
        builder = records._builder
        first: int | None = builder._first_timestamp
        if first is None:
            return False
        timestamp: int = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        offset: int = records._next_offset
        record = bytearray(b"\x00")  # attributes
        _varint(timestamp - first, record)
        _varint(offset, record)
        _bytes_field(key, record)
        _bytes_field(value, record)
        _varint(len(headers), record)
        if headers:
            for header_key, header_value in headers:
                name = header_key.encode("utf-8")
                _varint(len(name), record)
                record += name
                _bytes_field(header_value, record)
        length = len(record)
        size = length + _varint_size(length)
        buffer: bytearray = builder._buffer
        if size + len(buffer) > builder._batch_size:
            return False  # full: the accumulator starts the next batch
        if builder._max_timestamp < timestamp:
            builder._max_timestamp = timestamp
        builder._num_records += 1
        builder._last_offset = offset
        _varint(length, buffer)
        buffer += record
        records._next_offset = offset + 1
        if size > batch.max_record_size:
            batch.max_record_size = size
        batch.last_append = time.monotonic()
        entries: list[Any] = batch._record_futures
        if not entries or not isinstance(entries[-1], Slot):  # its first slot: watch the batch
            watch = Watch(entries)
            batch.produce_future.add_callback(watch.settled)
            batch.produce_future.add_errback(watch.refused)
        entries.append(Slot(offset, errback))
        return True


class OneBatch:
    """Just what `append` reads of a RecordAccumulator, around one batch of one partition
    (the check's probe; no other thread touches it, so its lock is a no-op)."""

    def __init__(self, tp: TopicPartition, batch: Any) -> None:
        self._batches = {tp: [batch]}

    def _tp_lock(self, tp: TopicPartition) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


_CHECKED: dict[int, bool] = {}  # by batch.size: kafka-python does not change in a process


def check(batch_size: int) -> bool:
    """Does `append` write what kafka-python's own append writes, on this kafka-python?
    Worked out once per batch.size (every checkpoint's outputs ask again)."""
    known = _CHECKED.get(batch_size)
    if known is None:
        known = _CHECKED[batch_size] = _check(batch_size)
    return known


def _check(batch_size: int) -> bool:
    tp = TopicPartition("probe", 0)
    samples: list[tuple[bytes | None, bytes | None, Headers, int]] = [
        (b"k", b"first", [], 1_700_000_000_000),
        (b"key", b"v" * 300, [("offsets", b"\x01\x02"), ("e", b"")], 1_700_000_000_123),
        (None, b"no key", [], 1_700_000_000_050),
        (b"tombstone", None, [("h", b"x" * 200)], 1_700_000_099_999),
    ]
    try:
        theirs = MemoryRecordsBuilder(2, 0, batch_size)
        ours = ProducerBatch(tp, MemoryRecordsBuilder(2, 0, batch_size))
        probe = OneBatch(tp, ours)
        for number, (key, value, headers, timestamp) in enumerate(samples):
            theirs.append(timestamp, key, value, headers)
            if number == 0:  # a first record always goes through kafka-python's own append
                ours.try_append(timestamp, key, value, headers)
            elif not append(probe, tp, key, value, headers, timestamp):
                return False
        for built in (theirs, ours.records):
            built.set_producer_state(1000, 1, 0, True)
            built.close()
        return bytes(theirs.buffer()) == bytes(ours.records.buffer()) and (
            ours.records.next_offset() == len(samples) == len(ours._record_futures)
        )
    except Exception:  # an attribute gone or renamed: kafka-python changed underneath
        return False
