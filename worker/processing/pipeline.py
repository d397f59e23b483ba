"""Record → decode → place → decide → outputs: the one processing path of the live worker and
of replay.

`Processor.process` takes one consumed input record and the batch it belongs to:
1. decode the framed Avro into a validated Charge (undecodable: dead letter);
2. place it: the partition whose state holds its patient is where the input's producers put
   the patient's key (`--input-partitioner`). A record not keyed by its patient, or not on
   that partition, is re-keyed: the live worker sends it through the repartition topic and
   decides it when it comes back (`rekey_in_process=False`); replay, which holds every
   partition's state, decides it at once in its patient's state (`rekey_in_process=True`);
3. decide it in that partition's state, which returns the decisions that changed;
4. note them in the batch (worker.processing.batch), which emits the latest decision of each
   charge, the dead letters and the re-keyed events when the batch is checkpointed.

Placement is as the live repartition topic would do it, so live and replay decide in the same
state; a re-keyed event never moves event time in either (worker.state.store).

An input value over MAX_INPUT_BYTES is dead-lettered (TOO_LARGE) before it is decoded: its
decision (which embeds the line) and its visit's changelog record would not fit the broker's
default 1 MB limit, and live and replay must agree on it, so the cap is here, in the one path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping

from kafka.structs import TopicPartition

from rules.charge import Charge, Decision, DecisionSource
from rules.model import ErrorKind
from rules.pack import PackSet
from rules.visit import Publication
from worker.errors import RecordFailed, SchemaUnavailable, UndecidableRecord
from worker.kafka.partitioner import home_partition
from worker.kafka.records import Record, record_time
from worker.observability.logs import describe_error
from worker.processing.batch import Batch
from worker.processing.outputs import Outputs, Where
from worker.processing.sensor import NullSensor, Sensor
from worker.serde.codec import Codec
from worker.state.store import PartitionState

# An ordinary charge event is about 1 KB. A quarter of the 1 MiB that producers and brokers
# accept by default leaves room for the decision that embeds the line and for the visit's
# changelog record (JSON, up to twice the Avro size for a line of short strings).
MAX_INPUT_BYTES = 256 * 1024


class Processor:
    def __init__(
        self,
        packs: PackSet,
        codec: Codec,
        states: MutableMapping[int, PartitionState],
        *,
        partitioner: str,
        repartition_topic: str | None,
        rekey_in_process: bool,
        sensor: Sensor | None = None,
        decorate: Callable[[Decision], Decision] | None = None,
    ) -> None:
        self.packs = packs
        self.codec = codec
        self.states = states
        self.partitioner = partitioner
        self.repartition_topic = repartition_topic
        self.rekey_in_process = rekey_in_process
        self.sensor: Sensor = sensor or NullSensor()
        self.decorate = decorate  # e.g. replay's PARTIAL_VISIT flag
        # Input records whose decision raised, or whose outputs were refused: dead-lettered
        # when they are read again (the redone batch redelivers them), so one bad record
        # cannot fail the worker forever. Kept until a checkpoint commits past them: the
        # redone batch may fail again for another record and be read a third time.
        self.failed: dict[Where, RecordFailed] = {}
        self.max_input_bytes: int | None = MAX_INPUT_BYTES

    def process(self, record: Record, partitions: int, batch: Batch) -> None:
        """Decide one input record read from a topic of `partitions` partitions into `batch`."""
        where = (record.topic, record.partition, record.offset)
        batch.records += 1
        failure = self.failed.get(where)
        if failure is not None:
            # It failed last time and would again: dead-letter it and move on.
            message = _failed_message(failure)
            batch.dead_letter(record.partition, record, failure.kind, message, failure.bare)
            return
        size = len(record.value or b"")
        if self.max_input_bytes is not None and size > self.max_input_bytes:
            message = f"value of {size} bytes is over the {self.max_input_bytes}-byte input limit"
            batch.dead_letter(record.partition, record, ErrorKind.TOO_LARGE, message)
            return
        try:
            charge, body = self.codec.read_event(record.value)
            patient = charge.patient_id.encode()
            home = home_partition(patient, partitions, self.partitioner)
            misplaced = record.key != patient or record.partition != home
            rekey = misplaced and not self.rekey_in_process
            rekeyed = misplaced or record.topic == self.repartition_topic
            publications = (
                [] if rekey else self._decide(record, charge, body, self.states[home], rekeyed)
            )
        except UndecidableRecord as bad:
            batch.dead_letter(record.partition, record, bad.kind, bad.message)
            return
        except SchemaUnavailable:
            raise  # no fault of the record's: it must not be dead-lettered when read again
        except Exception as error:  # outputs are handed out below: nothing above writes
            raise RecordFailed(where, describe_error(error)) from error
        if rekey:
            self._rekey(record, patient, home, batch)
        for publication in publications:
            # The input's own Avro body is spliced into the decision when it bills it as is.
            decision = publication.decision
            own = body if decision.charge is charge else None
            mine = where if decision.charge_id == charge.charge_id else None
            batch.decided(home, publication, own, charge.occurred_at, mine)

    def committed(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """A checkpoint committed up to `next_offsets`: the failures before them are done."""
        if self.failed:
            for where in list(self.failed):
                topic, partition, offset = where
                if offset < next_offsets.get(TopicPartition(topic, partition), -1):
                    del self.failed[where]

    def _decide(
        self,
        record: Record,
        charge: Charge,
        body: bytes | None,
        state: PartitionState,
        rekeyed: bool,
    ) -> list[Publication]:
        source = DecisionSource(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=charge.event_id,
        )
        return state.decide(
            charge, source, self.packs, record_time=record_time(record), rekeyed=rekeyed, body=body
        )

    def _rekey(self, record: Record, patient: bytes, home: int, batch: Batch) -> None:
        if record.topic == self.repartition_topic:
            message = "record on the repartition topic is not keyed by, or placed for, its patient"
            batch.dead_letter(record.partition, record, ErrorKind.REPARTITION, message)
            return
        # Same transaction as this record's offset: the copy and the commit go together.
        batch.rekey(record.partition, record, patient, home)

    def emit(self, batch: Batch, outputs: Outputs) -> None:
        """Hand the batch to `outputs`: each charge's latest decision, dead letters, re-keys."""
        batch.emit(outputs, self.sensor, self.decorate)


def _failed_message(failure: RecordFailed) -> str:
    if failure.kind == ErrorKind.VALIDATION:
        return f"deciding it failed: {failure.cause}"
    return failure.cause
