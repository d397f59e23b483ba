"""The worker's producer and its transactions, replaceable in place.

A transactional call that does not return in time leaves the producer in an unknown state.
Rather than exit (and make a supervisor restart the process), the worker abandons it and opens
a new one with the same transactional.id: its `init_transactions` fences the old incarnation
and aborts its open transaction (or waits for its commit to finish), so nothing it half did can
commit later. The state the aborted batch touched is restored from the changelog by the caller.
Every wait runs through worker.kafka.transactions (sliced, with liveness and outage ticks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.config import Guarantee, WorkerConfig
from worker.kafka import clients, transactions
from worker.kafka.transactions import Waits
from worker.observability.logs import fields

log = logging.getLogger("charge_capture.worker")


class Transactor:
    def __init__(
        self, config: WorkerConfig, tick: Callable[[], None], stop: threading.Event
    ) -> None:
        self.config = config
        self.tick, self.stop = tick, stop
        self.producer: KafkaProducer | None = None
        self.began: float | None = None  # monotonic start of the open transaction

    @property
    def exactly_once(self) -> bool:
        return self.config.processing_guarantee == Guarantee.EXACTLY_ONCE

    def waits(self) -> Waits:
        return Waits(
            deadline_s=self.config.call_deadline_s,
            tick=self.tick,
            stop=self.stop,
            transaction_timeout_s=self.config.transaction_timeout_ms / 1000,
            transaction_began=self.began,
        )

    def open(self, topics: list[str]) -> KafkaProducer:
        """A new producer: initialised (fencing any earlier one with this transactional.id)
        and holding the metadata of `topics`, so a send never waits for it."""
        producer = clients.worker_producer(self.config)
        try:
            if self.exactly_once:
                transactions.init_transactions(producer, self.waits())
            for topic in topics:
                producer.partitions_for(topic)
                self.tick()
        except BaseException:
            transactions.abandon(producer)
            raise
        self.producer, self.began = producer, None
        return producer

    def require(self) -> KafkaProducer:
        assert self.producer is not None, "no producer open"
        return self.producer

    def begin(self) -> None:
        if self.exactly_once:
            self.require().begin_transaction()
            self.began = time.monotonic()

    def flush(self) -> None:
        self.waits().flush(self.require())

    def commit(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_metadata: Any,
        commit_offsets: Callable[[], None],
    ) -> None:
        """Offsets into the transaction and commit it; at-least-once: `commit_offsets()`."""
        producer = self.require()
        if not self.exactly_once:
            commit_offsets()
            return
        waits = self.waits()
        transactions.send_offsets(producer, offsets, group_metadata, waits)
        transactions.commit(producer, waits)
        self.began = None

    def abort(self) -> None:
        if self.exactly_once:
            transactions.abort(self.require(), self.waits())
        self.began = None

    def abandon(self, why: str) -> None:
        """Drop the producer without waiting; `open` makes the next one."""
        producer, self.producer, self.began = self.producer, None, None
        if producer is not None:
            log.warning("producer abandoned", extra=fields(reason=why))
            transactions.abandon(producer)

    def close(self) -> None:
        """At shutdown, between batches: nothing is in flight, so close without waiting long."""
        producer, self.producer = self.producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=1)
        except Exception:  # closing after a failure: nothing more to do
            log.debug("producer close failed", exc_info=True)
            transactions.abandon(producer)
