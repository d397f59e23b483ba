"""What the worker does with a failed batch's causes: records set aside for the dead-letter
topic, a fenced producer named, the reason an instance starts over."""

from __future__ import annotations

import logging
from typing import NoReturn

from kafka.errors import KafkaError

from worker.config import WorkerConfig
from worker.errors import CallDeadlineExceeded, InstanceRestart, RecordFailed
from worker.kafka.transactions import FENCED
from worker.observability.logs import describe_error, fields
from worker.processing.outputs import Where
from worker.processing.pipeline import Processor
from worker.runtime.transactor import Transactor

log = logging.getLogger("charge_capture.worker")


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
