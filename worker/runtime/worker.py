"""The streaming worker: charge events in, versioned decisions out, exactly once.

One loop: poll a batch, decide each record through the processing path
(worker.processing.pipeline), write the touched visits to the changelog, and commit outputs,
changelog and consumed offsets in one transaction (worker.runtime.checkpoint). Any failure
inside a batch aborts it and restarts the instance (new clients, state restored from the
changelog: worker.runtime.recovery), as Kafka Streams does with a corrupted task: the
in-memory state is never trusted past an aborted transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from rules.pack import PackSet, load_packs
from worker.config import Guarantee, WorkerConfig
from worker.errors import FatalError, InstanceRestart, RecordFailed, TopicLayoutError
from worker.kafka import clients
from worker.kafka.deadlines import with_deadline
from worker.observability.health import Health
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics, PrometheusSensor
from worker.processing.outputs import OutputTopics, TopicOutputs
from worker.processing.pipeline import Processor
from worker.processing.schema_wait import SchemaWait
from worker.runtime.checkpoint import Checkpoint
from worker.runtime.gauges import Gauges
from worker.runtime.recovery import Recovery
from worker.serde.codec import Codec
from worker.serde.registry_source import codec_for
from worker.state.store import PartitionState

log = logging.getLogger("charge_capture.worker")


@dataclass
class _Clients:
    consumer: KafkaConsumer
    producer: KafkaProducer
    restorer: KafkaConsumer
    outputs: TopicOutputs  # through `producer`, inside its transactions


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
        # A schema registry that does not answer: wait, readiness false (the recovery's own
        # readiness again once it answers), exit 69 past the limit.
        self.schema_wait = SchemaWait(
            config.schema_registry_outage_s, self.health, self.recovery.set_ready
        )
        self.gauges = Gauges(self.metrics, self.inputs)
        self.restarts = 0
        self._clients: _Clients | None = None
        self._open: Checkpoint | None = None  # the batch being decided, not yet committed
        self.recovery.on_drop = self._revoked

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """The committed offset of each owned input partition, as of the last commit."""
        return self.recovery.committed

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.config.input_topic, self.config.repartition_topic)

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set, restarting the instance after a failed batch."""
        # Schema ids of the outputs resolved and the input's schema checked once, before any
        # client opens (a no-op without a schema registry).
        if not self.schema_wait.open(self.codec, stop):
            return
        backoff = 0.5
        while not stop.is_set():
            try:
                self._session(stop)
                return
            except FatalError:
                raise
            except (InstanceRestart, KafkaError) as reason:
                # A broker that is down or a group that failed is not this process's fault:
                # start over with fresh clients rather than exit.
                self.restarts += 1
                log.warning(
                    "instance restart",
                    extra=fields(reason=describe_error(reason), restarts=self.restarts),
                )
                # Backoff keeps a broker outage from turning into a tight reconnect loop.
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _session(self, stop: threading.Event) -> None:
        self.health.set_ready(False, "starting")
        try:
            self._clients = self._open_clients()  # a half-opened set is closed inside
            consumer = self._clients.consumer
            self._check_topic_layout(consumer)
            listener = self.recovery.attach(consumer, self._clients.restorer)
            consumer.subscribe(list(self.inputs), listener=listener)
            while not stop.is_set():
                self.health.mark_loop_alive()
                records = consumer.poll(
                    timeout_ms=self._poll_timeout_ms(), max_records=self.config.max_poll_records
                )
                self.recovery.restore_pending()
                if records:
                    self._process(records)
                if self._open is not None and self._open.due():
                    self._checkpoint()
                self.gauges.update(consumer, self.states, self.recovery.committed)
            if self._open is not None:  # stopping: commit what is decided
                self._checkpoint()
        finally:
            self._open = None
            self._close_clients()

    def _poll_timeout_ms(self) -> int:
        """Idle: one commit interval; with a batch open: until its checkpoint is due."""
        if self._open is None:
            return self.config.commit_interval_ms
        return max(int(self._open.seconds_left() * 1000), 0)

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

    def _open_clients(self) -> _Clients:
        cfg = self.config
        opened: list[Any] = []
        try:
            consumer = clients.group_consumer(cfg)
            opened.append(consumer)
            producer = clients.worker_producer(cfg)
            opened.append(producer)
            if cfg.processing_guarantee == Guarantee.EXACTLY_ONCE:
                # Fences this instance's previous incarnation and aborts its open transaction.
                with_deadline(producer.init_transactions, cfg.call_deadline_s, "init_txn")
            restorer = clients.reader(
                cfg, f"{cfg.instance_id}-restore", isolation_level=clients.isolation(cfg)
            )
        except BaseException:
            for client in opened:
                _close(client)
            raise
        log.info(
            "worker started",
            extra=fields(
                group=cfg.group,
                transactional_id=cfg.transactional_id
                if cfg.processing_guarantee == Guarantee.EXACTLY_ONCE
                else None,
                guarantee=cfg.processing_guarantee.value,
            ),
        )
        outputs = TopicOutputs(producer, OutputTopics.live(cfg), self.codec, collect=False)
        return _Clients(consumer, producer, restorer, outputs)

    def _close_clients(self) -> None:
        self.health.set_ready(False, "stopping")
        opened, self._clients = self._clients, None
        if opened is not None:
            for client in (opened.consumer, opened.restorer, opened.producer):
                _close(client)
        self.recovery.detach()
        # Last: closing the consumer runs the revocation callback, which sets readiness.
        self.health.set_ready(False, "stopped")

    # -- processing --------------------------------------------------------------------------

    def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Decide one poll's records into the open batch (opening one if none is)."""
        opened = self._clients
        assert opened is not None
        consumer = opened.consumer
        # A schema registry that does not answer is no record's fault: the poll's new schema
        # ids are fetched before anything of it is decided, and when the registry is silent
        # these records are read again after a wait (worker.processing.schema_wait).
        if not self.schema_wait.fetched(self.codec, (r.value for b in records.values() for r in b)):
            for tp, partition_records in records.items():
                consumer.seek(tp, partition_records[0].offset)
            return
        if self._open is None:
            self._open = Checkpoint(self.config, opened.producer, consumer, self.metrics)
        checkpoint = self._open
        try:
            for tp, partition_records in records.items():
                if not self.recovery.is_ready_to_process(tp.partition):
                    # Not restored (or revoked meanwhile): read these again once it is.
                    consumer.seek(tp, partition_records[0].offset)
                    continue
                partitions = len(consumer.partitions_for_topic(tp.topic) or ())
                for record in partition_records:
                    self.processor.process(record, partitions, checkpoint.batch)
                checkpoint.consumed(tp, partition_records[-1].offset)
                self.processor.sensor.consumed(tp.topic, len(partition_records))
        except RecordFailed as failed:
            # The state it may have half-changed goes with the restart (no transaction is open
            # yet: nothing was sent); the record itself is dead-lettered when it comes round
            # again instead of failing every time.
            self.processor.failed[failed.where] = failed.cause
            self._open = None
            raise InstanceRestart(f"batch failed: {failed}") from failed

    def _checkpoint(self) -> None:
        checkpoint, self._open = self._open, None
        assert checkpoint is not None and self._clients is not None
        try:
            checkpoint.run(self.processor, self._clients.outputs, self.states)
        except FatalError:
            raise
        except Exception as error:
            checkpoint.abort(error)
            raise InstanceRestart(f"batch failed: {describe_error(error)}") from error
        self.recovery.committed.update(checkpoint.next_offsets)
        self.metrics.batch_seconds.observe(time.monotonic() - checkpoint.started)
        self.metrics.last_progress.set(time.time())

    def _revoked(self, numbers: list[int]) -> None:
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


def _close(client: KafkaConsumer | KafkaProducer) -> None:
    try:
        if isinstance(client, KafkaProducer):
            client.close(timeout=5)
        else:
            client.close(autocommit=False)
    except Exception:  # closing after a failure: nothing more to do
        log.debug("client close failed", exc_info=True)
