"""`charge-capture replay`: re-decide a historical range of the input topic.

A replay reads a range of the input topic with fresh, in-memory state (never the live changelog)
and no consumer group (partitions are assigned directly, nothing is committed), decides every
event through the live worker's processing path (worker.processing.pipeline) and writes the
decisions to shadow topics or a JSON-lines file, never to the live outputs. With `--diff` it
compares the latest replayed decision of each charge with the latest live one.

Determinism: partitions are read one after the other in partition order, each in offset order,
and an event not keyed by its patient (or not on its patient's partition under
`--input-partitioner`) is decided in the state of its patient's partition, where the live
repartition topic would have sent it. The same range and pack therefore give byte-identical
decision files. (The live worker interleaves partitions as batches arrive; visits are decided
independently of arrival order, so the final decisions agree, only the intermediate versions of
a visit fed from several partitions can differ. A re-keyed event moves no partition's event
time, live or here, but it is judged against its patient's partition as the replay finds it:
near the retention boundary it can meet an expired visit here that was still live for the
worker.)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from msgspec.structs import replace

from rules.charge import Decision
from rules.pack import load_packs
from rules.visit import VisitKey
from worker.errors import RecordFailed, ReplayError, UndecidableRecord
from worker.kafka import clients
from worker.kafka.admin import TopicSpec, create_topics
from worker.kafka.reading import read_ahead, read_ranges
from worker.kafka.records import Record
from worker.processing.batch import Batch
from worker.processing.collector import settle_collector
from worker.processing.outputs import (
    FileOutputs,
    NullOutputs,
    Outputs,
    OutputTopics,
    TopicOutputs,
)
from worker.processing.pipeline import Processor
from worker.processing.schema_wait import SchemaWait
from worker.processing.sensor import NullSensor
from worker.processing.table import latest_decisions
from worker.replay.diff import diff_decisions, write_diff
from worker.replay.plan import (
    FileOutput,
    ReplayOptions,
    TopicsOutput,
    plan_ranges,
    shadow_topics,
)
from worker.replay.progress import Progress
from worker.replay.report import PARTIAL_VISIT_FLAG, ReplayReport, ReportSensor
from worker.serde.codec import Codec
from worker.serde.framing import EVENT
from worker.serde.registry_source import codec_for
from worker.state.store import PartitionState, new_state

_POLL_RECORDS = 2000
_READ_AHEAD = 4  # batches read ahead of the one being decided (at most 8,000 records)
_MAINTENANCE_EVERY = 20_000  # records between state sweeps (bounds replay memory)
EMIT_EVERY = 1000  # records between emitted batches (as the live worker's checkpoints)


class _Replayer:
    """The replay's processing path: every partition's state, one Processor, and the visits
    whose earlier events fall before the range (for PARTIAL_VISIT)."""

    def __init__(
        self, options: ReplayOptions, codec: Codec, partitions: int, report: ReplayReport
    ) -> None:
        config = options.config
        self.codec = codec
        self.partitions = partitions
        self.hot_visits = config.hot_visits
        self.report = report
        self.states: dict[int, PartitionState] = {
            n: new_state(config, n) for n in range(partitions)
        }
        self.sensor = ReportSensor(report)
        self.processor = Processor(
            options.packs or load_packs(options.rules_dir or config.rules_dir),
            codec,
            self.states,
            partitioner=config.input_partitioner,
            repartition_topic=None,
            rekey_in_process=True,
            sensor=NullSensor(),  # until the replayed range: warmup is not reported
        )
        self.partial_keys: set[VisitKey] = set()
        self.batch = Batch()
        self._since_maintenance = 0

    def focus(self, partition: int) -> None:
        """Partitions are replayed one at a time, so the one being read gets the whole budget
        of decoded visits the live worker spreads over all of them (config.hot_visits per
        partition): memory stays what the live worker's is, and a visit is seldom encoded
        only to be decoded again."""
        share = self.hot_visits
        for n, state in self.states.items():
            state.visits.resize(share * self.partitions if n == partition else share)

    def start_emitting(self) -> None:
        """From here on decisions are reported and flagged (the replayed range)."""
        self.processor.sensor = self.sensor
        self.processor.decorate = self._flag_partial

    def _flag_partial(self, decision: Decision) -> Decision:
        if (decision.patient_id, decision.date_of_service) not in self.partial_keys:
            return decision
        self.report.partial_visit_decisions += 1
        return replace(decision, flags=(*decision.flags, PARTIAL_VISIT_FLAG))

    def scan(self, records: list[Record]) -> None:
        """Prefix before the context start: remember its visits, decide nothing."""
        decode = self.codec.decode
        for record in records:
            try:
                body = decode(record.value, EVENT)
                self.partial_keys.add(VisitKey(body["patient_id"], body["date_of_service"]))
            except (UndecidableRecord, KeyError, TypeError):
                continue

    def fold(self, records: list[Record], outputs: Outputs) -> None:
        """Decide `records` of one source partition in offset order.

        Decisions are emitted every EMIT_EVERY records read: a count, not poll boundaries,
        so two replays of a range emit the same records.
        """
        process, n, batch = self.processor.process, self.partitions, self.batch
        try:
            for record in records:
                process(record, n, batch)
                if batch.records >= EMIT_EVERY:
                    self.emit(outputs)
        except RecordFailed as failed:  # the live worker dead-letters it after one abort
            raise ReplayError(f"deciding {failed}") from failed
        self._since_maintenance += len(records)
        if self._since_maintenance >= _MAINTENANCE_EVERY:
            self.maintain()

    def emit(self, outputs: Outputs) -> None:
        self.processor.emit(self.batch, outputs)
        self.batch = Batch()

    def maintain(self) -> None:
        """Drop visits past retention and the changelog bookkeeping a replay never writes."""
        self._since_maintenance = 0
        for state in self.states.values():
            state.sweep()
            state.forget_writes()


def _open_outputs(
    options: ReplayOptions, codec: Codec, partitions: int
) -> TopicOutputs | FileOutputs:
    config, output = options.config, options.output
    if isinstance(output, FileOutput):
        return FileOutputs(output.path)
    corrected, held, dlq = shadow_topics(config, output.prefix)
    specs = [
        TopicSpec(corrected, partitions, {"cleanup.policy": "compact,delete"}),
        TopicSpec(held, partitions, {"cleanup.policy": "compact,delete"}),
        TopicSpec(dlq, partitions),
    ]
    assert config.bootstrap_servers
    create_topics(config.bootstrap_servers, specs, **config.security.kafka_kwargs())
    topics = OutputTopics(corrected, held, dlq)
    return TopicOutputs(clients.bulk_producer(config), topics, codec, collect=True)


def _close_outputs(outputs: TopicOutputs | FileOutputs) -> None:
    if isinstance(outputs, FileOutputs):
        outputs.close()
        return
    try:
        outputs.producer.flush(timeout=120)
    finally:
        outputs.producer.close(timeout=10)
    if outputs.failed:
        first = outputs.failed[0]
        raise ReplayError(
            f"{len(outputs.failed)} shadow records were not written "
            f"(first: {type(first).__name__}: {first}); the shadow topics are incomplete"
        )


def _codec_for(options: ReplayOptions) -> Codec:
    """Over the schema registry when one is configured: shadow topics get their own subjects
    (`<prefix>charges.corrected-value`, ...); the input is not checked (history may hold
    older schemas, each decoded by its id)."""
    writes: dict[str, str] = {}
    if isinstance(options.output, TopicsOutput):
        corrected, held, dlq = shadow_topics(options.config, options.output.prefix)
        writes = OutputTopics(corrected, held, dlq).schemas()
    return codec_for(options.config, writes=writes)


def _check_paths(options: ReplayOptions) -> None:
    output, diff_out = options.output, options.diff_out if options.diff else None
    if not options.config.bootstrap_servers:
        raise ValueError("replay needs --bootstrap-servers (the cluster holding the topic)")
    if isinstance(output, TopicsOutput):
        shadow_topics(options.config, output.prefix)  # refuses a prefix onto live topics
    elif diff_out is not None and diff_out.resolve() == output.path.resolve():
        raise ValueError("--diff-out and the decisions file are the same path")


def _describe(options: ReplayOptions) -> str:
    output = options.output
    if isinstance(output, TopicsOutput):
        return f"topics:{output.prefix}"
    return f"file:{output.path}"


def run_replay(
    options: ReplayOptions, *, codec: Codec | None = None, stderr: IO[str] | None = None
) -> ReplayReport:
    """Replay the range of `options`; the report says what was read, decided and changed."""
    began = time.monotonic()
    _check_paths(options)
    config = options.config
    stream = stderr or sys.stderr
    own_codec = codec is None
    codec = codec or _codec_for(options)
    report = ReplayReport(topic=options.source_topic, output=_describe(options))
    report.warmup = options.warmup is not None
    enabled = stream.isatty() if options.progress is None else options.progress
    try:
        replayer = _replay(options, codec, report, Progress(enabled, stream))
        if options.diff:
            topics = [config.corrected_topic, config.held_topic]
            live, _ = latest_decisions(config, topics, codec)
            report.diff = diff_decisions(live, replayer.sensor.latest)
            if options.diff_out is not None:
                write_diff(report.diff, options.diff_out)
    finally:
        if own_codec:
            codec.close()
    report.seconds = time.monotonic() - began
    return report


def _replay(
    options: ReplayOptions, codec: Codec, report: ReplayReport, progress: Progress
) -> _Replayer:
    """Scan, warm up and replay the planned ranges into the outputs."""
    consumer = clients.reader(
        options.config,
        "replay",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    outputs: TopicOutputs | FileOutputs | None = None
    schema_wait = SchemaWait(options.config.schema_registry_outage_s)
    try:
        schema_wait.open(codec)  # with a schema registry: the shadow topics' ids, once
        ranges = plan_ranges(options, consumer)
        report.ranges = ranges
        report.started_at_beginning = all(r.context_start == r.log_start for r in ranges)
        outputs = _open_outputs(options, codec, len(ranges))
        replayer = _Replayer(options, codec, len(ranges), report)
        settle_collector()  # the packs are loaded (see collector.py)
        phases = _Phases(consumer, options, replayer, progress, schema_wait)
        if any(r.records for r in ranges):  # nothing replayed: no partial visit to find
            report.scanned_records = phases.run(
                "scan", {r.partition: (r.log_start, r.context_start) for r in ranges}, None
            )
        report.warmup_records = phases.run(
            "warmup", {r.partition: (r.context_start, r.start) for r in ranges}, NullOutputs()
        )
        replay_began = time.monotonic()
        replayer.start_emitting()
        report.records = phases.run(
            "replay", {r.partition: (r.start, r.end) for r in ranges}, outputs
        )
        finished, outputs = outputs, None
        _close_outputs(finished)
        report.replay_seconds = time.monotonic() - replay_began
        report.final_by_status = Counter(d.status.value for d in replayer.sensor.latest.values())
    finally:
        if outputs is not None:
            with contextlib.suppress(Exception):
                _close_outputs(outputs)
        consumer.close(autocommit=False)
    return replayer


class _Phases:
    """Reads one phase's ranges partition by partition, in partition order (determinism)."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        options: ReplayOptions,
        replayer: _Replayer,
        progress: Progress,
        schema_wait: SchemaWait,
    ) -> None:
        self.consumer = consumer
        self.schema_wait = schema_wait
        self.topic = options.source_topic
        self.stall_timeout_s = options.stall_timeout_s
        self.replayer = replayer
        self.progress = progress

    def run(self, name: str, bounds: dict[int, tuple[int, int]], outputs: Outputs | None) -> int:
        """Fold (or, with no outputs, scan) each partition's [lo, hi); the records read."""
        todo = {p: hi - lo for p, (lo, hi) in bounds.items() if hi > lo}
        if not todo:
            return 0
        self.progress.start(name, todo)
        read, current = 0, -1
        with read_ahead(self._batches(bounds, sorted(todo)), _READ_AHEAD) as batches:
            for p, batch in batches:
                if p != current:
                    current = p
                    self.progress.begin_partition(p)
                    self.replayer.focus(p)
                read += self._take(p, batch, outputs)
        return read

    def _take(self, p: int, batch: list[Record] | None, outputs: Outputs | None) -> int:
        """Fold or scan one batch of partition `p` (None: `p` is read); the records it held."""
        if batch is None:
            if outputs is not None:
                self.replayer.emit(outputs)
            self.progress.finish_partition(p)
            return 0
        # New schema ids fetched before the batch is decided: a silent registry is waited
        # for (bounded), never a reason to dead-letter (processing.schema_wait).
        values = [r.value for r in batch]
        while not self.schema_wait.fetched(self.replayer.codec, values):
            pass
        if outputs is None:
            self.replayer.scan(batch)
        else:
            self.replayer.fold(batch, outputs)
        self.progress.advance(p, len(batch))
        return len(batch)

    def _batches(
        self, bounds: dict[int, tuple[int, int]], partitions: list[int]
    ) -> Iterator[tuple[int, list[Record] | None]]:
        """Each partition's batches in offset order, then (partition, None) once it is read."""
        for p in partitions:
            lo, hi = bounds[p]
            tp = TopicPartition(self.topic, p)
            for _, batch in read_ranges(
                self.consumer,
                {tp: lo},
                {tp: hi},
                stall_timeout_s=self.stall_timeout_s,
                max_records=_POLL_RECORDS,
            ):
                yield p, batch
            yield p, None
