"""Record → decode → place → decide → outputs: the one processing path of the live worker and
of replay.

`Processor.process` takes one consumed input record and its outputs:
1. decode the framed Avro into a validated ChargeEvent (undecodable: dead letter);
2. place it: the partition whose state holds its patient is where the input's producers put
   the patient's key (`--input-partitioner`). A record not keyed by its patient, or not on
   that partition, is re-keyed: the live worker sends it through the repartition topic and
   decides it when it comes back (`rekey_in_process=False`); replay, which holds every
   partition's state, decides it at once in its patient's state (`rekey_in_process=True`);
3. decide it in that partition's state, which returns the decisions that changed;
4. hand each to the outputs, and tell the sensor.

Placement is as the live repartition topic would do it, so live and replay decide in the same
state; a re-keyed event never moves event time in either (worker.state.store).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from rules.model import ChargeDecision, ChargeEvent, DecisionSource, ErrorKind
from rules.pack import PackSet
from rules.visit import Publication
from worker.errors import RecordFailed, SchemaUnavailable, UndecidableRecord
from worker.kafka.partitioner import home_partition
from worker.kafka.records import Record, record_time
from worker.observability.logs import describe_error
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
        decorate: Callable[[ChargeDecision], ChargeDecision] | None = None,
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

    def process(self, record: Record, partitions: int, outputs: Outputs) -> None:
        """Decide one input record read from a topic of `partitions` partitions."""
        where = (record.topic, record.partition, record.offset)
        failure = self.failed.pop(where, None)
        if failure is not None:
            # Deciding it raised last time and would again: dead-letter it and move on.
            message = f"deciding it failed: {failure}"
            self._dead_letter(record, ErrorKind.VALIDATION, message, outputs)
            return
        try:
            event = self.codec.decode_event(record.value)
            patient = event.patient_id.encode()
            home = home_partition(patient, partitions, self.partitioner)
            misplaced = record.key != patient or record.partition != home
            rekey = misplaced and not self.rekey_in_process
            rekeyed = misplaced or record.topic == self.repartition_topic
            publications = [] if rekey else self._decide(record, event, self.states[home], rekeyed)
        except UndecidableRecord as bad:
            self._dead_letter(record, bad.kind, bad.message, outputs)
            return
        except SchemaUnavailable:
            raise  # no fault of the record's: it must not be dead-lettered when read again
        except Exception as error:  # outputs are handed out below: nothing above sends
            raise RecordFailed(where, describe_error(error)) from error
        if rekey:
            self._rekey(record, patient, home, outputs)
        for publication in publications:
            self._emit(publication, event, outputs)

    def _decide(
        self, record: Record, event: ChargeEvent, state: PartitionState, rekeyed: bool
    ) -> list[Publication]:
        source = DecisionSource.model_construct(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=event.event_id,
        )
        return state.decide(
            event, source, self.packs, record_time=record_time(record), rekeyed=rekeyed
        )

    def _rekey(self, record: Record, patient: bytes, home: int, outputs: Outputs) -> None:
        if record.topic == self.repartition_topic:
            message = "record on the repartition topic is not keyed by, or placed for, its patient"
            self._dead_letter(record, ErrorKind.REPARTITION, message, outputs)
            return
        # Same transaction as this record's offset: the copy and the commit go together.
        outputs.rekey(record, patient, home)

    def _emit(self, publication: Publication, event: ChargeEvent, outputs: Outputs) -> None:
        decision = publication.decision
        if self.decorate is not None:
            decision = self.decorate(decision)
        outputs.decision(publication.ledger, decision)
        self.sensor.decided(decision, event.occurred_at)

    def _dead_letter(self, record: Record, kind: ErrorKind, message: str, outputs: Outputs) -> None:
        outputs.dead_letter(record, kind, message)
        self.sensor.dead_lettered(record, kind, message)
