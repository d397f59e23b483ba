"""worker.kafka.fast_records reads a fetched batch's records as kafka-python does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from worker.kafka import fast_records

fields = st.one_of(st.none(), st.binary(max_size=600))
headers = st.lists(
    st.tuples(st.text(max_size=12), st.one_of(st.none(), st.binary(max_size=40))), max_size=3
).map(lambda hs: [(k, v) for k, v in hs])
records = st.lists(
    st.tuples(fields, fields, headers, st.integers(-5_000, 5_000_000)),
    min_size=1,
    max_size=40,
)


def _batch(sample: list[Any], compression: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 22,
    )
    for offset, (key, value, hs, delta) in enumerate(sample):
        builder.append(
            offset, timestamp=1_700_000_000_000 + delta, key=key, value=value, headers=hs
        )
    return bytes(builder.build())


def _ours(data: bytes) -> list[tuple[Any, ...]]:
    batch = DefaultRecordBatch(data)
    batch._maybe_uncompress()
    return [fast_records._fields(r) for r in fast_records.read_records(batch)]


@settings(max_examples=150, deadline=None)
@given(records, st.sampled_from([0, 1]))  # no compression, gzip
def test_records_read_at_once_are_the_ones_kafka_python_reads(
    sample: list[Any], compression: int
) -> None:
    data = _batch(sample, compression)
    theirs = fast_records._read_by_kafka_python(data)
    assert len(theirs) == len(sample)
    assert _ours(data) == theirs


def test_the_check_holds_for_the_installed_kafka_python_and_install_patches_iteration() -> None:
    assert fast_records.check()
    assert fast_records.install()
    data = _batch([(b"k", b"v", [("h", b"1")], 0), (None, None, [], 5)], 0)
    batch = DefaultRecordBatch(data)
    records = list(batch)  # the consumer's `for record in batch`
    assert [(r.offset, r.key, r.value, r.headers) for r in records] == [
        (0, b"k", b"v", [("h", b"1")]),
        (1, None, None, []),
    ]
    assert batch._next_record_index == 2  # the batch knows it was read to its end


@pytest.mark.parametrize("cut", [1, 7, 30])
def test_a_truncated_batch_is_a_corrupt_record_error_as_in_kafka_python(cut: int) -> None:
    data = _batch([(b"key", b"a value of some length", [("h", b"1")], 0)] * 3, 0)
    # The batch header keeps its length and count: the records' bytes are cut short.
    short = data[:-cut]
    with pytest.raises(CorruptRecordError):
        fast_records._read_by_kafka_python(short)
    fast_records.install()
    with pytest.raises(CorruptRecordError):
        list(DefaultRecordBatch(short))


def test_trailing_bytes_after_the_last_record_are_refused_as_kafka_python_does() -> None:
    data = _batch([(b"key", b"value", [], 0)], 0) + b"\x00\x00"
    with pytest.raises(CorruptRecordError):
        fast_records._read_by_kafka_python(data)
    with pytest.raises(CorruptRecordError, match="unconsumed bytes"):
        fast_records.read_records(DefaultRecordBatch(data))


def test_a_failed_check_leaves_kafka_python_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_records, "_installed", {})
    monkeypatch.setattr(fast_records, "check", lambda: False)
    monkeypatch.setattr(DefaultRecordBatch, "__iter__", DefaultRecordBatch.__iter__)
    before = DefaultRecordBatch.__dict__["__iter__"]
    assert not fast_records.install()
    assert DefaultRecordBatch.__dict__["__iter__"] is before
