"""One batch as one transaction: the checkpoint of the live worker.

Records of several polls go into one batch, for up to the commit interval (100 ms by default,
as Kafka Streams under exactly-once): deciding them writes nothing to Kafka yet
(worker.processing.batch), so no transaction is open while the consumer polls. At the
checkpoint, in order (Kafka Streams' and Quix Streams' commit, made explicit):
1. begin the transaction (exactly-once);
2. outputs: each charge's latest decision (and the RETRACTED it owes), the dead letters and
   the re-keyed events;
3. changelog: every visit the batch touched, once, tombstones for expired ones, and the
   partition's metadata, each record headed with the input offsets the batch consumed;
4. offsets: the consumed offsets join the transaction (`send_offsets_to_transaction`);
5. commit, or abort on any failure before it.
Under at-least-once, 1 and 4 fall away: the producer is flushed, then the offsets committed.
Every transactional call runs under a deadline (worker.kafka.deadlines).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.config import Guarantee, WorkerConfig
from worker.kafka.deadlines import with_deadline
from worker.kafka.fast_send import FastSend
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics
from worker.processing.batch import Batch
from worker.processing.outputs import TopicOutputs
from worker.processing.pipeline import Processor
from worker.state.changelog import offset_headers
from worker.state.store import PartitionState

log = logging.getLogger("charge_capture.worker")


MAX_BATCH_RECORDS = 20_000  # a checkpoint comes sooner than the interval past this many


@dataclass
class Checkpoint:
    """An open batch: what it holds, and where it ends per input partition."""

    config: WorkerConfig
    producer: KafkaProducer
    consumer: KafkaConsumer
    metrics: Metrics
    started: float = field(default_factory=time.monotonic)
    batch: Batch = field(default_factory=Batch)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        return self.config.processing_guarantee == Guarantee.EXACTLY_ONCE

    def seconds_left(self) -> float:
        """Until the checkpoint is due (commit interval after its first record)."""
        return self.started + self.config.commit_interval_ms / 1000 - time.monotonic()

    def due(self) -> bool:
        return self.seconds_left() <= 0 or self.batch.records >= MAX_BATCH_RECORDS

    def consumed(self, tp: TopicPartition, last_offset: int) -> None:
        self.next_offsets[tp] = last_offset + 1

    def drop(self, partition: int) -> None:
        """Partition `partition` was revoked: its records go uncommitted to its new owner."""
        self.batch.drop(partition)
        for tp in [tp for tp in self.next_offsets if tp.partition == partition]:
            del self.next_offsets[tp]

    def run(
        self, processor: Processor, outputs: TopicOutputs, states: Mapping[int, PartitionState]
    ) -> None:
        """Steps 1 to 5."""
        if self.exactly_once:
            self.producer.begin_transaction()
        outputs.fast.begin()
        processor.emit(self.batch, outputs)
        self.write_changelog(states, outputs.fast)
        self.commit()

    def write_changelog(self, states: Mapping[int, PartitionState], fast: FastSend) -> None:
        """Step 3: each touched partition's changed visits, headed with the batch's offsets."""
        last_offsets: dict[int, dict[str, int]] = {}
        for tp, next_offset in self.next_offsets.items():
            last_offsets.setdefault(tp.partition, {})[tp.topic] = next_offset - 1
        for number, offsets in last_offsets.items():
            state = states[number]
            state.sweep()
            headers = offset_headers(offsets)
            for write in state.take_writes():
                fast.send(self.config.changelog_topic, number, write.key, write.value, headers)

    def commit(self) -> None:
        """Steps 4 and 5."""
        deadline = self.config.call_deadline_s
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self.next_offsets.items()}
        producer, consumer = self.producer, self.consumer
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

    def abort(self, error: Exception) -> None:
        log.error("batch failed; aborting", extra=fields(error=describe_error(error)))
        self.metrics.transactions.labels(outcome="aborted").inc()
        if not self.exactly_once:
            return
        try:
            with_deadline(self.producer.abort_transaction, self.config.call_deadline_s, "abort")
        except Exception as failure:
            # Fenced or broken: the transaction dies with the producer (the broker aborts it
            # at transaction.timeout.ms); the restart that follows builds fresh clients.
            log.warning("abort failed", extra=fields(error=describe_error(failure)))
