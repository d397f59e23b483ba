"""Transactional calls that wait with a deadline, stay responsive, and never leave a thread behind.

kafka-python's `init_transactions`, `send_offsets_to_transaction`, `commit_transaction` and
`abort_transaction` hand a request to the producer's sender thread and wait on its result with
no timeout (on a broker that fenced the producer, forever). Here the same request is started
through the producer's transaction manager and its result waited on in short slices: between
slices `tick` runs (a liveness beat, the broker-outage check, which may raise), a stop request
is honoured within `STOP_GRACE_S`, and at the deadline, or once the transaction is older than
the coordinator lets one live, `CallDeadlineExceeded` is raised. The caller then abandons the
producer (`abandon`) and builds a new one with the same transactional.id: its
`init_transactions` fences the old incarnation and aborts (or completes) its transaction.

Reaches into kafka-python 3.0's producer internals (`_transaction_manager`, `_sender`), pinned by
pyproject's `kafka-python>=3.0,<4`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    FencedInstanceIdError,
    InvalidProducerEpochError,
    KafkaTimeoutError,
    ProducerFencedError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.errors import CallDeadlineExceeded, Stopping

SLICE_S = 0.1
STOP_GRACE_S = 1.0  # a call still running this long after a stop request is abandoned


@dataclass
class Waits:
    """How transactional calls wait: their deadline, what runs between slices, the stop flag."""

    deadline_s: float
    tick: Callable[[], None]
    stop: threading.Event
    # When the open transaction started and how long the coordinator lets one live
    # (transaction.timeout.ms): past that it has been aborted, so waiting on it is pointless.
    transaction_timeout_s: float | None = None
    transaction_began: float | None = None

    def wait(self, result: Any, what: str) -> None:
        """Wait on a kafka-python TransactionalRequestResult; raise its error if it failed."""
        clock = _Clock(time.monotonic())
        while not result.wait(timeout_ms=SLICE_S * 1000):
            self._between_slices(what, clock)

    def flush(self, producer: KafkaProducer) -> None:
        """Until every record sent so far is acknowledged or failed (its future done)."""
        clock = _Clock(time.monotonic())
        while True:
            try:
                producer.flush(timeout=SLICE_S)
                return
            except KafkaTimeoutError:  # a slice passed with records still in flight
                self._between_slices("flush", clock)

    def _between_slices(self, what: str, clock: _Clock) -> None:
        self.tick()
        now = time.monotonic()
        if self.stop.is_set():
            clock.stop_seen = clock.stop_seen or now
            if now - clock.stop_seen >= STOP_GRACE_S:
                raise Stopping(f"{what} abandoned: stopping")
        if now - clock.started >= self.deadline_s:
            raise CallDeadlineExceeded(f"{what} did not return within {self.deadline_s:.0f} s")
        began, limit = self.transaction_began, self.transaction_timeout_s
        if began is not None and limit is not None and now - began > limit:
            raise CallDeadlineExceeded(
                f"{what}: the transaction is older than transaction.timeout.ms ({limit:.0f} s), "
                "so the coordinator has aborted it"
            )


@dataclass
class _Clock:
    started: float
    stop_seen: float | None = None


def _manager(producer: KafkaProducer) -> Any:
    manager = producer._transaction_manager
    if manager is None or not manager.is_transactional():
        raise ValueError("not a transactional producer")
    return manager


def _start(producer: KafkaProducer, request: Callable[[], Any]) -> Any:
    result = request()
    producer._sender.wakeup()
    return result


def init_transactions(producer: KafkaProducer, waits: Waits) -> None:
    manager = _manager(producer)
    waits.wait(_start(producer, manager.initialize_transactions), "init_transactions")


def send_offsets(
    producer: KafkaProducer,
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    group_metadata: Any,
    waits: Waits,
) -> None:
    manager = _manager(producer)
    result = _start(producer, lambda: manager.send_offsets_to_transaction(offsets, group_metadata))
    waits.wait(result, "send_offsets_to_transaction")


def commit(producer: KafkaProducer, waits: Waits) -> None:
    manager = _manager(producer)
    waits.wait(_start(producer, manager.begin_commit), "commit_transaction")


def abort(producer: KafkaProducer, waits: Waits) -> None:
    manager = _manager(producer)
    waits.wait(_start(producer, manager.begin_abort), "abort_transaction")


FENCED = (ProducerFencedError, InvalidProducerEpochError, FencedInstanceIdError)


def is_fenced(producer: KafkaProducer | None, error: BaseException) -> bool:
    """Whether `error` means another producer took this transactional.id. kafka-python reports
    it as such from a transactional call, but a send after it fails with a plain KafkaError
    ("at least one previous transactional ... request has failed"): its transaction manager
    still holds the cause."""
    if isinstance(error, FENCED):
        return True
    manager = getattr(producer, "_transaction_manager", None)
    return isinstance(getattr(manager, "last_error", None), FENCED)


def abandon(producer: KafkaProducer) -> None:
    """Drop a producer whose state is unknown (a call past its deadline, a fenced epoch):
    fail what it still holds, stop its sender thread, close it without waiting."""
    sender = getattr(producer, "_sender", None)
    with contextlib.suppress(Exception):
        if sender is not None:
            sender.force_close()
            sender.join(0.5)
    with contextlib.suppress(Exception):
        producer.close(timeout=0)
