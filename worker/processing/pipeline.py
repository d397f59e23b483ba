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
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from rules.charge import Charge, Decision, DecisionSource
from rules.model import ErrorKind
from rules.pack import PackSet
from rules.visit import Publication
from worker.errors import RecordFailed, SchemaUnavailable, UndecidableRecord
from worker.kafka.partitioner import home_partition
from worker.kafka.records import Record, record_time
from worker.observability.logs import describe_error
from worker.processing.batch import Batch
from worker.processing.outputs import Outputs
from worker.processing.sensor import NullSensor, Sensor
from worker.serde.codec import Codec
from worker.state.store import PartitionState

Where = tuple[str, int, int]  # (topic, partition, offset) of an input record


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
        # Input records whose decision raised: dead-lettered when they are read again (a
        # restart redelivers them), so one bad record cannot crash-loop the worker.
        self.failed: dict[Where, str] = {}

    def process(self, record: Record, partitions: int, batch: Batch) -> None:
        """Decide one input record read from a topic of `partitions` partitions into `batch`."""
        where = (record.topic, record.partition, record.offset)
        batch.records += 1
        failure = self.failed.pop(where, None)
        if failure is not None:
            # Deciding it raised last time and would again: dead-letter it and move on.
            message = f"deciding it failed: {failure}"
            batch.dead_letter(record.partition, record, ErrorKind.VALIDATION, message)
            return
        try:
            charge, body = self.codec.read_event(record.value)
            patient = charge.patient_id.encode()
            home = home_partition(patient, partitions, self.partitioner)
            misplaced = record.key != patient or record.partition != home
            rekey = misplaced and not self.rekey_in_process
            rekeyed = misplaced or record.topic == self.repartition_topic
            publications = [] if rekey else self._decide(record, charge, self.states[home], rekeyed)
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
            own = body if publication.decision.charge is charge else None
            batch.decided(home, publication, own, charge.occurred_at)

    def _decide(
        self, record: Record, charge: Charge, state: PartitionState, rekeyed: bool
    ) -> list[Publication]:
        source = DecisionSource(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=charge.event_id,
        )
        return state.decide(
            charge, source, self.packs, record_time=record_time(record), rekeyed=rekeyed
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
