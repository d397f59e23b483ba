"""Reading partitions from a start offset to an end: the one reader of restore, replay and the
decision-table readers.

The end of a partition is, unless given, the first highwater a fetch response shows (not
ListOffsets LATEST, which the embedded Tansu broker answers wrongly), frozen there so a topic
still being written (a live worker's outputs) is read to a point rather than chased.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from worker.config import WorkerConfig
from worker.kafka import clients
from worker.kafka.records import Record

Batch = tuple[TopicPartition, list[Record]]
T = TypeVar("T")


def read_ranges(
    consumer: KafkaConsumer,
    starts: Mapping[TopicPartition, int | None],
    ends: Mapping[TopicPartition, int] | None = None,
    *,
    stall_timeout_s: float = 60.0,
    max_records: int = 10_000,
    heartbeat: Callable[[], None] | None = None,
) -> Iterator[Batch]:
    """Records of each partition from its start (None: the log start) to its end, exclusive.

    Yields (partition, records) in offset order per partition. `stall_timeout_s` bounds a
    stall (no record and no partition finished), not the whole read, so long logs work;
    `heartbeat` runs after every poll (a liveness beat during a long restore).
    """
    tps = list(starts)
    if not tps:
        return
    consumer.assign(tps)
    for tp, start in starts.items():
        if start is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
    known = dict(ends or {})
    pending = {tp for tp in tps if tp not in known or _start(starts[tp]) < known[tp]}
    last_progress = time.monotonic()
    while pending:
        progressed = False
        for tp, records in consumer.poll(timeout_ms=200, max_records=max_records).items():
            end = known.get(tp)
            if end is not None and records[-1].offset >= end:
                records = [r for r in records if r.offset < end]
            if records:
                progressed = True
                yield tp, records
        for tp in list(pending):
            if tp not in known and (highwater := consumer.highwater(tp)) is not None:
                known[tp] = highwater
            # Control records and aborted data are skipped by the client: follow its position.
            if tp in known and consumer.position(tp) >= known[tp]:
                pending.discard(tp)
                consumer.pause(tp)
                progressed = True
        if heartbeat is not None:
            heartbeat()
        if progressed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout_s:
            stuck = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in pending))
            raise TimeoutError(f"reading {stuck} made no progress for {stall_timeout_s:.0f} s")
    consumer.assign([])


def _start(start: int | None) -> int:
    return 0 if start is None else start


def first_highwaters(
    consumer: KafkaConsumer, starts: Mapping[TopicPartition, int], timeout_s: float
) -> dict[TopicPartition, int]:
    """The highwater of each partition as the first fetch response (from `starts`) shows it."""
    tps = list(starts)
    consumer.assign(tps)
    for tp, start in starts.items():
        consumer.seek(tp, start)
    deadline = time.monotonic() + timeout_s
    found: dict[TopicPartition, int] = {}
    while len(found) < len(tps):
        consumer.poll(timeout_ms=200, max_records=1)
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                found[tp] = highwater
        if time.monotonic() > deadline:
            missing = sorted(tp.partition for tp in tps if tp not in found)
            raise TimeoutError(f"no fetch response for partitions {missing} in {timeout_s} s")
    consumer.assign([])
    return found


def cluster(config: WorkerConfig | str) -> WorkerConfig:
    """A configuration, or the bootstrap servers of a plaintext cluster."""
    return config if isinstance(config, WorkerConfig) else WorkerConfig(bootstrap_servers=config)


def read_to_end(
    config: WorkerConfig | str,
    topics: list[str],
    *,
    isolation_level: str = "read_committed",
    timeout_s: float = 60.0,
) -> Iterator[Record]:
    """Every record of `topics` from the beginning to the end they had when reading began."""
    consumer = clients.reader(cluster(config), "reader", isolation_level=isolation_level)
    try:
        starts: dict[TopicPartition, int | None] = {
            TopicPartition(topic, p): None
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        }
        for _, records in read_ranges(consumer, starts, stall_timeout_s=timeout_s):
            yield from records
    finally:
        consumer.close(autocommit=False)


def follow(
    config: WorkerConfig,
    topics: list[str],
    keep_going: Callable[[], bool],
    *,
    poll_ms: int = 200,
) -> Iterator[Record]:
    """Every record of `topics` from the beginning, then each new one as it arrives, until
    `keep_going()` is false (checked after every poll, so within `poll_ms`)."""
    consumer = clients.reader(config, "follow")
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while keep_going():
            for records in consumer.poll(timeout_ms=poll_ms).values():
                yield from records
    finally:
        consumer.close(autocommit=False)


@contextlib.contextmanager
def read_ahead(items: Iterator[T], depth: int) -> Iterator[Iterator[T]]:
    """`items`, drawn by a thread of their own up to `depth` ahead of the caller:

        with read_ahead(batches, 4) as ahead:
            for batch in ahead: ...

    For a reader that alternates between waiting on fetches and deciding: the next fetch is
    in flight while the last batch is decided (kafka-python sends a partition's next fetch
    only once its buffered records are taken). Everything `items` touches (a consumer) must
    be used by nothing else inside the block; leaving it, by an exception too, stops and joins
    the thread, so the consumer may be closed right after. An exception in `items` is raised
    in the caller's thread, after the items before it.
    """
    slots: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def draw() -> None:
        try:
            for item in items:
                slots.put((True, item))
                if stop.is_set():
                    break
            else:
                slots.put((False, None))
        except BaseException as error:  # handed to the caller, raised in its thread
            slots.put((False, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # in this thread: a generator's cleanup may use the consumer

    def taken() -> Iterator[T]:
        while True:
            more, item = slots.get()
            if not more:
                if isinstance(item, BaseException):
                    raise item
                return
            yield item  # type: ignore[misc]  # items put with more=True are T

    thread = threading.Thread(target=draw, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield taken()
    finally:
        stop.set()
        while thread.is_alive():  # free the slot a blocked put waits for; it then sees stop
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        thread.join()
