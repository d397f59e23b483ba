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
- the record's own `FutureRecordMetadata` on the batch, so a refusal still names the record
  (its errback) and a batch split on MESSAGE_TOO_LARGE still rebinds it.
It appends only to a batch that exists, is open and has a first record: anything else (a new
batch, one past batch.size, a batch being sent) returns None and the caller uses the
accumulator's own append. `check` proves, once per producer, that a record appended
here gives the bytes kafka-python's own append gives; if not, or if an attribute moved in an
upgrade, FastSend does not use it (speed lost, not correctness).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from kafka.producer.future import FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition

Headers = list[tuple[str, bytes]]


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
) -> Any:
    """The record's future, or None when the accumulator's own append must take it."""
    queued = accumulator._batches.get(tp)
    if not queued:
        return None
    with accumulator._tp_lock(tp):
        if not queued:  # drained meanwhile
            return None
        batch = queued[-1]
        records = batch.records
        if records._closed:  # being sent, or expired (closing drops its builder)
            return None
        builder = records._builder
        first: int | None = builder._first_timestamp
        if first is None:
            return None
        timestamp: int = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        offset: int = records._next_offset
        record = bytearray(b"\x00")  # attributes
        _varint(timestamp - first, record)
        _varint(offset, record)
        _bytes_field(key, record)
        _bytes_field(value, record)
        _varint(len(headers), record)
        header_size = -1
        if headers:
            header_size = 0
            for header_key, header_value in headers:
                name = header_key.encode("utf-8")
                _varint(len(name), record)
                record += name
                _bytes_field(header_value, record)
                header_size += len(name) + len(header_value)
        length = len(record)
        size = length + _varint_size(length)
        buffer: bytearray = builder._buffer
        if size + len(buffer) > builder._batch_size:
            return None  # full: the accumulator starts the next batch
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
        future = FutureRecordMetadata(
            batch.produce_future,
            offset,
            timestamp,
            None,  # v2 records carry no per-record CRC
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            header_size,
        )
        batch._record_futures.append(future)
        return future


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
            elif append(probe, tp, key, value, headers, timestamp) is None:
                return False
        for built in (theirs, ours.records):
            built.set_producer_state(1000, 1, 0, True)
            built.close()
        return bytes(theirs.buffer()) == bytes(ours.records.buffer()) and (
            ours.records.next_offset() == len(samples) == len(ours._record_futures)
        )
    except Exception:  # an attribute gone or renamed: kafka-python changed underneath
        return False
