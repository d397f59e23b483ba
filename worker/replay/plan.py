"""Which offsets a replay reads: range ends, per-partition ranges, and where outputs go."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from rules.pack import PackSet
from worker.config import WorkerConfig
from worker.kafka import clients
from worker.kafka.reading import first_highwaters

PositionKind = Literal["beginning", "end", "offset", "timestamp"]
DEFAULT_DIFF_OUT = Path("replay-diff.jsonl")


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


def _before(a: Position, b: Position) -> bool:
    """Whether `a` is certainly before `b` (same partition's offsets, or two timestamps)."""
    if a.kind == b.kind == "offset" and a.partition == b.partition:
        assert a.offset is not None and b.offset is not None
        return a.offset < b.offset
    if a.kind == b.kind == "timestamp":
        assert a.timestamp is not None and b.timestamp is not None
        return a.timestamp < b.timestamp
    return False


def check_range(start: Position, end: Position, warmup: Position | None = None) -> None:
    """A range that ends before it starts (or warms up after it starts) is a mistake, not an
    empty replay: ValueError naming both ends."""
    if _before(end, start):
        raise ValueError(f"--to {end} is before --from {start}: the range ends before it starts")
    if warmup is not None and _before(start, warmup):
        raise ValueError(f"--warmup {warmup} is after --from {start}: warmup must come first")


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
    packs: PackSet | None = None  # loaded already (the CLI does, to fail early); else rules_dir
    stall_timeout_s: float = 60.0  # no progress on a partition for this long: fail

    @property
    def source_topic(self) -> str:
        return self.topic or self.config.input_topic


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


def plan_ranges(options: ReplayOptions, consumer: KafkaConsumer) -> list[PartitionRange]:
    topic = options.source_topic
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ValueError(f"source topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    log_start: dict[TopicPartition, int] = consumer.beginning_offsets(tps)
    # The end of each partition is the highwater of a fetch response (ListOffsets LATEST is
    # wrong on Tansu); a small fetch size keeps the probe cheap.
    probe = clients.reader(options.config, "replay-probe", max_partition_fetch_bytes=16 * 1024)
    try:
        highwater = first_highwaters(probe, log_start, options.stall_timeout_s)
    finally:
        probe.close(autocommit=False)
    start = _resolve(consumer, options.start, tps, log_start, highwater, log_start)
    end = _resolve(consumer, options.end, tps, log_start, highwater, highwater)
    for tp in tps:
        if end[tp] < start[tp]:
            raise ValueError(
                f"--to {options.end} is before --from {options.start} on partition "
                f"{tp.partition} (offset {end[tp]} < {start[tp]}): the range ends before it starts"
            )
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
