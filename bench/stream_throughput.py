"""Worker throughput against kafka-python's own transactional passthrough, and decision latency.

One run, one broker (KAFKA_BOOTSTRAP_SERVERS, else the embedded Tansu), the same framed Avro
charge events (`worker.sample.generate_events`) in one input topic:

1. `--rounds` (3) pairs, each of
   - passthrough: `bench.passthrough.run_passthrough` copies the input to another topic in
     consume -> produce transactions (the ceiling: no decode, rules or state);
   - worker, exactly-once: `Worker(config).run(stop)` in a thread, with its own group, state and
     outputs, decides the same input from the beginning until `caught_up()`; events/s counts
     from its first batch to its last commit (the group join is reported apart, as for the
     passthrough);
   the ratio is taken within each pair (the VM's speed drifts between pairs) and its median
   printed;
2. latency: with the last round's worker caught up and still running, fresh events (another
   day) are produced at a steady rate, half the worker's median throughput, for
   `--latency-seconds`, and for each charge's first decision:
   - record timestamps: output record CreateTime (the worker's send) minus the input record's
     CreateTime (the bench's send), the input found through the decision's source offset;
   - visible: when a read_committed consumer tailing the outputs received the decision, minus
     the input record's CreateTime - what a downstream reader sees (includes the commit).
   The load generator and the tail run in processes of their own, so the worker's process
   holds the worker alone, as in production; all share the machine's 2 cores with the broker.
   - floor: once the worker has stopped, the same events at the same rate through
     kafka-python's transactional copy alone (bench.passthrough_latency), visible to the same
     kind of tail: no worker makes a decision visible sooner than this copies a record;
3. worker, at-least-once: the same input once more (after the first round), without
   transactions;
4. with `--processes N` (2; 1 leaves it out), each round also runs the worker as deployed on a
   machine with cores to spare: `charge-capture run --processes N`, one unit of N member
   processes (timed by the group's commits, bench.worker_processes), its ratio taken against
   the same round's passthrough, which stays one process.

    python -m bench.stream_throughput --events 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaProducer
from kafka.structs import TopicPartition

from bench.common import bench_broker, committed_tail
from bench.passthrough import PassthroughResult, passthrough_beside
from bench.passthrough_latency import passthrough_latency
from bench.worker_processes import report_units, run_unit, unit_config
from rules.model import ChargeEvent
from worker.cli.cluster import produce_events
from worker.config import Guarantee, WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.kafka.reading import read_to_end
from worker.offline.sample import generate_events
from worker.runtime.worker import Worker
from worker.serde.codec import Codec
from worker.serde.framing import DECISION

EVENTS_PER_VISIT = 2.8  # generate_events gives about 2.85 events per visit


class TimedWorker(Worker):
    """The worker, noting when its first batch started and its last batch committed."""

    first_batch: float | None = None
    last_commit: float | None = None

    def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        if self.first_batch is None:
            self.first_batch = time.monotonic()
        super()._process(records)

    def _checkpoint(self) -> None:
        super()._checkpoint()
        self.last_commit = time.monotonic()


Arrival = tuple[int, str, int, int, int]  # arrived ms, charge_id, source p, offset, CreateTime


def _tail(
    bootstrap_servers: str,
    topics: list[str],
    start_offsets: dict[tuple[str, int], int],
    ready: Any,
    done: Any,
    arrivals: Any,
) -> None:
    """In its own process: a read_committed consumer on the outputs from `start_offsets`,
    noting when each decision arrived (wall ms); after `done`, once quiet for 2 s, the
    arrivals are put on `arrivals`."""
    codec = Codec()
    seen: list[Arrival] = []
    try:
        # Starts at the current end (ends found by reading: ListOffsets is wrong on Tansu).
        for now_ms, records in committed_tail(
            bootstrap_servers, topics, start_offsets, ready, done
        ):
            for r in records:
                # The Avro dict, not the pydantic model: the tail shares the worker's 2 cores,
                # and it needs three fields.
                d = codec.decode(r.value, DECISION)
                source = d["source"]
                seen.append(
                    (now_ms, d["charge_id"], source["partition"], source["offset"], r.timestamp)
                )
    finally:
        arrivals.put(seen)


def _paced(
    config: WorkerConfig, count: int, seed: int, day: dt.date, rate: float, out: Any
) -> None:
    """In its own process: `count` fresh events of `day` at `rate` events/s."""
    out.put(_paced_produce(config, generated_events(count, seed, day), rate))


def generated_events(count: int, seed: int, day: dt.date | None = None) -> list[ChargeEvent]:
    visits = math.ceil(count / EVENTS_PER_VISIT) + 10
    raw = generate_events(visits, seed) if day is None else generate_events(visits, seed, day=day)
    assert len(raw) >= count, f"generated {len(raw)} < {count}"
    return [ChargeEvent.model_validate(e) for e in raw[:count]]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _wait(done: Any, timeout_s: float, what: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if not thread.is_alive():
            raise RuntimeError(f"worker thread died while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s} s")
        time.sleep(0.02)


def _paced_produce(config: WorkerConfig, events: list[ChargeEvent], rate: float) -> float:
    """Send at `rate` events/s (CreateTime = send time); returns the achieved rate.

    The records are encoded before the clock starts, so that pacing costs the shared cores
    little besides the producer's own work. linger.ms is 5, the Java producer's default since
    Apache Kafka 4.0. At 1 ms the producer writes batches of one or two records per partition,
    and Tansu's work is per batch: taking 1,500 records/s and serving them to one consumer cost
    it 62% of a core at 1 ms, 43% at 5 ms (on this 2-core VM), CPU the worker shares."""
    codec = Codec()
    assert config.bootstrap_servers
    encoded = [(e.patient_id.encode(), codec.encode_event(e)) for e in events]
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
    )
    began = time.monotonic()
    try:
        for i, (key, value) in enumerate(encoded):
            due = began + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a load generator, not synchronisation
            producer.send(config.input_topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return len(events) / (time.monotonic() - began)


def _latencies(
    config: WorkerConfig, arrivals: list[Arrival], first_offsets: dict[int, int]
) -> tuple[list[float], list[float]]:
    """(record-timestamp deltas, visible deltas) in ms for each new charge's first decision."""
    assert config.bootstrap_servers
    sent_ms: dict[tuple[int, int], int] = {}
    for record in read_to_end(config.bootstrap_servers, [config.input_topic]):
        if record.offset >= first_offsets.get(record.partition, 0):
            sent_ms[(record.partition, record.offset)] = record.timestamp
    stamped: list[float] = []
    visible: list[float] = []
    seen: set[str] = set()
    for arrived_ms, charge_id, partition, offset, created in sorted(
        arrivals, key=lambda a: (a[0], a[4])
    ):
        source = (partition, offset)
        if charge_id in seen or source not in sent_ms:
            continue
        seen.add(charge_id)
        stamped.append(created - sent_ms[source])
        visible.append(arrived_ms - sent_ms[source])
    return stamped, visible


def _ends(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    """Next offset per partition, by reading to the highwater seen on a fetch."""
    ends: dict[TopicPartition, int] = {}
    for record in read_to_end(bootstrap, topics):
        tp = TopicPartition(record.topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    return ends


@dataclass
class WorkerRun:
    """One worker run over the whole input: its rate, and the worker (still running when
    `keep_running`) for the latency phase."""

    rate: float
    seconds: float
    join_s: float
    restarts: int
    worker: TimedWorker
    thread: threading.Thread
    stop: threading.Event


def run_worker(config: WorkerConfig, events: int, *, keep_running: bool = False) -> WorkerRun:
    """The worker of `config` decides the input from the beginning until caught up."""
    ensure_topics(config)
    worker = TimedWorker(config)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        _wait(worker.caught_up, 1800.0, "worker caught up", thread)
    finally:
        if not keep_running:
            stop.set()
            thread.join(timeout=60)
    assert worker.first_batch is not None and worker.last_commit is not None
    seconds = worker.last_commit - worker.first_batch
    return WorkerRun(
        events / seconds,
        seconds,
        worker.first_batch - started,
        worker.restarts,
        worker,
        thread,
        stop,
    )


def worker_configs(
    run: str, rounds: int, partitions: int
) -> tuple[list[WorkerConfig], WorkerConfig]:
    """One exactly-once config per round and one at-least-once config: the same input topic,
    each with its own group, state and outputs."""

    def config(name: str, guarantee: Guarantee) -> WorkerConfig:
        return WorkerConfig(
            bootstrap_servers=None,
            app_id=f"bench.{run}.{name}",
            instance_id="bench-1",
            input_topic=f"bench.{run}.captured",
            corrected_topic=f"bench.{run}.{name}.corrected",
            held_topic=f"bench.{run}.{name}.held",
            dlq_topic=f"bench.{run}.{name}.dlq",
            partitions=partitions,
            processing_guarantee=guarantee,
            # Not the tests' 2 s: a 1000-record batch can hold the GIL long enough for
            # kafka-python's heartbeat to miss a 2 s session in one process.
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            http_port=0,
        )

    exactly = [config(f"eos{n}", Guarantee.EXACTLY_ONCE) for n in range(1, rounds + 1)]
    return exactly, config("alo", Guarantee.AT_LEAST_ONCE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="passthrough/worker pairs (median)")
    parser.add_argument(
        "--processes", type=int, default=2, help="members of the unit each round also runs"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="length of the paced latency phase"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="events/s of the latency phase (default: half the worker's median throughput)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def note(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    run = uuid.uuid4().hex[:8]
    with bench_broker() as (bootstrap, broker_kind):
        note(f"broker: {broker_kind}")
        rounds, alo = worker_configs(run, args.rounds, args.partitions)
        rounds = [replace(c, bootstrap_servers=bootstrap) for c in rounds]
        alo = replace(alo, bootstrap_servers=bootstrap)
        input_config = rounds[0]
        ensure_topics(input_config)
        began = time.monotonic()
        events = generated_events(args.events, args.seed)
        note(f"generated {len(events)} events in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        produce_events(input_config, events)
        produce_s = time.monotonic() - began
        note(f"produced them (framed Avro, lz4) at {len(events) / produce_s:,.0f} events/s")

        pairs: list[tuple[PassthroughResult, WorkerRun]] = []
        units: list[float] = []  # events/s of each round's unit
        for number, config in enumerate(rounds, start=1):
            passthrough = passthrough_beside(
                bootstrap, config.input_topic, config.app_id, args.partitions, len(events)
            )
            if args.processes > 1:
                units.append(run_unit(unit_config(config), len(events), args.processes))
                note(f"round {number}: run --processes {args.processes} {units[-1]:,.0f} events/s")
            last = number == len(rounds)
            eos = run_worker(config, len(events), keep_running=last)
            note(
                f"round {number}: passthrough {passthrough.events_per_s:,.0f} events/s, "
                f"worker {eos.rate:,.0f} events/s ({eos.rate / passthrough.events_per_s:.2f})"
            )
            pairs.append((passthrough, eos))
            if number == 1:  # before the latency phase adds to the input
                at_least_once = run_worker(alo, len(events))
                note(f"at-least-once worker: {at_least_once.rate:,.0f} events/s")
        live = pairs[-1][1]
        try:
            median_rate = statistics.median(w.rate for _, w in pairs)
            rate = args.latency_rate or median_rate / 2
            latency = _latency_phase(live, args, rate, events)
        finally:
            live.stop.set()
            live.thread.join(timeout=60)
        latency.floor_achieved, latency.floor = _floor_phase(live.worker.config, args, latency)
    _report(broker_kind, args.partitions, pairs, at_least_once, latency)
    if units:
        report_units(args.processes, [p.events_per_s for p, _ in pairs], units)
    return 0


@dataclass
class Latency:
    achieved: float  # events/s of the paced load
    stamped: list[float]
    visible: list[float]
    count: int  # events paced
    day: dt.date  # their date of service
    floor_achieved: float = math.nan  # the passthrough's run of the same events
    floor: list[float] = field(default_factory=list)  # its visible delays


def _latency_phase(
    live: WorkerRun, args: argparse.Namespace, rate: float, events: list[ChargeEvent]
) -> Latency:
    """Fresh events (another day) at a steady `rate` into the running, caught-up worker. The
    load generator and the output tail run in processes of their own (spawned: the worker's
    threads are running), so the worker's process holds the worker alone."""
    config, worker = live.worker.config, live.worker
    assert config.bootstrap_servers
    bootstrap = config.bootstrap_servers
    count = max(int(rate * args.latency_seconds), 100)
    first_offsets = {tp.partition: o for tp, o in _ends(bootstrap, [config.input_topic]).items()}
    outputs = [config.corrected_topic, config.held_topic]
    ends = {(tp.topic, tp.partition): o for tp, o in _ends(bootstrap, outputs).items()}
    spawn = multiprocessing.get_context("spawn")
    ready, done, arrivals = spawn.Event(), spawn.Event(), spawn.Queue()
    tail = spawn.Process(
        target=_tail, args=(bootstrap, outputs, ends, ready, done, arrivals), daemon=True
    )
    tail.start()
    try:
        if not ready.wait(60):
            raise TimeoutError("output tail did not start")
        day = _next_day(events)
        rate_achieved = _paced_load(config, count, args.seed + 1, day, rate)
        _wait(worker.caught_up, 300.0, "worker caught up after the paced phase", live.thread)
        done.set()
        seen: list[Arrival] = arrivals.get(timeout=120)
    finally:
        done.set()
        tail.join(timeout=30)
    stamped, visible = _latencies(config, seen, first_offsets)
    return Latency(rate_achieved, stamped, visible, count, day)


def _paced_load(config: WorkerConfig, count: int, seed: int, day: dt.date, rate: float) -> float:
    """`count` fresh events of `day` into config.input_topic at `rate`, from a process of
    their own; the rate achieved."""
    spawn = multiprocessing.get_context("spawn")
    achieved = spawn.Queue()
    load = spawn.Process(
        target=_paced, args=(config, count, seed, day, rate, achieved), daemon=True
    )
    load.start()
    try:
        rate_achieved: float = achieved.get(timeout=count / rate * 4 + 120)
    finally:
        load.join(timeout=30)
    return rate_achieved


def _floor_phase(
    config: WorkerConfig, args: argparse.Namespace, latency: Latency
) -> tuple[float, list[float]]:
    """The same events at the same rate through kafka-python's transactional copy alone
    (bench.passthrough_latency), once the worker has stopped."""
    assert config.bootstrap_servers

    def load(topic: str) -> float:
        into = replace(config, input_topic=topic)
        return _paced_load(into, latency.count, args.seed + 1, latency.day, latency.achieved)

    return passthrough_latency(
        config.bootstrap_servers, config.app_id, args.partitions, latency.count, load
    )


def _report(
    broker_kind: str,
    partitions: int,
    pairs: list[tuple[PassthroughResult, WorkerRun]],
    at_least_once: WorkerRun,
    latency: Latency,
) -> None:
    rows = [("", "events/s", "seconds", "join s", "ratio")]
    ratios = []
    for number, (passthrough, eos) in enumerate(pairs, start=1):
        ratio = eos.rate / passthrough.events_per_s if passthrough.events_per_s else math.nan
        ratios.append(ratio)
        rows.append(
            (
                f"round {number} passthrough (kafka-python txn copy)",
                f"{passthrough.events_per_s:,.0f}",
                f"{passthrough.elapsed_s:.2f}",
                f"{passthrough.join_s:.2f}",
                "",
            )
        )
        rows.append(
            (
                f"round {number} worker, exactly-once",
                f"{eos.rate:,.0f}",
                f"{eos.seconds:.2f}",
                f"{eos.join_s:.2f}",
                f"{ratio:.2f}",
            )
        )
    rows.append(
        (
            "worker, at-least-once",
            f"{at_least_once.rate:,.0f}",
            f"{at_least_once.seconds:.2f}",
            f"{at_least_once.join_s:.2f}",
            "",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    restarts = sum(w.restarts for _, w in pairs) + at_least_once.restarts
    print(f"broker: {broker_kind}; {partitions} partitions; restarts: {restarts}")
    for row in rows:
        print(
            f"{row[0]:<{widths[0]}}  "
            + "  ".join(f"{cell:>{widths[i + 1]}}" for i, cell in enumerate(row[1:]))
        )
    median_pt = statistics.median(p.events_per_s for p, _ in pairs)
    median_eos = statistics.median(w.rate for _, w in pairs)
    print(
        f"median of {len(pairs)}: passthrough {median_pt:,.0f}, worker exactly-once "
        f"{median_eos:,.0f} events/s; worker / passthrough (median of the rounds' ratios): "
        f"{statistics.median(ratios):.2f}"
    )
    print(
        f"event -> decision latency, {len(latency.stamped)} charges' first decisions at "
        f"{latency.achieved:,.0f} events/s (paced; half the worker's median unless given):"
    )
    print(f"  {'':<42}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}")
    for name, values in (
        ("record timestamps (out - in)", latency.stamped),
        ("visible to read_committed reader", latency.visible),
        (f"floor: passthrough, visible ({latency.floor_achieved:,.0f}/s)", latency.floor),
    ):
        print(
            f"  {name:<42}{_percentile(values, 50):>8.0f}{_percentile(values, 99):>8.0f}"
            f"{max(values, default=math.nan):>8.0f}"
        )


def _next_day(events: list[ChargeEvent]) -> dt.date:
    return max(e.date_of_service for e in events) + dt.timedelta(days=1)


if __name__ == "__main__":
    sys.exit(main())
