"""Rebalances, restoration and readiness.

Rebalance callbacks run on kafka-python's I/O thread, where no blocking call is allowed, so
`on_assigned` only pauses the new partitions and notes them; the poll loop then restores their
state from the changelog (`restore_pending`) and resumes them. Restoration reads each changelog
partition from its beginning to its highwater and keeps the records whose input offsets are
below the committed offsets (worker.state.changelog.is_committed): work of a transaction that
never committed is never restored, even on a broker that shows aborted records.

`rewind` does the same for partitions this instance keeps owning, after a batch whose
transaction did not commit: their in-memory state went with it, so it is restored again and
the consumer goes back to the committed offsets, without leaving the group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker.config import WorkerConfig
from worker.errors import InstanceRestart, StateCorrupt, TopicLayoutError
from worker.kafka.reading import read_ranges
from worker.kafka.records import Record
from worker.observability.health import Health
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics
from worker.state.changelog import is_committed
from worker.state.store import PartitionState, new_state

log = logging.getLogger("charge_capture.worker")


class Recovery:
    """The partitions this instance owns: which are restored, their committed offsets, and
    whether the instance is ready."""

    def __init__(
        self,
        config: WorkerConfig,
        states: dict[int, PartitionState],
        metrics: Metrics,
        health: Health,
    ) -> None:
        self.config = config
        self.states = states
        self.metrics = metrics
        self.health = health
        self.inputs = (config.input_topic, config.repartition_topic)
        self.committed: dict[TopicPartition, int] = {}
        # Assigned partition numbers waiting for restoration by the poll loop.
        self.pending: set[int] = set()
        self.joined = False
        # Told which partitions were dropped (the worker drops their part of an open batch).
        self.on_drop: Callable[[list[int]], None] = lambda numbers: None
        self.partitions = 0  # of the input (and co-partitioned) topics, from the layout check
        self._consumer: KafkaConsumer | None = None
        self._restorer: KafkaConsumer | None = None

    def attach(self, consumer: KafkaConsumer, restorer: KafkaConsumer) -> ConsumerRebalanceListener:
        """Serve `consumer`'s rebalances, restoring through `restorer`; the listener to
        subscribe with."""
        self._consumer, self._restorer = consumer, restorer
        return _Listener(self)

    def detach(self) -> None:
        """The clients are closed: nothing is owned any more."""
        # Partitions still waiting for restoration belonged to the closed consumer (a restore
        # that timed out): left here, the next session would restore them before it is
        # assigned anything, resume() them (KeyError: not assigned) and treat them as
        # restored when they are assigned again, with state as of the old committed offsets.
        self.pending.clear()
        self.drop(list(self.states))
        self.joined = False
        self._consumer = self._restorer = None

    # -- rebalance callbacks (I/O thread) -----------------------------------------------------

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        """Pause the new partitions until the loop has restored their state."""
        self.joined = True
        self.metrics.rebalances.labels(kind="assigned").inc()
        new = {tp.partition for tp in partitions} - set(self.states)
        if new:
            assert self._consumer is not None
            self._consumer.pause(*[tp for tp in partitions if tp.partition in new])
            self.pending |= new
        self.set_ready()

    def on_revoked(self, partitions: Iterable[TopicPartition], *, lost: bool = False) -> None:
        # The loop never polls with a transaction open, so there is nothing to finish here.
        self.metrics.rebalances.labels(kind="lost" if lost else "revoked").inc()
        numbers = sorted({tp.partition for tp in partitions})
        self.pending.difference_update(numbers)
        self.drop(numbers)
        self.set_ready()

    # -- poll loop ----------------------------------------------------------------------------

    def is_ready_to_process(self, partition: int) -> bool:
        return partition in self.states and partition not in self.pending

    def rewind(self, numbers: Iterable[int]) -> list[int]:
        """Forget the state of owned partitions `numbers` and restore them again (by the
        loop's next `restore_pending`), consuming from their committed offsets."""
        consumer = self._consumer
        assert consumer is not None
        owned = sorted(set(numbers) & (set(self.states) | self.pending))
        if not owned:
            return []
        self.drop(owned)
        assigned = consumer.assignment() or set()
        consumer.pause(
            *[tp for t in self.inputs for n in owned if (tp := TopicPartition(t, n)) in assigned]
        )
        self.pending |= set(owned)
        self.set_ready()
        return owned

    def restore_pending(self, tick: Callable[[], None] | None = None) -> None:
        """Restore the pending partitions; `tick` runs between reads (liveness, stop)."""
        if not self.pending:
            return
        consumer = self._consumer
        assert consumer is not None
        numbers = sorted(self.pending)
        try:
            committed = self._restore(numbers, tick or self.health.mark_loop_alive)
        except KafkaError as error:  # e.g. a broker blip while reading committed offsets
            raise InstanceRestart(
                f"restore of {numbers} failed: {describe_error(error)}", "restore_failed"
            ) from error
        except TimeoutError as error:
            raise InstanceRestart(
                f"changelog restore of {numbers} timed out: {error}", "restore_failed"
            ) from error
        self.pending.difference_update(numbers)
        # From the committed offsets: after a rewind the consumer had read past them.
        assigned = consumer.assignment() or set()
        for tp, offset in committed.items():
            if tp in assigned:
                consumer.seek(tp, offset)
        consumer.resume(*[tp for tp in committed if tp in assigned])
        self.set_ready()

    def set_ready(self) -> None:
        count = len(self.states)
        self.metrics.partitions_assigned.set(count)
        if self.pending:
            self.health.set_ready(False, f"restoring {len(self.pending)} partition(s)")
        else:
            # No partitions is ready too: a spare replica has nothing to restore.
            self.health.set_ready(self.joined, f"consuming {count} partition(s)")

    def drop(self, numbers: list[int]) -> None:
        self.on_drop(numbers)
        for number in numbers:
            self.states.pop(number, None)
            for topic in self.inputs:
                self.committed.pop(TopicPartition(topic, number), None)
        self.metrics.forget_partitions((t, n) for t in self.inputs for n in numbers)

    def _restore(self, numbers: list[int], tick: Callable[[], None]) -> dict[TopicPartition, int]:
        """Rebuild state of `numbers` from the changelog, skipping uncommitted work; the
        committed offset of each of their input partitions."""
        consumer, restorer = self._consumer, self._restorer
        assert consumer is not None and restorer is not None
        started = time.monotonic()
        # Short, with a beat between: a coordinator that does not answer must not hold the
        # loop past the liveness deadline (the restore is retried).
        timeout_ms = int(min(self.config.call_deadline_s, 5.0) * 1000)
        committed: dict[int, dict[str, int]] = {}
        offsets: dict[TopicPartition, int] = {}
        for number in numbers:
            committed[number] = {}
            for topic in self.inputs:
                tp = TopicPartition(topic, number)
                offset = consumer.committed(tp, timeout_ms=timeout_ms) or 0
                committed[number][topic] = offsets[tp] = offset
                tick()
        states = {n: new_state(self.config, n, self.partitions) for n in numbers}
        starts: dict[TopicPartition, int | None] = {
            TopicPartition(self.config.changelog_topic, n): None for n in numbers
        }
        stall_s = max(120.0, 3 * self.config.transaction_timeout_ms / 1000)
        restored = 0
        for tp, records in read_ranges(
            restorer,
            starts,
            stall_timeout_s=stall_s,
            max_records=5000,
            heartbeat=tick,
        ):
            for record in records:
                if is_committed(record.headers or [], committed[tp.partition]):
                    _restore_record(states[tp.partition], record)
                    restored += 1
        self.states.update(states)
        self.committed.update(offsets)
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
        return offsets


def _restore_record(state: PartitionState, record: Record) -> None:
    try:
        state.restore(record.key or b"", record.value)
    except TopicLayoutError:
        raise
    except Exception as error:
        # Skipping it would decide on partial state and reuse decision versions: stop, with
        # where and what (the record's text may hold PHI, so only the error's type).
        raise StateCorrupt(
            f"changelog {record.topic}[{record.partition}] offset {record.offset} does not "
            f"restore: {describe_error(error)}"
        ) from error


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.recovery.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.recovery.on_assigned(assigned)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        self.recovery.on_revoked(lost, lost=True)
