"""worker.kafka.batch_append writes what kafka-python's own append writes, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import InvalidRecordError
from kafka.producer.producer_batch import ProducerBatch
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

from worker.kafka import batch_append

TP = TopicPartition("t", 3)
BATCH_SIZE = 16 * 1024

fields = st.one_of(st.none(), st.binary(max_size=600))
headers = st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=40)), max_size=3).map(
    lambda hs: [(k, v) for k, v in hs]
)
records = st.lists(
    st.tuples(fields, fields, headers, st.integers(1_600_000_000_000, 1_800_000_000_000)),
    min_size=1,
    max_size=40,
)


def _closed(builder: MemoryRecordsBuilder) -> bytes:
    builder.set_producer_state(4242, 3, 17, True)
    builder.close()
    return bytes(builder.buffer())


@settings(max_examples=150, deadline=None)
@given(records)
def test_records_appended_directly_are_the_bytes_kafka_python_writes(
    sample: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]],
) -> None:
    theirs = MemoryRecordsBuilder(2, 0, BATCH_SIZE)
    batch = ProducerBatch(TP, MemoryRecordsBuilder(2, 0, BATCH_SIZE))
    accumulator = batch_append.OneBatch(TP, batch)
    appended = 0
    for number, (key, value, hs, timestamp) in enumerate(sample):
        if theirs.append(timestamp, key, value, hs) is None:
            # Past batch.size: the direct path refuses it too, leaving it to the accumulator.
            assert not batch_append.append(accumulator, TP, key, value, hs, timestamp)
            break
        if number == 0:  # a batch's first record is always the accumulator's
            assert not batch_append.append(accumulator, TP, key, value, hs, timestamp)
            assert batch.try_append(timestamp, key, value, hs) is not None
        else:
            assert batch_append.append(accumulator, TP, key, value, hs, timestamp)
        appended += 1
    assert _closed(batch.records) == _closed(theirs)
    assert len(batch._record_futures) == appended == batch.records.next_offset()
    read = [r for b in MemoryRecords(bytes(batch.records.buffer())) for r in b]
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in read] == [
        (k, v, hs, t) for k, v, hs, t in sample[:appended]
    ]


def test_a_closed_or_missing_batch_is_left_to_the_accumulator() -> None:
    batch = ProducerBatch(TP, MemoryRecordsBuilder(2, 0, BATCH_SIZE))
    other = TopicPartition("t", 4)
    accumulator = batch_append.OneBatch(other, batch)
    assert not batch_append.append(accumulator, TP, b"k", b"v", [], 1)  # no batch for TP
    accumulator = batch_append.OneBatch(TP, batch)
    assert not batch_append.append(accumulator, TP, b"k", b"v", [], 1)  # an empty batch
    batch.try_append(1, b"k", b"v", [])
    assert batch_append.append(accumulator, TP, b"k", b"v", [], 2)
    batch.records.close()  # the sender drained it
    assert not batch_append.append(accumulator, TP, b"k", b"v", [], 3)


def test_the_check_holds_here_and_fails_when_the_encoding_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert batch_append.check(256 * 1024)
    monkeypatch.setattr(batch_append, "_CHECKED", {})  # worked out again, not remembered
    monkeypatch.setattr(batch_append, "_varint", lambda value, out: out.append(0))
    assert not batch_append.check(256 * 1024)


def _filled(count: int) -> tuple[ProducerBatch, list[list[BaseException]]]:
    """A batch of `count` records (the first through kafka-python's own append, the rest
    appended directly), each with an errback noting what it is called with."""
    batch = ProducerBatch(TP, MemoryRecordsBuilder(2, 0, BATCH_SIZE))
    accumulator = batch_append.OneBatch(TP, batch)
    noted: list[list[BaseException]] = [[] for _ in range(count)]
    batch.try_append(1, b"k0", b"v", []).add_errback(noted[0].append)
    for index in range(1, count):
        key = f"k{index}".encode()
        assert batch_append.append(accumulator, TP, key, b"v", [], 1 + index, noted[index].append)
    return batch, noted


def test_each_refused_record_hears_its_own_error_once_and_a_written_batch_none() -> None:
    errors = [InvalidRecordError(f"record {index}") for index in range(5)]
    batch, noted = _filled(5)
    batch.complete_exceptionally(InvalidRecordError("the batch"), lambda index: errors[index])
    assert noted == [[error] for error in errors]
    batch.produce_future.failure(InvalidRecordError("again"))  # already settled: not again
    assert noted == [[error] for error in errors]

    written, quiet = _filled(5)
    written.complete(base_offset=100, log_append_time=-1)
    assert quiet == [[] for _ in range(5)]


def test_a_batch_split_by_kafka_python_reports_each_record_from_its_new_batch() -> None:
    """MESSAGE_TOO_LARGE: kafka-python splits a batch in two and rebinds each entry of
    `_record_futures` to its record's new batch and index."""
    batch, noted = _filled(6)
    batch.records.close()
    accumulator = RecordAccumulator(batch_size=BATCH_SIZE)
    accumulator.split_and_reenqueue(batch)
    halves = list(accumulator._batches[TP])
    assert [h.record_count for h in halves] == [3, 3]
    refused = {h.produce_future: InvalidRecordError(f"half {n}") for n, h in enumerate(halves)}
    for half in halves:
        half.records.close()
        error = refused[half.produce_future]
        half.complete_exceptionally(error, lambda _, error=error: error)
    assert (
        noted
        == [[refused[halves[0].produce_future]]] * 3 + [[refused[halves[1].produce_future]]] * 3
    )
