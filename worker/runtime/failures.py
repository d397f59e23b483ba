"""What the worker does when a batch fails: abort and redo it in place, the records that
caused it set aside for the dead-letter topic, a new producer when the old one cannot be
trusted, a fenced producer named, and the instance started over only when nothing explains
the failure."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker.config import WorkerConfig
from worker.errors import (
    CallDeadlineExceeded,
    InstanceRestart,
    OutputsFailed,
    RecordFailed,
)
from worker.kafka.transactions import FENCED, is_fenced
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics
from worker.processing.outputs import Where
from worker.processing.pipeline import Processor
from worker.runtime.checkpoint import Checkpoint
from worker.runtime.outage import Outage
from worker.runtime.recovery import Recovery
from worker.runtime.transactor import Transactor
from worker.state.store import PartitionState

log = logging.getLogger("charge_capture.worker")

FAILURES_BEFORE_RESTART = 3  # unexplained failures in a row before the instance starts over
Restarted = Callable[[str, BaseException, str], None]  # reason, error, log message


class BatchFailures:
    """The failure path of the worker's batches (see the module docstring)."""

    def __init__(
        self,
        config: WorkerConfig,
        transactor: Transactor,
        recovery: Recovery,
        outage: Outage,
        metrics: Metrics,
        processor: Processor,
        states: Mapping[int, PartitionState],
        restarted: Restarted,
    ) -> None:
        self.config, self.transactor, self.recovery = config, transactor, recovery
        self.outage, self.metrics, self.states = outage, metrics, states
        self.restarted = restarted
        self.set_aside = SetAside(processor)
        self.in_a_row = 0

    def succeeded(self) -> None:
        self.in_a_row = 0

    def handle(
        self,
        checkpoint: Checkpoint,
        error: Exception,
        polled: dict[TopicPartition, list[Any]] | None = None,
    ) -> None:
        """Abort, and redo the batch in place: without the records that failed, with a new
        producer when the old one cannot be trusted; restart when nothing explains it."""
        failures: list[RecordFailed] = []
        if isinstance(error, RecordFailed):
            failures = [error]
        elif isinstance(error, OutputsFailed):
            failures = error.failures
        fenced = is_fenced(self.transactor.producer, error)
        expired = isinstance(error, CallDeadlineExceeded)
        if expired or fenced:
            log.error("batch failed", extra=fields(error=describe_error(error)))
            self.metrics.transactions.labels(outcome="aborted").inc()
            aborted = False
        else:
            # A failure while deciding leaves no transaction open: nothing to abort.
            aborted = checkpoint.abort(error) if self.transactor.began is not None else True
        for failure in failures:
            self.set_aside.add(failure)
        if fenced:
            fenced_restart(self.config, self.transactor, error)
        if not aborted:
            # Its transaction is in an unknown state: a new producer fences it.
            self.transactor.abandon(describe_error(error))
            reason = "call_deadline" if expired else "batch_failed"
            self.restarted(reason, error, "producer replaced")
            self.recovery.rewind(list(self.states) + sorted(self.recovery.pending))
            return
        self.recovery.rewind(checkpoint.partitions)
        if polled is not None:  # the poll's records of partitions not decided: read again
            for tp, partition_records in polled.items():
                if tp.partition not in checkpoint.partitions:
                    checkpoint.consumer.seek(tp, partition_records[0].offset)
        if failures or self.outage.since is not None:
            return  # progress (records set aside) or an outage: no reason to start over
        self.in_a_row += 1
        if self.in_a_row >= FAILURES_BEFORE_RESTART:
            self.in_a_row = 0
            raise InstanceRestart(f"batch failed: {describe_error(error)}") from error


class SetAside:
    """Input records that failed their batch: each is dead-lettered when the redone batch
    reads it again (the processor keeps them until a checkpoint commits past them)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self._bare: set[Where] = set()  # records whose dead letter had to go without its value

    def add(self, failure: RecordFailed) -> None:
        where = failure.where
        if failure.bare:
            if where in self._bare:  # even its smallest dead letter was refused: no way on
                raise InstanceRestart(
                    f"the DLQ topic refuses even a dead letter without its value: {failure}"
                )
            self._bare.add(where)
        self.processor.failed[where] = failure
        topic, partition, offset = where
        log.warning(
            "input record to be dead-lettered",
            extra=fields(
                topic=topic,
                partition=partition,
                offset=offset,
                error_kind=failure.kind.value,
                error=failure.cause,
            ),
        )


def fenced_restart(config: WorkerConfig, transactor: Transactor, error: Exception) -> NoReturn:
    """Another producer took our transactional.id: say which, and start the instance over."""
    log.error(
        "producer fenced: another instance uses the same --instance-id",
        extra=fields(
            transactional_id=config.transactional_id,
            instance_id=config.instance_id,
            error=describe_error(error),
        ),
    )
    transactor.abandon("fenced")
    raise InstanceRestart(f"fenced: {describe_error(error)}", "fenced") from error


def restart_reason(error: InstanceRestart | KafkaError | CallDeadlineExceeded) -> str:
    """The `reason` label of charge_capture_instance_restarts_total for `error`."""
    if isinstance(error, InstanceRestart):
        return error.reason
    if isinstance(error, CallDeadlineExceeded):
        return "call_deadline"
    if isinstance(error, FENCED):
        return "fenced"
    return "broker_unavailable"
