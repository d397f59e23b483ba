"""State: memory per visit, changelog bytes per visit, and restore speed (binary vs 0.1 JSON).

1. A generated workload (`--visits` visits, about 2.85 events each) goes through the live
   processing path (as bench.hot_path), and the last changelog value of each visit is kept:
   what a compacted changelog holds.
   tracemalloc measures what deciding leaves in memory per visit (states, hot visits, caches).
2. In memory, one core: each visit restored into fresh partition states from its binary value,
   then from the same visit written as charge-capture 0.1's JSON: µs per visit and the ratio;
   tracemalloc measures what the restored states hold per visit. (This version reads 0.1's
   JSON with msgspec; 0.1 itself, with pydantic, took 134-148 µs per visit on the same
   values, measured with its own `PartitionState.restore` at commit 819e05d.)
3. Through the broker (KAFKA_BOOTSTRAP_SERVERS, else the embedded Tansu): the binary records
   are produced to a changelog topic with their offset headers, then read back and restored
   the way a worker restores an assigned partition (a reader consumer, the committed-offset
   filter, `PartitionState.restore`). The embedded broker holds `--visits` comfortably, not
   1M on this machine, so the 1M figure is extrapolated linearly from the measured rate (a
   restore is one pass over the records; nothing in it grows faster than their number).

    python -m bench.state_restore [--visits 100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
import tracemalloc
import uuid

import msgspec
from kafka.structs import TopicPartition

from bench.common import bench_broker
from bench.hot_path import PARTITIONS, _Encoding, _records
from rules.pack import load_packs
from rules.visit import Visit
from worker.config import WorkerConfig
from worker.kafka import clients
from worker.kafka.admin import TopicSpec, create_topics
from worker.kafka.reading import read_ranges
from worker.processing.batch import Batch
from worker.processing.collector import settle_collector
from worker.processing.pipeline import Processor
from worker.serde.codec import Codec
from worker.state.changelog import is_committed, offset_headers, visit_key_from_bytes
from worker.state.store import PartitionState, new_state

Values = dict[int, dict[bytes, bytes]]  # partition -> visit key -> last changelog value
INPUT = "charges.captured"


def _changelog(visits: int) -> tuple[Values, dict[int, PartitionState]]:
    """The compacted changelog of a generated workload, and the states that wrote it."""
    records = _records(math.ceil(visits * 2.85), 1, Codec())
    packs = load_packs()
    gc.collect()
    tracemalloc.start()  # what deciding leaves in memory: states, caches, hot visits
    before = tracemalloc.get_traced_memory()[0]
    states = {n: new_state(WorkerConfig(), n, PARTITIONS) for n in range(PARTITIONS)}
    processor = Processor(
        packs,
        Codec(),
        states,
        partitioner="murmur2",
        repartition_topic="r",
        rekey_in_process=False,
    )
    outputs = _Encoding(Codec())
    values: Values = {n: {} for n in range(PARTITIONS)}
    for start in range(0, len(records), 1000):
        batch = Batch()
        for record in records[start : start + 1000]:
            processor.process(record, PARTITIONS, batch)
        processor.emit(batch, outputs)
        for number, state in states.items():
            for write in state.take_writes():
                if write.key[:1] != b"\x00" and write.value is not None:
                    values[number][write.key] = write.value
    del batch, records
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    held = sum(len(s.visits) for s in states.values())
    print(f"memory while deciding (tracemalloc, {held} visits, {PARTITIONS} partitions with")
    print(f"  their hot visits and the processing caches): {used / held:,.0f} B per visit")
    return values, states


def _as_json_0_1(visit: Visit) -> bytes:
    """The visit as charge-capture 0.1 wrote it (its changelog value)."""
    charges = [msgspec.to_builtins(c) for c in visit.charges.values()]
    published = {
        cid: [
            p.version,
            p.status.value,
            p.ledger.value,
            p.fingerprint.to_bytes(8, "big", signed=True).hex() * 2,
        ]
        for cid, p in visit.published.items()
    }
    seen = sorted(c.event_id for c in visit.charges.values())
    return json.dumps({"charges": charges, "seen": seen, "published": published}).encode()


def _restore_all(values: Values) -> tuple[float, dict[int, PartitionState]]:
    states = {n: new_state(WorkerConfig(), n, PARTITIONS) for n in values}
    began = time.perf_counter()
    for number, records in values.items():
        state = states[number]
        for key, value in records.items():
            state.restore(key, value)
    return time.perf_counter() - began, states


def _in_memory(values: Values, writers: dict[int, PartitionState]) -> None:
    count = sum(len(v) for v in values.values())
    binary_s, _ = _restore_all(values)
    legacy: Values = {
        n: {k: _as_json_0_1(writers[n].visits[visit_key_from_bytes(k)]) for k in records}
        for n, records in values.items()
    }
    json_s, _ = _restore_all(legacy)
    binary_b = sum(len(v) for r in values.values() for v in r.values()) / count
    json_b = sum(len(v) for r in legacy.values() for v in r.values()) / count
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # Fresh copies, as a restore's values come fresh from its fetches: the state keeps them.
    fetched = {n: {k: bytes(bytearray(v)) for k, v in r.items()} for n, r in values.items()}
    _, states = _restore_all(fetched)
    del fetched
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    visits = sum(len(s.visits) for s in states.values())
    print(f"{count} visits (last changelog value of each), one core:")
    print(f"  {'':<26}{'bytes/visit':>12}{'restore µs/visit':>18}")
    print(f"  {'binary (format 2)':<26}{binary_b:>12.0f}{1e6 * binary_s / count:>18.1f}")
    print(f"  {'JSON (charge-capture 0.1)':<26}{json_b:>12.0f}{1e6 * json_s / count:>18.1f}")
    print(f"  restore: binary {json_s / binary_s:.1f}x faster than this version reading JSON")
    print(f"  memory after restore (tracemalloc): {held / visits:,.0f} B per visit ({visits})")


def _through_broker(values: Values) -> None:
    count = sum(len(v) for v in values.values())
    run = uuid.uuid4().hex[:8]
    topic = f"bench.{run}.state-changelog"
    with bench_broker() as (bootstrap, kind):
        config = WorkerConfig(bootstrap_servers=bootstrap)
        create_topics(bootstrap, [TopicSpec(topic, PARTITIONS)])
        producer = clients.bulk_producer(config)
        headers = offset_headers({INPUT: 0})  # as a committed batch's records carry them
        for number, records in values.items():
            for key, value in records.items():
                producer.send(topic, key=key, value=value, partition=number, headers=headers)
        producer.flush(timeout=300)
        producer.close(timeout=10)
        runs = [_restore_from(config, topic, values) for _ in range(3)]
    seconds = statistics.median(runs)
    rate = count / seconds
    print(f"through the broker ({kind}):")
    print(f"  {count} visits restored in {seconds:.2f} s, the median of", end=" ")
    print(", ".join(f"{r:.2f}" for r in runs), "s")
    print(f"  {rate:,.0f} visits/s; 1M visits: {1e6 / rate:.1f} s (extrapolated)")


def _restore_from(config: WorkerConfig, topic: str, values: Values) -> float:
    """Seconds to restore every partition of `topic` into fresh states, as a worker does."""
    consumer = clients.restorer(config)  # the worker's own restore consumer
    states = {n: new_state(config, n, PARTITIONS) for n in values}
    committed = {INPUT: 1}
    began = time.perf_counter()
    restored = 0
    starts: dict[TopicPartition, int | None] = {TopicPartition(topic, n): None for n in values}
    for tp, batch in read_ranges(consumer, starts, max_records=5000):
        state = states[tp.partition]
        for record in batch:
            if is_committed(record.headers or [], committed):
                state.restore(record.key or b"", record.value)
                restored += 1
    seconds = time.perf_counter() - began
    consumer.close()
    count = sum(len(v) for v in values.values())
    assert restored == count, (restored, count)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--visits", type=int, default=100_000)
    args = parser.parse_args()
    values, writers = _changelog(args.visits)
    settle_collector()  # as the worker does
    _in_memory(values, writers)
    _through_broker(values)


if __name__ == "__main__":
    main()
