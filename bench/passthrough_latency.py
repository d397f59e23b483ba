"""The latency floor: how long kafka-python's own transactional copy takes to make a record
visible to a read_committed reader, at a paced rate, on the same broker and machine.

The copy (`bench.passthrough.run_passthrough`: consume -> produce, one transaction per 100 ms)
keeps each record's CreateTime, and a read_committed tail in a process of its own notes when
each copy arrived. No worker can make a decision visible sooner than this copies a record, so
`bench.stream_throughput` prints it beside the worker's latency, at the worker's rate.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

from bench.common import committed_tail
from bench.passthrough import run_passthrough
from worker.kafka.admin import TopicSpec, create_topics


def _tail(bootstrap_servers: str, topic: str, ready: Any, done: Any, out: Any) -> None:
    """In its own process: ms from each copy's CreateTime to its arrival here, put on `out`
    once `done` is set and the topic has been quiet for 2 s."""
    delays: list[float] = []
    try:  # a new topic: everything on it is the copy's
        for now_ms, records in committed_tail(bootstrap_servers, [topic], {}, ready, done):
            delays.extend(now_ms - r.timestamp for r in records)
    finally:
        out.put(delays)


def passthrough_latency(
    bootstrap_servers: str,
    name: str,
    partitions: int,
    count: int,
    load: Callable[[str], float],
) -> tuple[float, list[float]]:
    """(events/s achieved, visible delays in ms) of `count` records that `load(topic)` sends
    (paced, returning its achieved rate) through the passthrough."""
    source, copy = f"{name}.floor.in", f"{name}.floor.out"
    create_topics(bootstrap_servers, [TopicSpec(source, partitions), TopicSpec(copy, partitions)])
    spawn = multiprocessing.get_context("spawn")
    ready, done, out = spawn.Event(), spawn.Event(), spawn.Queue()
    tail = spawn.Process(
        target=_tail, args=(bootstrap_servers, copy, ready, done, out), daemon=True
    )
    tail.start()
    joined = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_passthrough(
                bootstrap_servers,
                source,
                copy,
                count,
                group_id=f"{name}.floor",
                transactional_id=f"{name}.floor.tx",
                on_joined=joined.set,
            )
        except BaseException as error:  # reported by the caller's thread
            failed.append(error)
            joined.set()

    copier = threading.Thread(target=run, name="floor-copy", daemon=True)
    copier.start()
    try:
        if not ready.wait(60) or not joined.wait(120):
            raise TimeoutError("the floor's tail or copy did not start")
        achieved = load(source)
        copier.join(timeout=300)
        if failed:
            raise failed[0]
        done.set()
        delays: list[float] = out.get(timeout=120)
    finally:
        done.set()
        tail.join(timeout=30)
    return achieved, delays
