"""One polled batch: decide its records within a time budget and commit them as one transaction.

The budget (`--max-batch-ms`, and `--max-poll-records` per poll) bounds how long the loop holds
the interpreter between polls: a long stretch of pure-Python deciding starves kafka-python's
I/O thread (its "Task ... ran for 1.9 s ... blocking the event loop" warnings) and delays the
commit. Past the budget the partitions' remaining records are sought back and read again by
the next poll. Every send remembers the input record it came from, so a refused output can be
laid at that record's door (worker.runtime.checkpoint).
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from worker.config import WorkerConfig
from worker.observability.metrics import Metrics
from worker.processing.outputs import OutputTopics, TopicOutputs, Where
from worker.processing.pipeline import Processor
from worker.runtime.checkpoint import Checkpoint
from worker.runtime.recovery import Recovery
from worker.runtime.transactor import Transactor


class Batch:
    def __init__(
        self,
        config: WorkerConfig,
        transactor: Transactor,
        consumer: KafkaConsumer,
        metrics: Metrics,
        processor: Processor,
        recovery: Recovery,
    ) -> None:
        self.config, self.consumer = config, consumer
        self.processor, self.recovery = processor, recovery
        self.checkpoint = Checkpoint(config, transactor, consumer, metrics)
        self.outputs = TopicOutputs(
            transactor.require(),
            OutputTopics.live(config),
            processor.codec,
            collect=False,
            refused=self.checkpoint.refused,
        )
        self.sizes: dict[Where, int] = {}  # value size of each input record processed
        self.partitions: set[int] = set()  # partition numbers it decided records of
        self.began = False
        self.records: dict[TopicPartition, list[Any]] = {}

    def run(self, records: dict[TopicPartition, list[Any]]) -> bool:
        """Decide and commit; False when nothing was processed (nothing to commit)."""
        self.records = records
        deadline = time.monotonic() + self.config.max_batch_ms / 1000
        for tp, partition_records in records.items():
            if not self.recovery.is_ready_to_process(tp.partition) or (
                self.began and time.monotonic() > deadline
            ):
                # Not restored (or revoked meanwhile), or over the budget: read these again.
                self.consumer.seek(tp, partition_records[0].offset)
                continue
            self._partition(tp, partition_records, deadline)
        if not self.began:
            return False
        self.checkpoint.write_changelog(self.processor.states, self.sizes)
        self.checkpoint.commit()
        return True

    def seek_back_untouched(self) -> None:
        """After a failure: the polled records of partitions it never got to are read again
        (the partitions it did decide records of are rewound by the caller)."""
        for tp, partition_records in self.records.items():
            if tp.partition not in self.partitions:
                self.consumer.seek(tp, partition_records[0].offset)

    def _partition(self, tp: TopicPartition, records: list[Any], deadline: float) -> None:
        processor, outputs = self.processor, self.outputs
        done = 0
        for record in records:
            if self.began and time.monotonic() > deadline:
                self.consumer.seek(tp, record.offset)
                break
            if not self.began:
                self.checkpoint.begin()
                self.began = True
            self.partitions.add(tp.partition)  # before: a failure must rewind it too
            where = (record.topic, record.partition, record.offset)
            self.sizes[where] = len(record.value or b"")
            outputs.origin = where
            processor.process(record, self.recovery.partitions, outputs)
            done += 1
        if done:
            self.checkpoint.consumed(tp, records[done - 1].offset)
            processor.sensor.consumed(tp.topic, done)
