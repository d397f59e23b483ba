"""One batch as one transaction: the checkpoint of the live worker.

The steps, in order (Kafka Streams' and Quix Streams' commit, made explicit):
1. begin the transaction (exactly-once);
2. outputs: the batch's decisions, dead letters and re-keyed events are sent as it is processed;
3. changelog: every visit the batch touched, tombstones for expired ones, and the partition's
   metadata, each record headed with the input offsets the batch consumed;
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
from collections.abc import Mapping
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka.errors import MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata, TopicPartition

from rules.model import ErrorKind
from worker.config import WorkerConfig
from worker.errors import FatalError, OutputsFailed, RecordFailed, Stopping
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics
from worker.processing.outputs import Refusal, Where, refusal_kind
from worker.runtime.transactor import Transactor
from worker.state.changelog import offset_headers
from worker.state.store import PartitionState

log = logging.getLogger("charge_capture.worker")


@dataclass
class Checkpoint:
    """Where one polled batch ends, per input partition (next offsets to consume)."""

    config: WorkerConfig
    transactor: Transactor
    consumer: KafkaConsumer
    metrics: Metrics
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    # Sends the broker refused, with the input record each came from (appended on the
    # producer's I/O thread; read after the flush).
    refused: list[Refusal] = field(default_factory=list)

    def begin(self) -> None:
        self.transactor.begin()

    def consumed(self, tp: TopicPartition, last_offset: int) -> None:
        self.next_offsets[tp] = last_offset + 1

    def write_changelog(
        self, states: Mapping[int, PartitionState], sizes: Mapping[Where, int]
    ) -> None:
        """Step 3: each touched partition's changed visits, headed with the batch's offsets.

        A visit's record answers for the input records that changed it in this batch; when it
        is refused, the largest of them is the one dead-lettered on the next attempt."""
        producer = self.transactor.require()
        last_offsets: dict[int, dict[str, int]] = {}
        for tp, next_offset in self.next_offsets.items():
            last_offsets.setdefault(tp.partition, {})[tp.topic] = next_offset - 1
        for number, offsets in last_offsets.items():
            state = states[number]
            state.sweep()
            headers = offset_headers(offsets)
            for write in state.take_writes():
                culprit = max(write.origins, key=lambda w: sizes.get(w, 0), default=None)
                try:
                    future = producer.send(
                        self.config.changelog_topic,
                        key=write.key,
                        value=write.value,
                        partition=number,
                        headers=headers,
                    )
                except MessageSizeTooLargeError as error:
                    if culprit is None:
                        raise
                    cause = f"its visit's changelog record is refused: {describe_error(error)}"
                    raise RecordFailed(culprit, cause, ErrorKind.TOO_LARGE) from error
                if culprit is not None:
                    future.add_errback(lambda e, w=culprit: self.refused.append((w, False, e)))

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
