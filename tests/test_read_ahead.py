"""`read_ahead`: a reader's batches drawn by a thread of their own, in order, and stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from worker.kafka.reading import read_ahead


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "read-ahead"}


def test_items_arrive_in_order_then_an_error_after_them() -> None:
    drawn_by: set[str] = set()

    def items() -> Iterator[int]:
        for n in range(50):
            drawn_by.add(threading.current_thread().name)
            yield n
        raise TimeoutError("reading t[0] made no progress")

    got: list[int] = []
    with pytest.raises(TimeoutError, match="no progress"):
        for n in read_ahead(items(), depth=3):
            got.append(n)
    assert got == list(range(50))
    assert drawn_by == {"read-ahead"}
    assert not _threads()


def test_closing_early_stops_the_thread_and_closes_the_items_there() -> None:
    closed_in: list[str] = []

    def items() -> Iterator[int]:
        try:
            n = 0
            while True:  # endless: only a close ends it
                yield n
                n += 1
        finally:
            closed_in.append(threading.current_thread().name)

    ahead = read_ahead(items(), depth=2)
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()
    assert closed_in == ["read-ahead"]
    assert not _threads()
