"""`charge-capture replay`: re-decide a historical range of the input topic (DESIGN §6).

A replay reads a range of the input topic with fresh, in-memory state (never the live changelog)
and no consumer group (partitions are assigned directly, nothing is committed), decides every
event through `PartitionState.decide` (the live worker's own decision step) and writes the
decisions to shadow topics or a JSON-lines file, never to the live outputs. With `--diff` it
compares the latest replayed decision of each charge with the latest live one.

Determinism: partitions are read one after the other in partition order, each in offset order,
and an event not keyed by its patient (or not on its patient's partition under
`--input-partitioner`) goes to the state of its patient's partition, where the live repartition
topic would have sent it. The same range and pack therefore give byte-identical decision files.
(The live worker interleaves partitions as batches arrive; visits are decided independently of
arrival order (DESIGN §4), so the final decisions agree, only the intermediate versions of a
visit fed from several partitions can differ. A re-keyed event moves no partition's event time,
live or here, but it is judged against its patient's partition as the replay finds it: near the
retention boundary it can meet an expired visit here that was still live for the worker.)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from rules.model import ChargeDecision, DecisionSource, ErrorKind
from rules.pack import PackSet, load_packs
from rules.visit import Ledger, Publication, VisitKey, table_rank
from worker.app import error_text
from worker.broker import TopicSpec, create_topics
from worker.config import WorkerConfig, add_arguments, cluster_config
from worker.serde import EVENT, Codec, UndecidableRecord, dead_letter_for
from worker.state import home_partition, record_time
from worker.topics import bulk_producer, latest_decisions

PARTIAL_VISIT_FLAG = "PARTIAL_VISIT"
DEFAULT_DIFF_OUT = Path("replay-diff.jsonl")
DEFAULT_OUTPUT = "file:replay-decisions.jsonl"
_POLL_RECORDS = 2000
_MAINTENANCE_EVERY = 20_000  # records between state sweeps (bounds replay memory)

PositionKind = Literal["beginning", "end", "offset", "timestamp"]


# -- range ------------------------------------------------------------------------------------


class ReplayError(Exception):
    """The replay ran but could not finish its job (outputs incomplete, a read stalled)."""


@dataclass(frozen=True)
class Position:
    """One end of a range: `beginning`, `end`, `offset:P:N` or `timestamp:ISO`."""

    kind: PositionKind
    partition: int | None = None
    offset: int | None = None
    timestamp: dt.datetime | None = None

    def __str__(self) -> str:
        if self.kind == "offset":
            return f"offset:{self.partition}:{self.offset}"
        if self.kind == "timestamp":
            assert self.timestamp is not None
            return f"timestamp:{self.timestamp.isoformat()}"
        return self.kind


BEGINNING = Position("beginning")
END = Position("end")


def parse_position(text: str, allowed: Sequence[PositionKind]) -> Position:
    """Parse a range end; `allowed` are the keyword forms this end accepts."""
    text = text.strip()
    if text in allowed and text in ("beginning", "end"):
        return Position(text)  # type: ignore[arg-type]
    kind, _, rest = text.partition(":")
    if kind == "offset" and "offset" in allowed:
        partition, _, offset = rest.partition(":")
        try:
            p, n = int(partition), int(offset)
        except ValueError:
            raise ValueError(f"{text!r}: expected offset:PARTITION:OFFSET") from None
        if p < 0 or n < 0:
            raise ValueError(f"{text!r}: partition and offset must be >= 0")
        return Position("offset", partition=p, offset=n)
    if kind == "timestamp" and "timestamp" in allowed:
        try:
            when = dt.datetime.fromisoformat(rest)
        except ValueError:
            raise ValueError(f"{text!r}: expected timestamp:ISO-8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return Position("timestamp", timestamp=when)
    forms = "|".join(k if k in ("beginning", "end") else f"{k}:..." for k in allowed)
    raise ValueError(f"{text!r}: expected {forms}")


@dataclass(frozen=True)
class FileOutput:
    path: Path


@dataclass(frozen=True)
class TopicsOutput:
    prefix: str


Output = FileOutput | TopicsOutput


def parse_output(text: str) -> Output:
    kind, _, rest = text.partition(":")
    if kind == "file" and rest:
        return FileOutput(Path(rest))
    if kind == "topics" and rest:
        return TopicsOutput(rest)
    raise ValueError(f"{text!r}: expected topics:PREFIX or file:PATH")


@dataclass(frozen=True)
class PartitionRange:
    """Offsets of one source partition: [context_start, start) is folded into state without
    emitting (warmup), [start, end) is replayed; [log_start, context_start) is only scanned
    for visit keys to flag partial visits."""

    partition: int
    log_start: int
    context_start: int
    start: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.start

    @property
    def warmup_records(self) -> int:
        return self.start - self.context_start


# -- options and report -----------------------------------------------------------------------


@dataclass
class ReplayOptions:
    config: WorkerConfig  # bootstrap servers, security, live topic names, retention
    output: Output
    topic: str | None = None  # default: config.input_topic
    start: Position = BEGINNING
    end: Position = END
    warmup: Position | None = None
    rules_dir: Path | None = None  # default: config.rules_dir, else the built-in packs
    diff: bool = False
    diff_out: Path | None = DEFAULT_DIFF_OUT
    progress: bool | None = None  # None: only when stderr is a terminal
    stall_timeout_s: float = 60.0  # no progress on a partition for this long: fail

    @property
    def source_topic(self) -> str:
        return self.topic or self.config.input_topic


@dataclass(frozen=True)
class ChargeChange:
    charge_id: str
    changed: tuple[str, ...]
    before: dict[str, Any] | None  # None: no live decision for the charge
    after: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "charge_id": self.charge_id,
            "changed": list(self.changed),
            "before": self.before,
            "after": self.after,
        }


@dataclass
class DiffReport:
    compared: int = 0
    changes: list[ChargeChange] = field(default_factory=list)
    by_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    rules_added: Counter[str] = field(default_factory=Counter)
    rules_removed: Counter[str] = field(default_factory=Counter)
    path: Path | None = None


@dataclass
class ReplayReport:
    topic: str
    output: str
    ranges: list[PartitionRange] = field(default_factory=list)
    records: int = 0  # records of the replayed range read
    warmup_records: int = 0
    scanned_records: int = 0  # read before the context start only to find partial visits
    decisions: int = 0  # decision records emitted (RETRACTED included)
    dlq: int = 0
    partial_visit_decisions: int = 0
    warmup: bool = False
    started_at_beginning: bool = True
    final_by_status: Counter[str] = field(default_factory=Counter)
    replay_seconds: float = 0.0  # the replayed range: read, decode, decide, write
    seconds: float = 0.0  # everything, from connecting to the report
    diff: DiffReport | None = None

    @property
    def events_per_s(self) -> float:
        return self.records / self.replay_seconds if self.replay_seconds > 0 else 0.0

    @property
    def charges(self) -> int:
        return sum(self.final_by_status.values())


# -- sinks ------------------------------------------------------------------------------------


class _Sink(Protocol):
    def decision(self, ledger: Ledger, decision: ChargeDecision) -> None: ...

    def dead_letter(self, record: Any, kind: ErrorKind, message: str) -> None: ...

    def close(self) -> None: ...


class _FileSink:
    """One full ChargeDecision JSON per line, in replay order; the DLQ is a count only."""

    def __init__(self, path: Path) -> None:
        self._stream: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self._write = self._stream.write

    def decision(self, ledger: Ledger, decision: ChargeDecision) -> None:
        self._write(decision.model_dump_json())
        self._write("\n")

    def dead_letter(self, record: Any, kind: ErrorKind, message: str) -> None:
        return None

    def close(self) -> None:
        self._stream.close()


class _TopicSink:
    def __init__(self, config: WorkerConfig, names: tuple[str, str, str], codec: Codec) -> None:
        self.corrected, self.held, self.dlq = names
        self.codec = codec
        self.producer = bulk_producer(config)
        self.failed: list[BaseException] = []

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        # flush() waits for every send but raises for none of them: note each failure.
        self.producer.send(topic, key=key, value=value).add_errback(self.failed.append)

    def decision(self, ledger: Ledger, decision: ChargeDecision) -> None:
        topic = self.held if ledger is Ledger.REVIEW else self.corrected
        self._send(topic, decision.charge_id.encode(), self.codec.encode_decision(decision))

    def dead_letter(self, record: Any, kind: ErrorKind, message: str) -> None:
        letter = dead_letter_for(record, kind, message)
        self._send(self.dlq, record.key, self.codec.encode_dead_letter(letter))

    def close(self) -> None:
        try:
            self.producer.flush(timeout=120)
        finally:
            self.producer.close(timeout=10)
        if self.failed:
            first = self.failed[0]
            raise ReplayError(
                f"{len(self.failed)} shadow records were not written "
                f"(first: {type(first).__name__}: {first}); the shadow topics are incomplete"
            )


def shadow_topics(config: WorkerConfig, prefix: str) -> tuple[str, str, str]:
    """The (corrected, held, dlq) shadow topics; refuses names of the live data flow."""
    names = (
        prefix + config.corrected_topic,
        prefix + config.held_topic,
        prefix + config.dlq_topic,
    )
    live = {
        config.input_topic,
        config.corrected_topic,
        config.held_topic,
        config.dlq_topic,
        config.changelog_topic,
        config.repartition_topic,
    }
    clash = sorted(set(names) & live)
    if not prefix or clash:
        raise ValueError(
            f"refusing output prefix {prefix!r}: it maps onto live topic(s) {clash or names}"
        )
    return names


# -- progress ---------------------------------------------------------------------------------


class _Progress:
    """Per-partition records, events/s and ETA, redrawn in place on a terminal."""

    def __init__(self, enabled: bool, stream: IO[str]) -> None:
        self.enabled = enabled
        self.stream = stream
        self._lines = 0
        self._last = 0.0

    def start(self, phase: str, totals: dict[int, int]) -> None:
        self.phase = phase
        self.totals = totals
        self.done = dict.fromkeys(totals, 0)
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.t0 = time.monotonic()
        self._lines = 0
        self._render(force=True)

    def begin_partition(self, partition: int) -> None:
        if self.enabled:
            self.began[partition] = time.monotonic()

    def advance(self, partition: int, records: int) -> None:
        if not self.enabled:
            return
        self.done[partition] += records
        self._render()

    def finish_partition(self, partition: int) -> None:
        if self.enabled:
            self.ended[partition] = time.monotonic()
            self._render(force=True)

    def _render(self, force: bool = False) -> None:
        if not self.enabled or not self.totals:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        overall = sum(self.done.values()) / elapsed
        rows = []
        for p, total in self.totals.items():
            done = self.done[p]
            began = self.began.get(p)
            spent = (self.ended.get(p, now) - began) if began is not None else 0.0
            rate = done / spent if spent > 0 else 0.0
            speed = rate or overall
            eta = "done" if done >= total else (f"{(total - done) / speed:6.1f}s" if speed else "-")
            rows.append(
                f"{self.phase:<7} p{p:<3} {done:>10,}/{total:<10,} {rate:>9,.0f} ev/s  ETA {eta}"
            )
        up = f"\x1b[{self._lines}F" if self._lines else ""
        self.stream.write(up + "".join(f"\x1b[2K{row}\n" for row in rows))
        self.stream.flush()
        self._lines = len(rows)


# -- the replay -------------------------------------------------------------------------------


class _Replayer:
    def __init__(
        self,
        options: ReplayOptions,
        packs: PackSet,
        codec: Codec,
        partitions: int,
        sink: _Sink,
        report: ReplayReport,
    ) -> None:
        self.topic = options.source_topic
        self.packs = packs
        self.codec = codec
        self.partitions = partitions
        self.sink = sink
        self.report = report
        self.states = {n: options.config.new_state(n) for n in range(partitions)}
        self.partitioner = options.config.input_partitioner
        self.latest: dict[str, ChargeDecision] = {}
        self.partial_keys: set[VisitKey] = set()
        self._since_maintenance = 0

    def scan(self, records: list[Any]) -> None:
        """Prefix before the context start: remember its visits, decide nothing."""
        decode = self.codec.registry.decode
        keys = self.partial_keys
        for record in records:
            try:
                body = decode(record.value, EVENT)
                keys.add(VisitKey(body["patient_id"], body["date_of_service"]))
            except (UndecidableRecord, KeyError, TypeError):
                continue

    def fold(self, partition: int, records: list[Any], emit: bool) -> None:
        """Decide `records` of source `partition` in offset order; emit when replaying."""
        decode = self.codec.decode_event
        states, packs, topic, n = self.states, self.packs, self.topic, self.partitions
        partitioner = self.partitioner
        construct = DecisionSource.model_construct
        for record in records:
            try:
                event = decode(record.value)
            except UndecidableRecord as bad:
                if emit:
                    self.report.dlq += 1
                    self.sink.dead_letter(record, bad.kind, bad.message)
                continue
            patient = event.patient_id.encode()
            home = home_partition(patient, n, partitioner)
            # As live: an event not keyed by its patient or not on its partition is decided
            # in its patient's state as a re-keyed event.
            rekeyed = record.key != patient or home != partition
            source = construct(
                topic=topic, partition=partition, offset=record.offset, event_id=event.event_id
            )
            try:
                publications = states[home].decide(
                    event, source, packs, record_time=record_time(record), rekeyed=rekeyed
                )
            except UndecidableRecord as bad:
                if emit:
                    self.report.dlq += 1
                    self.sink.dead_letter(record, bad.kind, bad.message)
                continue
            except Exception as error:  # the live worker dead-letters it after one abort
                raise ReplayError(
                    f"deciding {topic}[{partition}] offset {record.offset} failed: "
                    f"{error_text(error)}"
                ) from error
            if emit and publications:
                self._emit(publications)
        self._since_maintenance += len(records)
        if self._since_maintenance >= _MAINTENANCE_EVERY:
            self.maintain()

    def _emit(self, publications: list[Publication]) -> None:
        report, latest, partial = self.report, self.latest, self.partial_keys
        for publication in publications:
            decision = publication.decision
            if partial and (decision.patient_id, decision.date_of_service) in partial:
                flags = (*decision.flags, PARTIAL_VISIT_FLAG)
                decision = decision.model_copy(update={"flags": flags})
                report.partial_visit_decisions += 1
            self.sink.decision(publication.ledger, decision)
            report.decisions += 1
            current = latest.get(decision.charge_id)
            if current is None or table_rank(decision) > table_rank(current):
                latest[decision.charge_id] = decision

    def maintain(self) -> None:
        """Drop visits past retention and the changelog bookkeeping a replay never writes."""
        self._since_maintenance = 0
        for state in self.states.values():
            state.sweep()
            state.dirty.clear()
            state.expired.clear()
            state.retired_changed.clear()


def _client_kwargs(config: WorkerConfig) -> dict[str, Any]:
    return {"client_id": f"{config.app_id}-replay", **config.security.kafka_kwargs()}


def _highwaters(
    config: WorkerConfig,
    tps: list[TopicPartition],
    starts: dict[TopicPartition, int],
    timeout_s: float,
) -> dict[TopicPartition, int]:
    """End of each partition = the highwater of a fetch response (not ListOffsets, DESIGN §8)."""
    probe = KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 * 1024,
        **_client_kwargs(config),
    )
    try:
        probe.assign(tps)
        for tp in tps:
            probe.seek(tp, starts[tp])
        deadline = time.monotonic() + timeout_s
        found: dict[TopicPartition, int] = {}
        while len(found) < len(tps):
            probe.poll(timeout_ms=200, max_records=100_000)
            for tp in tps:
                highwater = probe.highwater(tp)
                if highwater is not None:
                    found[tp] = highwater
            if time.monotonic() > deadline:
                missing = sorted(tp.partition for tp in tps if tp not in found)
                raise TimeoutError(f"no fetch response for partitions {missing} in {timeout_s} s")
        return found
    finally:
        probe.close(autocommit=False)


def _resolve(
    consumer: KafkaConsumer,
    position: Position,
    tps: list[TopicPartition],
    log_start: dict[TopicPartition, int],
    highwater: dict[TopicPartition, int],
    default: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Offsets of one range end per partition, clamped to [log start, highwater]."""
    if position.kind == "beginning":
        wanted = dict(log_start)
    elif position.kind == "end":
        wanted = dict(highwater)
    elif position.kind == "offset":
        assert position.partition is not None and position.offset is not None
        if position.partition >= len(tps):
            raise ValueError(f"{position}: the topic has {len(tps)} partitions")
        wanted = dict(default)
        wanted[tps[position.partition]] = position.offset
    else:
        assert position.timestamp is not None
        millis = int(position.timestamp.timestamp() * 1000)
        found = consumer.offsets_for_times(dict.fromkeys(tps, millis))
        wanted = {}
        for tp in tps:
            hit = found.get(tp)
            # No record at or after the time: None on Apache Kafka; Tansu 0.6 answers offset 0
            # with timestamp -1 instead.
            missing = hit is None or hit.offset < 0 or hit.timestamp < 0
            wanted[tp] = highwater[tp] if missing else hit.offset
    return {tp: min(max(wanted[tp], log_start[tp]), highwater[tp]) for tp in tps}


def _records(
    consumer: KafkaConsumer, tp: TopicPartition, start: int, end: int, stall_timeout_s: float
) -> Iterator[list[Any]]:
    """Records of [start, end) of one partition, in offset order, in poll-sized lists."""
    if start >= end:
        return
    consumer.assign([tp])
    consumer.seek(tp, start)
    position = start
    last_progress = time.monotonic()
    while position < end:
        batch = consumer.poll(timeout_ms=500, max_records=_POLL_RECORDS).get(tp)
        if batch:
            if batch[-1].offset >= end:
                batch = [r for r in batch if r.offset < end]
            if batch:
                yield batch
        # Control records and aborted data are skipped by the client: follow its position.
        now_at = consumer.position(tp)
        if now_at is not None and now_at > position:
            position = now_at
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout_s:
            raise TimeoutError(
                f"partition {tp.partition} stalled at offset {position} (end {end}) for "
                f"{stall_timeout_s:.0f} s"
            )


def plan_ranges(options: ReplayOptions, consumer: KafkaConsumer) -> list[PartitionRange]:
    topic = options.source_topic
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ValueError(f"source topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    log_start: dict[TopicPartition, int] = consumer.beginning_offsets(tps)
    highwater = _highwaters(options.config, tps, log_start, options.stall_timeout_s)
    start = _resolve(consumer, options.start, tps, log_start, highwater, log_start)
    end = _resolve(consumer, options.end, tps, log_start, highwater, highwater)
    context = dict(start)
    if options.warmup is not None:
        warm = _resolve(consumer, options.warmup, tps, log_start, highwater, log_start)
        context = {tp: min(warm[tp], start[tp]) for tp in tps}
    return [
        PartitionRange(
            partition=tp.partition,
            log_start=log_start[tp],
            context_start=context[tp],
            start=start[tp],
            end=max(end[tp], start[tp]),
        )
        for tp in tps
    ]


def run_replay(
    options: ReplayOptions, *, codec: Codec | None = None, stderr: IO[str] | None = None
) -> ReplayReport:
    """Replay the range of `options`; the report says what was read, decided and changed."""
    began = time.monotonic()
    config = options.config
    if not config.bootstrap_servers:
        raise ValueError("replay needs --bootstrap-servers (the cluster holding the topic)")
    stream = stderr or sys.stderr
    codec = codec or Codec()
    packs = load_packs(options.rules_dir or config.rules_dir)
    output = options.output
    names = shadow_topics(config, output.prefix) if isinstance(output, TopicsOutput) else None
    diff_out = options.diff_out if options.diff else None
    same = (
        isinstance(output, FileOutput)
        and diff_out is not None
        and diff_out.resolve() == output.path.resolve()
    )
    if same:
        raise ValueError("--diff-out and the decisions file are the same path")
    described = (
        f"topics:{output.prefix}" if isinstance(output, TopicsOutput) else f"file:{output.path}"
    )
    report = ReplayReport(topic=options.source_topic, output=described)
    report.warmup = options.warmup is not None
    enabled = stream.isatty() if options.progress is None else options.progress
    progress = _Progress(enabled, stream)

    consumer = KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        **_client_kwargs(config),
    )
    sink: _Sink | None = None
    try:
        ranges = plan_ranges(options, consumer)
        report.ranges = ranges
        report.started_at_beginning = all(r.context_start == r.log_start for r in ranges)
        if names is not None:
            specs = [
                TopicSpec(names[0], len(ranges), {"cleanup.policy": "compact,delete"}),
                TopicSpec(names[1], len(ranges), {"cleanup.policy": "compact,delete"}),
                TopicSpec(names[2], len(ranges)),
            ]
            assert config.bootstrap_servers
            create_topics(config.bootstrap_servers, specs, **config.security.kafka_kwargs())
            sink = _TopicSink(config, names, codec)
        else:
            assert isinstance(output, FileOutput)
            sink = _FileSink(output.path)
        replayer = _Replayer(options, packs, codec, len(ranges), sink, report)
        topic = options.source_topic

        def phase(name: str, bounds: dict[int, tuple[int, int]], mode: str) -> int:
            todo = {p: hi - lo for p, (lo, hi) in bounds.items() if hi > lo}
            if not todo:
                return 0
            progress.start(name, todo)
            read = 0
            for p in sorted(todo):
                lo, hi = bounds[p]
                tp = TopicPartition(topic, p)
                progress.begin_partition(p)
                for batch in _records(consumer, tp, lo, hi, options.stall_timeout_s):
                    if mode == "scan":
                        replayer.scan(batch)
                    else:
                        replayer.fold(p, batch, emit=mode == "replay")
                    read += len(batch)
                    progress.advance(p, len(batch))
                progress.finish_partition(p)
            return read

        if any(r.records for r in ranges):  # nothing replayed: no partial visit to find
            report.scanned_records = phase(
                "scan", {r.partition: (r.log_start, r.context_start) for r in ranges}, "scan"
            )
        report.warmup_records = phase(
            "warmup", {r.partition: (r.context_start, r.start) for r in ranges}, "warmup"
        )
        replay_began = time.monotonic()
        report.records = phase("replay", {r.partition: (r.start, r.end) for r in ranges}, "replay")
        sink.close()
        sink = None
        report.replay_seconds = time.monotonic() - replay_began
        latest = replayer.latest
        report.final_by_status = Counter(d.status.value for d in latest.values())
    finally:
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
        consumer.close(autocommit=False)

    if options.diff:
        assert config.bootstrap_servers
        live, _ = latest_decisions(
            config.bootstrap_servers,
            [config.corrected_topic, config.held_topic],
            codec,
            **config.security.kafka_kwargs(),
        )
        report.diff = diff_decisions(live, latest)
        if options.diff_out is not None:
            write_diff(report.diff, options.diff_out)
    report.seconds = time.monotonic() - began
    return report


# -- diff -------------------------------------------------------------------------------------

_COMPARED = ("status", "modifiers", "units", "holds")


def decision_view(decision: ChargeDecision) -> dict[str, Any]:
    """What the diff compares (status, modifiers, units, hold rule_ids) plus context."""
    return {
        "status": decision.status.value,
        "modifiers": list(decision.charge.modifiers),
        "units": decision.charge.units,
        "holds": sorted({h.rule_id for h in decision.holds}),
        "corrections": sorted({c.rule_id for c in decision.corrections}),
        "date_of_service": decision.date_of_service.isoformat(),
        "cpt_code": decision.charge.cpt_code,
        "decision_version": decision.decision_version,
        "rule_pack": f"{decision.rule_pack.id}@{decision.rule_pack.version}",
        "flags": list(decision.flags),
    }


def diff_decisions(
    live: dict[str, ChargeDecision], replayed: dict[str, ChargeDecision]
) -> DiffReport:
    """Charges the replay decided whose latest decision differs from the live one."""
    report = DiffReport(compared=len(replayed))
    for charge_id in sorted(replayed):
        after = decision_view(replayed[charge_id])
        old = live.get(charge_id)
        before = decision_view(old) if old is not None else None
        if before is None:
            changed: tuple[str, ...] = ("status",)
        else:
            changed = tuple(f for f in _COMPARED if before[f] != after[f])
        if not changed:
            continue
        report.changes.append(ChargeChange(charge_id, changed, before, after))
        report.by_status[(before["status"] if before else "-", after["status"])] += 1
        old_rules = set(before["holds"]) | set(before["corrections"]) if before else set()
        new_rules = set(after["holds"]) | set(after["corrections"])
        report.rules_added.update(new_rules - old_rules)
        report.rules_removed.update(old_rules - new_rules)
    return report


def write_diff(diff: DiffReport, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for change in diff.changes:
            out.write(json.dumps(change.to_json(), separators=(",", ":")) + "\n")
    diff.path = path


# -- report -----------------------------------------------------------------------------------


def format_report(report: ReplayReport) -> str:
    rows = [
        f"replay of {report.topic} -> {report.output}",
        f"{'partition':<10}{'from':>12}{'to':>12}{'records':>10}{'warmup':>10}",
    ]
    for r in report.ranges:
        rows.append(
            f"{r.partition:<10}{r.start:>12}{r.end:>12}{r.records:>10}{r.warmup_records:>10}"
        )
    rows += [
        "",
        f"records read        {report.records}",
        f"warmup records      {report.warmup_records}",
        f"decisions           {report.decisions}  ({report.charges} charges)",
        f"dead-lettered       {report.dlq}",
        f"partial-visit decisions {report.partial_visit_decisions}"
        + (
            f"  (flagged {PARTIAL_VISIT_FLAG}; visits with events before the start, "
            f"found by scanning {report.scanned_records} earlier records)"
            if report.partial_visit_decisions or report.scanned_records
            else ""
        ),
        f"events/s            {report.events_per_s:,.0f}  "
        f"({report.replay_seconds:.2f} s replaying, {report.seconds:.2f} s in all)",
        "",
        f"{'status (final per charge)':<34}{'charges':>9}",
    ]
    rows += [f"{s:<34}{n:>9}" for s, n in sorted(report.final_by_status.items())]
    if report.diff is not None:
        rows += ["", *format_diff(report.diff)]
    return "\n".join(rows)


def format_diff(diff: DiffReport) -> list[str]:
    where = f" (details: {diff.path})" if diff.path else ""
    rows = [
        f"diff against the live decisions: {diff.compared} charges compared, "
        f"{len(diff.changes)} would change{where}",
    ]
    if not diff.changes:
        return rows
    rows += ["", f"{'old status -> new status':<34}{'charges':>9}"]
    for (old, new), n in sorted(diff.by_status.items()):
        rows.append(f"{f'{old} -> {new}':<34}{n:>9}")
    rows += ["", f"{'rule_id':<34}{'added':>9}{'removed':>9}"]
    for rule in sorted(set(diff.rules_added) | set(diff.rules_removed)):
        rows.append(f"{rule:<34}{diff.rules_added[rule]:>9}{diff.rules_removed[rule]:>9}")
    return rows


# -- CLI --------------------------------------------------------------------------------------

DESCRIPTION = """\
Re-decide a historical range of the input topic with fresh in-memory state (never the live
changelog) and no consumer group (nothing is committed), into shadow topics or a file, and
optionally diff against the decisions the live worker recorded.

Range ends (per partition; offsets are clamped to what the partition holds):
  --from beginning | offset:P:N | timestamp:ISO    (default beginning)
  --to   end | offset:P:N | timestamp:ISO          (default end; exclusive)
  `end` is the highwater seen when the replay starts, so it finishes while the live worker
  keeps writing. offset:P:N applies to partition P; the other partitions run from the
  beginning / to the end. timestamp:ISO starts each partition at its first record at or after
  that time (offsets_for_times). On the embedded Tansu broker that index is the broker's
  receive time, not the record timestamp.

Partial visits: a replay that does not start at the beginning of a partition can see only the
later events of a visit. Those decisions are flagged PARTIAL_VISIT and counted in the report;
the records before the start are scanned (decoded, not decided) to find exactly which visits
had earlier events. --warmup beginning|offset:P:N|timestamp:ISO instead rebuilds state from
that earlier point without emitting decisions for it; then only visits with events before the
warmup point are flagged (none with --warmup beginning).

Outputs: --output topics:PREFIX writes PREFIX+charges.corrected / .held / .dlq (created if
missing; a prefix that maps onto a live topic is refused); --output file:PATH writes one full
ChargeDecision JSON per line in replay order (partition by partition, offset order), so two
replays of the same range and pack give byte-identical files; undecodable records are then
only counted. Each decision's source is the original topic/partition/offset.
"""


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `charge-capture replay` (registered by worker.commands)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_arguments(parser)
    parser.add_argument(
        "--topic", default=None, help="source topic (default: --input-topic, charges.captured)"
    )
    parser.add_argument(
        "--from",
        dest="range_from",
        default="beginning",
        metavar="beginning|offset:P:N|timestamp:ISO",
        help="start of the replayed range (default beginning)",
    )
    parser.add_argument(
        "--to",
        dest="range_to",
        default="end",
        metavar="end|offset:P:N|timestamp:ISO",
        help="end of the range, exclusive (default: the highwater when the replay starts; a "
        "transaction still open there holds the read until it ends)",
    )
    parser.add_argument(
        "--warmup",
        default=None,
        metavar="beginning|offset:P:N|timestamp:ISO",
        help="rebuild state from this earlier point without emitting decisions for it",
    )
    parser.add_argument(
        "--rules",
        type=Path,
        default=None,
        help="rule-pack directory to replay under (default: --rules-dir, else built-in packs "
        "chosen per date of service)",
    )
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="topics:PREFIX|file:PATH",
        help=f"where the decisions go (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--diff",
        action="store_true",
        help="compare with the latest live decisions (charges.corrected + charges.held)",
    )
    parser.add_argument(
        "--diff-out",
        type=Path,
        default=DEFAULT_DIFF_OUT,
        help=f"JSON-lines file of the changed charges (default {DEFAULT_DIFF_OUT})",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress on stderr (auto: when stderr is a terminal)",
    )
    parser.set_defaults(func=cmd_replay)


def options_from_args(args: argparse.Namespace, config: WorkerConfig) -> ReplayOptions:
    warmup = args.warmup
    return ReplayOptions(
        config=config,
        output=parse_output(args.output),
        topic=args.topic,
        start=parse_position(args.range_from, ("beginning", "offset", "timestamp")),
        end=parse_position(args.range_to, ("end", "offset", "timestamp")),
        warmup=parse_position(warmup, ("beginning", "offset", "timestamp")) if warmup else None,
        rules_dir=args.rules,
        diff=args.diff,
        diff_out=args.diff_out,
        progress={"auto": None, "on": True, "off": False}[args.progress],
    )


def cmd_replay(args: argparse.Namespace) -> int:
    config = cluster_config(args, "replay")
    if config is None:
        return 2
    try:
        options = options_from_args(args, config)
        report = run_replay(options)
    except ValueError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    except (ReplayError, TimeoutError) as error:
        print(f"replay failed: {error}", file=sys.stderr)
        return 1
    print(format_report(report), file=sys.stderr)
    return 0
