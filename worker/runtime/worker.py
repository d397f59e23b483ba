"""The streaming worker: charge events in, versioned decisions out, exactly once.

One loop: poll, decide each record through the processing path (worker.processing.pipeline)
into the open batch within a time budget, and at the commit interval write the batch's outputs
and touched visits and commit them with the consumed offsets in one transaction
(worker.runtime.checkpoint). The in-memory state is never trusted past a transaction that did
not commit; what happens instead depends on why (docs/operations.md):

- a record that cannot be decided, or whose outputs the broker refuses (too large): the batch
  aborts, its partitions are rewound (state restored from the changelog, the consumer back at
  the committed offsets) and the record is dead-lettered when it comes round again;
- a transactional call past its deadline, or a transaction older than transaction.timeout.ms
  (a broker outage in mid-commit): the producer is abandoned, a new one with the same
  transactional.id fences it, and every owned partition is rewound; the consumer stays in the
  group;
- no broker answers: waited out with readiness false, up to --max-broker-outage (exit 69);
- a schema registry that does not answer: the poll's records are read again after a wait;
- a fenced producer (another instance with this transactional.id), a batch that keeps failing,
  clients that cannot be opened: the instance restarts (new clients, rejoin) with a backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

import rules
from rules.pack import PackSet, load_packs
from worker.config import WorkerConfig
from worker.errors import (
    CallDeadlineExceeded,
    FatalError,
    InstanceRestart,
    Stopping,
)
from worker.kafka import clients, reach
from worker.observability.health import Health
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics, PrometheusSensor
from worker.processing.collector import settle_collector
from worker.processing.outputs import OutputTopics, TopicOutputs
from worker.processing.pipeline import Processor
from worker.processing.schema_wait import SchemaWait
from worker.runtime.checkpoint import Checkpoint
from worker.runtime.failures import BatchFailures, restart_reason
from worker.runtime.gauges import Gauges
from worker.runtime.outage import Outage
from worker.runtime.poll_budget import PollBudget
from worker.runtime.recovery import Recovery
from worker.runtime.startup import await_brokers, await_topics
from worker.runtime.transactor import Transactor
from worker.serde.codec import Codec
from worker.serde.registry_source import codec_for
from worker.state.store import PartitionState

log = logging.getLogger("charge_capture.worker")

MAX_BACKOFF_S = 10.0
# Batches that fail in a row, for no reason a record explains, before the instance restarts.


@dataclass
class _Clients:
    consumer: KafkaConsumer
    restorer: KafkaConsumer


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
        live = OutputTopics.live(config)
        self.codec = codec or codec_for(config, writes=live.schemas(), checks=[config.input_topic])
        self.states: dict[int, PartitionState] = {}
        self.processor = Processor(
            packs or load_packs(config.rules_dir),
            self.codec,
            self.states,
            partitioner=config.input_partitioner,
            repartition_topic=config.repartition_topic,
            rekey_in_process=False,
            sensor=PrometheusSensor(self.metrics),
        )
        self.recovery = Recovery(config, self.states, self.metrics, self.health)
        self.recovery.on_drop = self._dropped
        # A schema registry that does not answer: wait, readiness false (the recovery's own
        # readiness again once it answers), exit 69 past the limit.
        self.schema_wait = SchemaWait(
            config.schema_registry_outage_s, self.health, self.recovery.set_ready
        )
        self.gauges = Gauges(self.metrics, self.inputs)
        self.outage = Outage(config, self.health, self.metrics)
        self.stop = threading.Event()
        self.transactor = Transactor(config, self._tick, self.stop)
        self.restarts = 0
        self.failures = BatchFailures(
            config,
            self.transactor,
            self.recovery,
            self.outage,
            self.metrics,
            self.processor,
            self.states,
            self._count_restart,
        )
        self._clients: _Clients | None = None
        self._open: Checkpoint | None = None  # the batch being decided, not yet committed
        self.poll_budget = PollBudget(config.max_poll_records)
        self._partitions: dict[str, int] = {}  # partition counts of the output topics

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """The committed offset of each owned input partition, as of the last commit."""
        return self.recovery.committed

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.config.input_topic, self.config.repartition_topic)

    @property
    def topics(self) -> list[str]:
        """Every topic the worker reads or writes."""
        c = self.config
        return [*self.inputs, c.changelog_topic, c.corrected_topic, c.held_topic, c.dlq_topic]

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set, restarting the instance when it must start over."""
        self.stop = self.transactor.stop = stop
        # Schema ids of the outputs resolved and the input's schema checked once, before any
        # client opens (a no-op without a schema registry).
        if not self.schema_wait.open(self.codec, stop):
            return
        settle_collector()  # the packs are loaded: see collector.py for why this is safe
        backoff = 0.5
        while not stop.is_set():
            try:
                self._session(stop)
                return
            except Stopping:
                return
            except FatalError:
                raise
            except (InstanceRestart, KafkaError, CallDeadlineExceeded) as reason:
                self._count_restart(restart_reason(reason), reason, "instance restart")
                self._pause(backoff)  # no tight reconnect loop during an outage
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _count_restart(self, reason: str, error: BaseException, message: str) -> None:
        self.restarts += 1
        self.metrics.instance_restarts.labels(reason=reason).inc()
        log.warning(
            message,
            extra=fields(reason=reason, error=describe_error(error), restarts=self.restarts),
        )

    def _pause(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0 and not self.stop.wait(min(left, 0.5)):
            self.health.mark_loop_alive()
            self.outage.check()

    def _tick(self) -> None:
        """Between the slices of every wait: liveness, and whether a broker still answers."""
        self.health.mark_loop_alive()
        self.outage.observe(self._reachable())

    def _restore_tick(self) -> None:
        """Between the reads of a restore, which may take minutes: a stop ends it too."""
        self._tick()
        if self.stop.is_set():
            raise Stopping("restore abandoned: stopping")

    def _reachable(self) -> bool:
        opened = self._clients
        if opened is None:
            return False
        return reach.any_connected(opened.consumer, opened.restorer, self.transactor.producer)

    def _session(self, stop: threading.Event) -> None:
        self.health.set_ready(False, "starting")
        self.health.block("lifecycle", None)
        await_brokers(self.config, self.outage, self._wait)
        self.recovery.partitions = await_topics(
            self.config, self.topics, self.health, self.outage, self._wait
        )
        try:
            self._clients = self._open_clients()  # closed below, opened or half-opened
            consumer = self._clients.consumer
            listener = self.recovery.attach(consumer, self._clients.restorer)
            consumer.subscribe(list(self.inputs), listener=listener)
            while not stop.is_set():
                self._iterate(consumer)
            if self._open is not None:  # stopping: commit what is decided
                self._checkpoint()
        finally:
            self._open = None
            self._close_clients()

    def _iterate(self, consumer: KafkaConsumer) -> None:
        self._tick()
        if self.transactor.producer is None:
            self._reopen_producer()
        records = consumer.poll(
            timeout_ms=self._poll_timeout_ms(), max_records=self.poll_budget.records(self._open)
        )
        try:
            self.recovery.restore_pending(self._restore_tick)
        except InstanceRestart:
            if self.outage.since is None:
                raise
            # The broker went away mid-restore: the partitions stay pending, tried again.
        if records:
            self._process(records)
        if self._open is not None and self._open.due():
            self._checkpoint()
        self.gauges.update(consumer, self.states, self.recovery.committed)

    def _poll_timeout_ms(self) -> int:
        """Idle: one commit interval; with a batch open: until its checkpoint is due."""
        if self._open is None:
            return self.config.commit_interval_ms
        return max(int(self._open.seconds_left() * 1000), 0)

    # -- start-up ----------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopping("stopping")
        self.health.mark_loop_alive()
        self.outage.check()

    def _open_clients(self) -> _Clients:
        cfg = self.config
        consumer = clients.group_consumer(cfg)
        try:
            restorer = clients.restorer(cfg)
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=200)
            raise
        opened = self._clients = _Clients(consumer, restorer)
        self.transactor.open(self.topics)  # fences this instance's previous incarnation
        log.info(
            "worker started",
            extra=fields(
                group=cfg.group,
                transactional_id=cfg.transactional_id if self.transactor.exactly_once else None,
                guarantee=cfg.processing_guarantee.value,
                rules_core="compiled" if rules.compiled() else "python",
            ),
        )
        return opened

    def _reopen_producer(self) -> None:
        if not self._reachable():
            return
        try:
            self.transactor.open(self.topics)
        except (KafkaError, CallDeadlineExceeded) as error:
            log.info("producer not reopened yet", extra=fields(error=describe_error(error)))
            return
        log.info("producer reopened", extra=fields(transactional_id=self.config.transactional_id))

    def _close_clients(self) -> None:
        # First: closing the consumer runs the revocation callback, which reports readiness;
        # the blocker keeps /readyz false whatever it says.
        self.health.block("lifecycle", "stopping")
        self.health.set_ready(False, "stopping")
        opened, self._clients = self._clients, None
        self.transactor.close()
        if opened is not None:
            _close(opened.consumer, 1000)
            _close(opened.restorer, 200)
        self.recovery.detach()
        self.health.set_ready(False, "stopped")

    # -- processing --------------------------------------------------------------------------

    def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Decide one poll's records into the open batch (opening one if none is), within
        --max-batch-ms: past it the remaining records are read again by the next poll."""
        opened = self._clients
        assert opened is not None
        consumer = opened.consumer
        # A schema registry that does not answer is no record's fault: the poll's new schema
        # ids are fetched before anything of it is decided, and when the registry is silent
        # these records are read again after a wait (worker.processing.schema_wait).
        values = (r.value for b in records.values() for r in b)
        if self.transactor.producer is None or not self.schema_wait.fetched(self.codec, values):
            for tp, partition_records in records.items():
                consumer.seek(tp, partition_records[0].offset)
            return
        if self._open is None:
            self._open = Checkpoint(self.config, self.transactor, consumer, self.metrics)
        checkpoint = self._open
        began = time.monotonic()
        deadline, decided = began + self.config.max_batch_ms / 1000, 0
        try:
            for tp, partition_records in records.items():
                if not self.recovery.is_ready_to_process(tp.partition):
                    # Not restored (or revoked meanwhile): read these again once it is.
                    consumer.seek(tp, partition_records[0].offset)
                    continue
                decided += self._partition(checkpoint, tp, partition_records, deadline)
            self.poll_budget.observe(decided, time.monotonic() - began)
        except (FatalError, Stopping):
            raise
        except Exception as error:
            self._open = None
            self.failures.handle(checkpoint, error, records)

    def _partition(
        self, checkpoint: Checkpoint, tp: TopicPartition, records: list[Any], deadline: float
    ) -> int:
        """Decide `records` into the batch until `deadline`; how many it decided."""
        processor, batch, consumer = self.processor, checkpoint.batch, checkpoint.consumer
        partitions = self.recovery.partitions
        done = 0
        for record in records:
            if done and time.monotonic() > deadline:
                consumer.seek(tp, record.offset)  # over the budget: the next poll reads it
                break
            checkpoint.partitions.add(tp.partition)  # before: a failure must rewind it too
            checkpoint.sizes[(record.topic, record.partition, record.offset)] = len(
                record.value or b""
            )
            processor.process(record, partitions, batch)
            done += 1
        if done:
            checkpoint.consumed(tp, records[0].offset, records[done - 1].offset)
            processor.sensor.consumed(tp.topic, done)
        return done

    def _checkpoint(self) -> None:
        checkpoint, self._open = self._open, None
        assert checkpoint is not None
        if not checkpoint.next_offsets:  # everything it held was revoked
            return
        outputs = TopicOutputs(
            self.transactor.require(),
            OutputTopics.live(self.config),
            self.codec,
            collect=False,
            refused=checkpoint.refused,
            partitions=self._partitions,
        )
        try:
            checkpoint.run(self.processor, outputs, self.states)
        except (FatalError, Stopping):
            raise
        except Exception as error:
            self.failures.handle(checkpoint, error)
            return
        self.failures.succeeded()
        self.processor.committed(checkpoint.next_offsets)
        self.recovery.committed.update(checkpoint.next_offsets)
        self.metrics.batch_seconds.observe(time.monotonic() - checkpoint.started)
        self.metrics.last_progress.set(time.time())

    def _dropped(self, numbers: list[int]) -> None:
        """Partitions revoked or rewound: their share of the open batch goes with them."""
        if self._open is not None:
            for number in numbers:
                self._open.drop(number)

    def caught_up(self) -> bool:
        """All assigned input partitions committed up to the highwater seen on a fetch."""
        opened = self._clients
        if opened is None or not self.states:
            return False
        for number in self.states:
            tp = TopicPartition(self.config.input_topic, number)
            highwater = opened.consumer.highwater(tp)
            if highwater is None or self.recovery.committed.get(tp, 0) < highwater:
                return False
        return True


def _close(consumer: KafkaConsumer, timeout_ms: int) -> None:
    try:
        consumer.close(autocommit=False, timeout_ms=timeout_ms)
    except Exception:  # closing after a failure: nothing more to do
        log.debug("client close failed", exc_info=True)
