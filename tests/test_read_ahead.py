"""`read_ahead`: a reader's batches drawn by a thread of their own, in order, and stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from worker.kafka.reading import read_ahead


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


def _endless(closed_in: list[str]) -> Iterator[int]:
    try:
        n = 0
        while True:  # only a close ends it
            yield n
            n += 1
    finally:
        closed_in.append(threading.current_thread().name)


def test_items_arrive_in_order_then_an_error_after_them() -> None:
    drawn_by: set[str] = set()

    def items() -> Iterator[int]:
        for n in range(50):
            drawn_by.add(threading.current_thread().name)
            yield n
        raise TimeoutError("reading t[0] made no progress")

    got: list[int] = []
    with pytest.raises(TimeoutError, match="no progress"), read_ahead(items(), 3) as ahead:
        got.extend(ahead)
    assert got == list(range(50))
    assert drawn_by == {"read-ahead"}
    assert not _threads()


def test_leaving_early_stops_the_thread_and_closes_the_items_there() -> None:
    closed_in: list[str] = []
    with read_ahead(_endless(closed_in), 2) as ahead:
        assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert closed_in == ["read-ahead"]
    assert not _threads()


def test_an_error_in_the_caller_stops_the_thread_before_it_propagates() -> None:
    closed_in: list[str] = []
    alive_when_raised: list[bool] = []
    with pytest.raises(RuntimeError, match="deciding"):
        try:
            with read_ahead(_endless(closed_in), 2) as ahead:
                for n in ahead:
                    if n == 3:
                        raise RuntimeError("deciding failed")
        except RuntimeError:
            alive_when_raised.append(bool(_threads()))  # where the consumer would be closed
            raise
    assert alive_when_raised == [False]
    assert closed_in == ["read-ahead"]
