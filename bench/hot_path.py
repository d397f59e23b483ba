"""The worker's hot path without Kafka: µs per event for each phase, on one core.

Framed Avro records of a generated day go through the live processing path (decode, place,
decide into a batch), then each batch is emitted (decisions encoded) and its touched visits
written as changelog records (encoded), in batches of `--batch` records, as a checkpoint
does. No broker and no client: what is left is what the worker adds on top of kafka-python's
own consume and produce cost (bench.stream_throughput measures those together).

    python -m bench.hot_path [--events 100000] [--batch 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from dataclasses import dataclass

from bench.common import rules_core
from rules.model import ChargeEvent
from rules.pack import load_packs
from rules.visit import Ledger
from worker.config import WorkerConfig
from worker.kafka.partitioner import home_partition
from worker.kafka.records import Record
from worker.offline.sample import generate_events
from worker.processing.batch import Batch
from worker.processing.collector import settle_collector
from worker.processing.pipeline import Processor
from worker.serde.codec import Codec
from worker.state.store import PartitionState, new_state

PARTITIONS = 6
TOPIC = "charges.captured"


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


class _Encoding:
    """Outputs that encode every decision as the topic outputs do, and keep only a count."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.records = 0

    def decision(self, ledger: Ledger, decision: object, charge_body: bytes | None) -> None:
        self.codec.encode_decision(decision, charge_body)  # type: ignore[arg-type]
        self.records += 1

    def dead_letter(self, record: Record, kind: object, message: str) -> None:
        self.records += 1

    def rekey(self, record: Record, patient: bytes, home: int) -> None:
        self.records += 1


def _records(events: int, seed: int, codec: Codec) -> list[_Record]:
    visits = math.ceil(events / 2.85) + 10
    raw = [ChargeEvent.model_validate(e) for e in generate_events(visits, seed)[:events]]
    offsets = [0] * PARTITIONS
    out = []
    for event in raw:
        key = event.patient_id.encode()
        partition = home_partition(key, PARTITIONS)
        stamp = int(event.occurred_at.timestamp() * 1000)
        value = codec.encode_event(event)
        out.append(_Record(TOPIC, partition, offsets[partition], stamp, key, value))
        offsets[partition] += 1
    return out


def run(records: list[_Record], batch_size: int) -> dict[str, float]:
    codec = Codec()
    states: dict[int, PartitionState] = {
        n: new_state(WorkerConfig(), n, PARTITIONS) for n in range(PARTITIONS)
    }
    processor = Processor(
        load_packs(),
        codec,
        states,
        partitioner="murmur2",
        repartition_topic="app.repartition",
        rekey_in_process=False,
    )
    outputs = _Encoding(codec)
    spent = {"decode + decide": 0.0, "emit (encode decisions)": 0.0, "changelog (encode)": 0.0}
    changelog = 0
    clock = time.perf_counter
    for start in range(0, len(records), batch_size):
        batch = Batch()
        began = clock()
        for record in records[start : start + batch_size]:
            processor.process(record, PARTITIONS, batch)
        decided = clock()
        processor.emit(batch, outputs)
        emitted = clock()
        for state in states.values():
            state.sweep()
            changelog += sum(1 for _ in state.take_writes())
        written = clock()
        spent["decode + decide"] += decided - began
        spent["emit (encode decisions)"] += emitted - decided
        spent["changelog (encode)"] += written - emitted
    n = len(records)
    figures = {phase: 1e6 * seconds / n for phase, seconds in spent.items()}
    figures["decision records per event"] = outputs.records / n
    figures["changelog records per event"] = changelog / n
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--default-collector", action="store_true", help="keep CPython's default gc thresholds"
    )
    args = parser.parse_args()
    records = _records(args.events, args.seed, Codec())
    if args.default_collector:
        gc.collect()
    else:
        settle_collector()  # as the worker does once its packs are loaded
    best: dict[str, float] = {}
    for number in range(1, args.runs + 1):
        figures = run(records, args.batch)
        total = sum(v for k, v in figures.items() if "per event" not in k)
        print(
            f"run {number}: {total:.1f} µs/event "
            + ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
        )
        for key, value in figures.items():
            best[key] = min(best.get(key, value), value)
    print(
        f"hot path, {len(records)} events, batches of {args.batch} (best of {args.runs}; "
        f"rules core {rules_core()}):"
    )
    for key, value in best.items():
        unit = "" if "per event" in key else " µs/event"
        print(f"  {key:<32}{value:8.2f}{unit}")
    print(f"  {'total':<32}{sum(v for k, v in best.items() if 'per event' not in k):8.2f} µs/event")


if __name__ == "__main__":
    main()
