"""What the worker reads of a consumed Kafka record."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Record(Protocol):
    """The fields of kafka-python's ConsumerRecord the processing path uses."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes]] | None: ...


def kafka_time(millis: int | None) -> dt.datetime | None:
    """A Kafka record timestamp as a UTC datetime; None when absent or outside the calendar."""
    if millis is None or millis < 0:
        return None
    try:
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):  # past year 9999: a broken producer clock
        return None


def record_time(record: Record) -> dt.datetime | None:
    """A consumed record's timestamp (None when the broker gives none)."""
    return kafka_time(record.timestamp)
