"""One batch as one transaction: the checkpoint of the live worker.

Records of several polls go into one batch, for up to the commit interval (100 ms by default,
as Kafka Streams under exactly-once): deciding them writes nothing to Kafka yet
(worker.processing.batch), so no transaction is open while the consumer polls. At the
checkpoint, in order (Kafka Streams' and Quix Streams' commit, made explicit):
1. begin the transaction (exactly-once);
2. outputs: each charge's latest decision (and the RETRACTED it owes), the dead letters and
   the re-keyed events, each naming the input record it answers for;
3. changelog: every visit the batch touched, once, tombstones for expired ones, and the
   partition's metadata, each record headed with the input offsets the batch consumed;
4. flush: every record sent is acknowledged or refused. A record the broker refuses for its own
   sake (too large, invalid) names the input record it came from (`refused`), so the batch is
   redone with that input dead-lettered instead of failing forever;
5. offsets: the consumed offsets join the transaction (`send_offsets_to_transaction`);
6. commit, or abort on any failure before it.
Under at-least-once, 1 and 5 fall away: the producer is flushed, then the offsets committed.
Every call waits through worker.runtime.transactor (a deadline, liveness and outage ticks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka.errors import MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata, TopicPartition

from rules.model import ErrorKind
from worker.config import WorkerConfig
from worker.errors import FatalError, OutputsFailed, RecordFailed, Stopping
from worker.kafka.fast_send import FastSend
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics
from worker.processing.batch import Batch
from worker.processing.outputs import Refusal, TopicOutputs, Where, refusal_kind
from worker.processing.pipeline import Processor
from worker.runtime.transactor import Transactor
from worker.state.changelog import offset_headers
from worker.state.store import PartitionState

log = logging.getLogger("charge_capture.worker")

MAX_BATCH_RECORDS = 20_000  # a checkpoint comes sooner than the interval past this many


@dataclass
class Checkpoint:
    """An open batch: what it holds, where it ends per input partition, what it touched."""

    config: WorkerConfig
    transactor: Transactor
    consumer: KafkaConsumer
    metrics: Metrics
    started: float = field(default_factory=time.monotonic)
    batch: Batch = field(default_factory=Batch)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    partitions: set[int] = field(default_factory=set)  # partition numbers it decided records of
    sizes: dict[Where, int] = field(default_factory=dict)  # value size of each input record
    # Sends the broker refused, with the input record each came from (appended on the
    # producer's I/O thread; read after the flush).
    refused: list[Refusal] = field(default_factory=list)

    def seconds_left(self) -> float:
        """Until the checkpoint is due (commit interval after its first record)."""
        return self.started + self.config.commit_interval_ms / 1000 - time.monotonic()

    def due(self) -> bool:
        return self.seconds_left() <= 0 or self.batch.records >= MAX_BATCH_RECORDS

    def consumed(self, tp: TopicPartition, first_offset: int, last_offset: int) -> None:
        self.first_offsets.setdefault(tp, first_offset)
        self.next_offsets[tp] = last_offset + 1

    def drop(self, partition: int) -> None:
        """Partition `partition` was revoked: its records go uncommitted to its new owner."""
        self.batch.drop(partition)
        self.partitions.discard(partition)
        for offsets in (self.next_offsets, self.first_offsets):
            for tp in [tp for tp in offsets if tp.partition == partition]:
                del offsets[tp]

    def run(
        self,
        processor: Processor,
        outputs: TopicOutputs,
        states: Mapping[int, PartitionState],
    ) -> None:
        """Steps 1 to 6."""
        self.transactor.begin()
        outputs.fast.begin()
        processor.emit(self.batch, outputs)
        self.write_changelog(states, outputs.fast)
        self.commit()

    def write_changelog(self, states: Mapping[int, PartitionState], fast: FastSend) -> None:
        """Step 3: each touched partition's changed visits, headed with the batch's offsets.

        A visit's record answers for the input records that changed it in this batch; when it
        is refused, the largest of them is the one dead-lettered on the next attempt."""
        last_offsets: dict[int, dict[str, int]] = {}
        for tp, next_offset in self.next_offsets.items():
            last_offsets.setdefault(tp.partition, {})[tp.topic] = next_offset - 1
        sizes = self.sizes
        for number, offsets in last_offsets.items():
            state = states[number]
            state.sweep()
            headers = offset_headers(offsets)
            for write in state.take_writes():
                culprit = max(write.origins, key=lambda w: sizes.get(w, 0), default=None)
                errback = None if culprit is None else self._refusal(culprit)
                try:
                    fast.send(
                        self.config.changelog_topic,
                        number,
                        write.key,
                        write.value,
                        headers,
                        errback=errback,
                    )
                except MessageSizeTooLargeError as error:
                    if culprit is None:
                        raise
                    cause = f"its visit's changelog record is refused: {describe_error(error)}"
                    raise RecordFailed(culprit, cause, ErrorKind.TOO_LARGE) from error

    def _refusal(self, culprit: Where) -> Callable[[BaseException], None]:
        refused = self.refused
        return lambda error: refused.append((culprit, False, error))

    def commit(self) -> None:
        """Steps 4 to 6."""
        transactor, consumer = self.transactor, self.consumer
        transactor.flush()
        raise_refusals(self.refused)
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self.next_offsets.items()}
        timeout_ms = int(self.config.call_deadline_s * 1000)
        transactor.commit(
            offsets,
            consumer.group_metadata(),
            lambda: consumer.commit(offsets, timeout_ms=timeout_ms),
        )
        self.metrics.transactions.labels(outcome="committed").inc()

    def abort(self, error: BaseException) -> bool:
        """Abort the batch's transaction; False when that failed too (the producer is then
        in an unknown state and must be abandoned)."""
        log.error("batch failed; aborting", extra=fields(error=describe_error(error)))
        self.metrics.transactions.labels(outcome="aborted").inc()
        try:
            self.transactor.abort()
            return True
        except (FatalError, Stopping):
            raise
        except Exception as failure:  # fenced, past its deadline, broken: all mean the same
            log.warning("abort failed", extra=fields(error=describe_error(failure)))
            return False


def raise_refusals(refused: list[Refusal]) -> None:
    """After the flush: OutputsFailed naming the input records whose outputs the broker
    refused for their own sake; any other failure as it is (a timeout, a fenced producer)."""
    failures: dict[Where, RecordFailed] = {}
    for where, dead_letter, error in list(refused):
        kind = refusal_kind(error)
        if kind is None:
            raise error
        cause = f"its outputs were refused: {describe_error(error)}"
        failures.setdefault(where, RecordFailed(where, cause, kind, bare=dead_letter))
    if failures:
        raise OutputsFailed(list(failures.values()))
