"""The streaming worker: charge events in, versioned decisions out, exactly once (DESIGN §1, §5).

One loop: poll a batch, fold each event into its partition's visit state, publish the decisions
that changed, write the touched visits to the changelog, and commit outputs, changelog and
consumed offsets in one transaction. Any failure inside a batch aborts it and restarts the
instance (new clients, state restored from the changelog), as Kafka Streams does with a
corrupted task: the in-memory state is never trusted past an aborted transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from rules.model import ChargeDecision, ChargeEvent, DecisionSource, ErrorKind
from rules.pack import PackSet, load_packs
from rules.visit import Ledger, Publication
from worker.assignor import CopartitionedCooperativeStickyAssignor
from worker.config import Guarantee, WorkerConfig
from worker.logs import describe_error, fields
from worker.metrics import Health, Metrics
from worker.serde import Codec, UndecidableRecord, dead_letter_for
from worker.state import (
    LayoutChanged,
    PartitionState,
    home_partition,
    is_committed,
    offset_headers,
    record_time,
)

log = logging.getLogger("charge_capture.worker")
T = TypeVar("T")
HELD_SCAN_INTERVAL_S = 15.0  # the scan walks all visits: a gauge need not be fresher


def error_text(error: BaseException) -> str:
    """An exception as log lines may show it: Kafka's and our own errors name no record data."""
    return describe_error(error, KafkaError, UndecidableRecord, CallDeadlineExceeded)


class InstanceRestart(Exception):
    """Drop clients and state, rejoin the group and restore: the batch did not commit."""


class CallDeadlineExceeded(Exception):
    """A transactional call did not return in time: the instance fails loudly."""


class RecordFailed(Exception):
    """Deciding one input record raised something no check foresaw (a bug, or data nobody
    expected): the batch aborts, and the record is dead-lettered when it is read again."""

    def __init__(self, where: tuple[str, int, int], cause: Exception) -> None:
        topic, partition, offset = where
        super().__init__(f"record {topic}[{partition}] offset {offset}: {error_text(cause)}")
        self.where = where
        self.cause = cause


class StateCorrupt(Exception):
    """A changelog record that does not restore: no restart can fix it; the process stops."""


class TopicLayoutError(Exception):
    """The input, repartition and changelog topics are missing or not co-partitioned: no
    restart can fix that, so the process stops with the reason."""


def with_deadline(call: Callable[[], T], seconds: float, what: str) -> T:
    """Run a blocking client call that has no timeout of its own, under a deadline."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"deadline:{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CallDeadlineExceeded(f"{what} did not return within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


@dataclass
class _Batch:
    """Where one polled batch ends, per input partition (next offsets to consume)."""

    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    events: int = 0


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
        packs: PackSet | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self.packs = packs or load_packs(config.rules_dir)
        self.codec = codec or Codec()
        self.states: dict[int, PartitionState] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.restarts = 0
        # Input records whose decision raised, by (topic, partition, offset): dead-lettered
        # on redelivery. Kept across in-process restarts, which are what redeliver them.
        self._failed_records: dict[tuple[str, int, int], str] = {}
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._restorer: KafkaConsumer | None = None
        self._joined = False
        # Assigned partition numbers waiting for restoration by the poll loop: rebalance
        # callbacks run on kafka-python's IO thread, where no blocking call is allowed.
        self._to_restore: set[int] = set()
        self._next_held_scan = 0.0

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.config.input_topic, self.config.repartition_topic)

    @property
    def exactly_once(self) -> bool:
        return self.config.processing_guarantee == Guarantee.EXACTLY_ONCE

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set, restarting the instance after a failed batch."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self._session(stop)
                return
            except (InstanceRestart, KafkaError) as reason:
                # A broker that is down or a group that failed is not this process's fault:
                # start over with fresh clients rather than exit.
                self.restarts += 1
                log.warning(
                    "instance restart", extra=fields(reason=str(reason), restarts=self.restarts)
                )
                # Backoff keeps a broker outage from turning into a tight reconnect loop.
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _session(self, stop: threading.Event) -> None:
        self.health.set_ready(False, "starting")
        try:
            self._open_clients()  # inside: a half-opened set of clients is closed too
            consumer = self._consumer
            assert consumer is not None
            self._check_topic_layout(consumer)
            consumer.subscribe(list(self.inputs), listener=_Listener(self))
            while not stop.is_set():
                self.health.mark_loop_alive()
                records = consumer.poll(
                    timeout_ms=self.config.commit_interval_ms,
                    max_records=self.config.max_poll_records,
                )
                if self._to_restore:
                    self._restore_pending()
                if records:
                    self._process_batch(records)
                self._update_gauges()
        finally:
            self._close_clients()

    def _check_topic_layout(self, consumer: KafkaConsumer) -> None:
        """Partition p of the input, the repartition and the changelog topic hold one state
        store; with other counts some patients would never be assigned or restored."""
        names = (*self.inputs, self.config.changelog_topic)
        counts = {name: len(consumer.partitions_for_topic(name) or ()) for name in names}
        if 0 in counts.values() or len(set(counts.values())) != 1:
            raise TopicLayoutError(
                "topics must exist with one partition count (run `charge-capture topics`): "
                + ", ".join(f"{name}={n}" for name, n in counts.items())
            )

    def _kafka_common(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.config.bootstrap_servers,
            "client_id": f"{self.config.app_id}-{self.config.instance_id}",
            **self.config.security.kafka_kwargs(),
        }

    def _open_clients(self) -> None:
        cfg = self.config
        isolation = "read_committed" if self.exactly_once else "read_uncommitted"
        self._consumer = KafkaConsumer(
            **self._kafka_common(),
            group_id=cfg.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation,
            partition_assignment_strategy=(CopartitionedCooperativeStickyAssignor,),
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_records=cfg.max_poll_records,
            # Tansu holds a fetch for the full wait even when data arrives: keep it within the
            # commit interval so an idle-then-busy partition is not half a second late.
            fetch_max_wait_ms=max(cfg.commit_interval_ms, 10),
        )
        # No compression by default: kafka-python compresses in Python on its sender thread,
        # which competes with decisions for the GIL (measured slower on a local broker).
        producer_options: dict[str, Any] = {
            "acks": "all",
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "compression_type": cfg.compression_type,
        }
        if self.exactly_once:
            producer_options.update(
                transactional_id=cfg.transactional_id,
                transaction_timeout_ms=cfg.transaction_timeout_ms,
            )
        else:
            producer_options.update(enable_idempotence=True)
        self._producer = KafkaProducer(**self._kafka_common(), **producer_options)
        if self.exactly_once:
            # Fences this instance's previous incarnation and aborts its open transaction.
            with_deadline(self._producer.init_transactions, cfg.call_deadline_s, "init_txn")
        self._restorer = KafkaConsumer(
            **self._kafka_common(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level=isolation,
        )
        log.info(
            "worker started",
            extra=fields(
                group=cfg.group,
                transactional_id=cfg.transactional_id if self.exactly_once else None,
                guarantee=cfg.processing_guarantee.value,
            ),
        )

    def _close_clients(self) -> None:
        self.health.set_ready(False, "stopping")
        for client in (self._consumer, self._restorer):
            if client is not None:
                try:
                    client.close(autocommit=False)
                except Exception:  # closing after a failure: nothing more to do
                    log.debug("consumer close failed", exc_info=True)
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:
                log.debug("producer close failed", exc_info=True)
        self._consumer = self._producer = self._restorer = None
        # Partitions still waiting for restoration belonged to the closed consumer (a restore
        # that timed out): left here, the next session would restore them before it is
        # assigned anything, resume() them (KeyError: not assigned) and treat them as
        # restored when they are assigned again, with state as of the old committed offsets.
        self._to_restore.clear()
        self._drop_partitions(list(self.states))
        self._joined = False
        # Last: closing the consumer runs the revocation callback, which sets readiness.
        self.health.set_ready(False, "stopped")

    # -- rebalance ---------------------------------------------------------------------------

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        """IO thread: pause the new partitions until the loop has restored their state."""
        self._joined = True
        self.metrics.rebalances.labels(kind="assigned").inc()
        new = {tp.partition for tp in partitions} - set(self.states)
        if new:
            assert self._consumer is not None
            self._consumer.pause(*[tp for tp in partitions if tp.partition in new])
            self._to_restore |= new
        self._set_ready()

    def on_revoked(self, partitions: Iterable[TopicPartition], *, lost: bool = False) -> None:
        # The loop never polls with a transaction open, so there is nothing to finish here.
        self.metrics.rebalances.labels(kind="lost" if lost else "revoked").inc()
        numbers = sorted({tp.partition for tp in partitions})
        self._to_restore.difference_update(numbers)
        self._drop_partitions(numbers)
        self._set_ready()

    def _restore_pending(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        numbers = sorted(self._to_restore)
        try:
            self._restore(numbers)
        except KafkaError as error:  # e.g. a broker blip while reading committed offsets
            raise InstanceRestart(f"restore of {numbers} failed: {error_text(error)}") from error
        self._to_restore.difference_update(numbers)
        consumer.resume(*[TopicPartition(t, n) for t in self.inputs for n in numbers])
        self._set_ready()

    def _set_ready(self) -> None:
        count = len(self.states)
        self.metrics.partitions_assigned.set(count)
        if self._to_restore:
            self.health.set_ready(False, f"restoring {len(self._to_restore)} partition(s)")
        else:
            # No partitions is ready too: a spare replica has nothing to restore.
            self.health.set_ready(self._joined, f"consuming {count} partition(s)")

    def _drop_partitions(self, numbers: list[int]) -> None:
        for number in numbers:
            self.states.pop(number, None)
            for topic in self.inputs:
                self.committed.pop(TopicPartition(topic, number), None)
        self.metrics.forget_partitions((t, n) for t in self.inputs for n in numbers)

    def _restore(self, numbers: list[int]) -> None:
        """Rebuild state of `numbers` from the changelog, skipping uncommitted work."""
        consumer, restorer = self._consumer, self._restorer
        assert consumer is not None and restorer is not None
        started = time.monotonic()
        committed: dict[int, dict[str, int]] = {}
        for number in numbers:
            committed[number] = {}
            for topic in self.inputs:
                tp = TopicPartition(topic, number)
                offset = consumer.committed(tp) or 0
                committed[number][topic] = offset
                self.committed[tp] = offset
        partitions = len(consumer.partitions_for_topic(self.config.input_topic) or ())
        states = {n: self.config.new_state(n, partitions) for n in numbers}
        tps = [TopicPartition(self.config.changelog_topic, n) for n in numbers]
        restorer.assign(tps)
        restorer.seek_to_beginning(*tps)
        pending, restored = set(tps), 0
        deadline = started + max(120.0, 3 * self.config.transaction_timeout_ms / 1000)
        while pending:
            for tp, records in restorer.poll(timeout_ms=200, max_records=5000).items():
                for record in records:
                    if is_committed(record.headers or [], committed[tp.partition]):
                        _restore_record(states[tp.partition], record)
                        restored += 1
            # End of the changelog is the highwater seen on a fetch, not ListOffsets (Tansu).
            for tp in list(pending):
                highwater = restorer.highwater(tp)
                if highwater is not None and restorer.position(tp) >= highwater:
                    pending.discard(tp)
            self.health.mark_loop_alive()
            if time.monotonic() > deadline:
                raise InstanceRestart(f"changelog restore of {sorted(numbers)} timed out")
        restorer.assign([])
        self.states.update(states)
        seconds = time.monotonic() - started
        self.metrics.restore_seconds.observe(seconds)
        self.metrics.restore_records.inc(restored)
        log.info(
            "state restored",
            extra=fields(
                partitions=numbers,
                records=restored,
                visits=sum(len(s.book.visits) for s in states.values()),
                seconds=round(seconds, 3),
            ),
        )

    # -- processing --------------------------------------------------------------------------

    def _process_batch(self, records: dict[TopicPartition, list[Any]]) -> None:
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        started = time.monotonic()
        batch = _Batch()
        try:
            if self.exactly_once:
                producer.begin_transaction()
            for tp, partition_records in records.items():
                state = self.states.get(tp.partition)
                if state is None or tp.partition in self._to_restore:
                    # Not restored (or revoked meanwhile): read these again once it is.
                    consumer.seek(tp, partition_records[0].offset)
                    continue
                partitions = len(consumer.partitions_for_topic(tp.topic) or ())
                for record in partition_records:
                    self._process_record(record, state, partitions)
                    batch.events += 1
                batch.next_offsets[tp] = partition_records[-1].offset + 1
                self.metrics.events_consumed.labels(topic=tp.topic).inc(len(partition_records))
            self._write_changelog(batch)
            self._commit(batch)
        except CallDeadlineExceeded:
            raise
        except Exception as error:
            if isinstance(error, RecordFailed):
                # The state it may have half-changed goes with the restart; the record itself
                # is dead-lettered when it comes round again instead of failing every time.
                self._failed_records[error.where] = error_text(error.cause)
            self._abort(error)
            raise InstanceRestart(f"batch failed: {error_text(error)}") from error
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self.metrics.last_progress.set(time.time())

    def _process_record(self, record: Any, state: PartitionState, partitions: int) -> None:
        where = (record.topic, record.partition, record.offset)
        failure = self._failed_records.pop(where, None)
        if failure is not None:
            # Deciding it raised last time and would again: dead-letter it and move on.
            self._dead_letter(record, ErrorKind.VALIDATION, f"deciding it failed: {failure}")
            return
        try:
            event = self.codec.decode_event(record.value)
            patient = event.patient_id.encode()
            home = home_partition(patient, partitions, self.config.input_partitioner)
            misplaced = record.key != patient or record.partition != home
            publications = [] if misplaced else self._decide(record, event, state)
        except UndecidableRecord as bad:
            self._dead_letter(record, bad.kind, bad.message)
            return
        except Exception as error:  # sends happen below: nothing in here talks to Kafka
            raise RecordFailed(where, error) from error
        if misplaced:
            self._rekey(record, patient, home)
        for publication in publications:
            self._publish(publication.ledger, publication.decision, event)

    def _decide(self, record: Any, event: ChargeEvent, state: PartitionState) -> list[Publication]:
        source = DecisionSource(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=event.event_id,
        )
        return state.decide(
            event,
            source,
            self.packs,
            record_time=record_time(record),
            rekeyed=record.topic == self.config.repartition_topic,
        )

    def _rekey(self, record: Any, patient: bytes, home: int) -> None:
        """Send an event to its patient's partition through the repartition topic (DESIGN §5).

        Covers events keyed by something else and events keyed by the patient but not on its
        partition under `--input-partitioner` (an explicit partition, a mixed producer)."""
        assert self._producer is not None
        if record.topic == self.config.repartition_topic:
            message = "record on the repartition topic is not keyed by, or placed for, its patient"
            self._dead_letter(record, ErrorKind.REPARTITION, message)
            return
        # Same transaction: the re-keyed copy and this record's offset commit together. The
        # copy keeps the record's timestamp, so it means the same wherever it is read.
        self._producer.send(
            self.config.repartition_topic,
            key=patient,
            value=record.value,
            partition=home,
            timestamp_ms=record.timestamp if record.timestamp >= 0 else None,
        )
        log.debug("re-keyed", extra=fields(offset=record.offset))

    def _publish(self, ledger: Ledger, decision: ChargeDecision, event: ChargeEvent) -> None:
        assert self._producer is not None
        topic = self.config.held_topic if ledger is Ledger.REVIEW else self.config.corrected_topic
        self._producer.send(
            topic, key=decision.charge_id.encode(), value=self.codec.encode_decision(decision)
        )
        metrics = self.metrics
        metrics.decisions.labels(status=decision.status.value).inc()
        if decision.status not in ("RETRACTED", "VOIDED"):
            for correction in decision.corrections:
                metrics.corrections.labels(rule_id=correction.rule_id).inc()
            for hold in decision.holds:
                metrics.holds.labels(rule_id=hold.rule_id).inc()
        lag = (dt.datetime.now(dt.UTC) - event.occurred_at).total_seconds()
        metrics.event_to_decision_seconds.observe(max(lag, 0.0))

    def _dead_letter(self, record: Any, kind: ErrorKind, message: str) -> None:
        assert self._producer is not None
        letter = dead_letter_for(record, kind, message)
        self._producer.send(
            self.config.dlq_topic, key=record.key, value=self.codec.encode_dead_letter(letter)
        )
        self.metrics.dlq_records.labels(error_kind=kind.value).inc()
        log.warning(
            "dead-lettered",
            extra=fields(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error_kind=kind.value,
                error=message,
            ),
        )

    def _write_changelog(self, batch: _Batch) -> None:
        assert self._producer is not None
        last_offsets: dict[int, dict[str, int]] = {}
        for tp, next_offset in batch.next_offsets.items():
            last_offsets.setdefault(tp.partition, {})[tp.topic] = next_offset - 1
        for number, offsets in last_offsets.items():
            state = self.states[number]
            state.sweep()
            headers = offset_headers(offsets)
            for write in state.take_writes():
                self._producer.send(
                    self.config.changelog_topic,
                    key=write.key,
                    value=write.value,
                    partition=number,
                    headers=headers,
                )

    def _commit(self, batch: _Batch) -> None:
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        deadline = self.config.call_deadline_s
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in batch.next_offsets.items()}
        if self.exactly_once:
            metadata = consumer.group_metadata()
            with_deadline(
                lambda: producer.send_offsets_to_transaction(offsets, metadata),
                deadline,
                "send_offsets_to_transaction",
            )
            with_deadline(producer.commit_transaction, deadline, "commit_transaction")
        else:
            with_deadline(producer.flush, deadline, "flush")
            consumer.commit(offsets)
        self.metrics.transactions.labels(outcome="committed").inc()
        self.committed.update(batch.next_offsets)

    def _abort(self, error: Exception) -> None:
        log.error("batch failed; aborting", extra=fields(error=error_text(error)))
        self.metrics.transactions.labels(outcome="aborted").inc()
        producer = self._producer
        if producer is None or not self.exactly_once:
            return
        try:
            with_deadline(producer.abort_transaction, self.config.call_deadline_s, "abort")
        except Exception as failure:
            # Fenced or broken: the transaction dies with the producer (the broker aborts it
            # at transaction.timeout.ms); the restart below builds fresh clients.
            log.warning("abort failed", extra=fields(error=error_text(failure)))

    # -- gauges ------------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        now = time.monotonic()
        if now >= self._next_held_scan:
            self._next_held_scan = now + HELD_SCAN_INTERVAL_S
            self.metrics.oldest_held_age.set(self._oldest_held_age())
        visits = 0
        for number, state in self.states.items():
            visits += len(state.book.visits)
            for topic in self.inputs:
                tp = TopicPartition(topic, number)
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    done = max(self.committed.get(tp, 0), _fetch_position(consumer, tp))
                    lag = max(highwater - done, 0)
                    self.metrics.consumer_lag.labels(topic=topic, partition=str(number)).set(lag)
        self.metrics.state_visits.set(visits)

    def _oldest_held_age(self) -> float:
        """Event-time age of the oldest charge now HELD: partition watermark minus the
        occurred_at of the held line. Event time, so a replayed backlog reads honestly."""
        oldest = 0.0
        for state in self.states.values():
            if state.watermark is None:
                continue
            for visit in state.book.visits.values():
                for charge_id, published in visit.published.items():
                    if published.status == "HELD" and charge_id in visit.charges:
                        held_since = visit.charges[charge_id].occurred_at
                        oldest = max(oldest, (state.watermark - held_since).total_seconds())
        return oldest

    def caught_up(self) -> bool:
        """All assigned input partitions committed up to the highwater seen on a fetch."""
        consumer = self._consumer
        if consumer is None or not self.states:
            return False
        for number in self.states:
            tp = TopicPartition(self.config.input_topic, number)
            highwater = consumer.highwater(tp)
            if highwater is None or self.committed.get(tp, 0) < highwater:
                return False
        return True


def _restore_record(state: PartitionState, record: Any) -> None:
    try:
        state.restore(record.key, record.value)
    except LayoutChanged as changed:
        raise TopicLayoutError(str(changed)) from changed
    except Exception as error:
        # Skipping it would decide on partial state and reuse decision versions: stop, with
        # where and what (the record's text may hold PHI, so only the error's type).
        raise StateCorrupt(
            f"changelog {record.topic}[{record.partition}] offset {record.offset} does not "
            f"restore: {error_text(error)}"
        ) from error


def _fetch_position(consumer: KafkaConsumer, tp: TopicPartition) -> int:
    """The consumer's fetch position, read from its subscription state.

    Between batches every record up to it is committed, and it has stepped over transaction
    markers that the committed offset (last record + 1) stops short of: on a transactional
    topic lag would otherwise never reach 0. `position()` itself may make a coordinator round
    trip, so the (kafka-python internal) state is read directly; 0 when it is unknown.
    """
    state = getattr(consumer, "_subscription", None)
    assigned = state.assignment.get(tp) if state is not None else None
    position = getattr(assigned, "position", None)
    return int(position.offset) if position is not None else 0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.worker.on_assigned(assigned)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        self.worker.on_revoked(lost, lost=True)
