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

An input value over MAX_INPUT_BYTES is dead-lettered (TOO_LARGE) before it is decoded: its
decision (which embeds the line) and its visit's changelog record would not fit the broker's
default 1 MB limit, and live and replay must agree on it, so the cap is here, in the one path.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from rules.model import ChargeDecision, ChargeEvent, DecisionSource, ErrorKind
from rules.pack import PackSet
from rules.visit import Publication
from worker.errors import RecordFailed, UndecidableRecord
from worker.kafka.partitioner import home_partition
from worker.kafka.records import Record, record_time
from worker.observability.logs import describe_error
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
        # Input records whose decision raised, or whose outputs were refused: dead-lettered
        # when they are read again (the redone batch redelivers them), so one bad record
        # cannot fail the worker forever.
        self.failed: dict[Where, RecordFailed] = {}
        self.max_input_bytes: int | None = MAX_INPUT_BYTES

    def process(self, record: Record, partitions: int, outputs: Outputs) -> None:
        """Decide one input record read from a topic of `partitions` partitions."""
        where = (record.topic, record.partition, record.offset)
        failure = self.failed.pop(where, None)
        if failure is not None:
            # It failed last time and would again: dead-letter it and move on.
            self._dead_letter(record, failure.kind, _failed_message(failure), outputs, failure.bare)
            return
        size = len(record.value or b"")
        if self.max_input_bytes is not None and size > self.max_input_bytes:
            message = f"value of {size} bytes is over the {self.max_input_bytes}-byte input limit"
            self._dead_letter(record, ErrorKind.TOO_LARGE, message, outputs)
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

    def _dead_letter(
        self, record: Record, kind: ErrorKind, message: str, outputs: Outputs, bare: bool = False
    ) -> None:
        outputs.dead_letter(record, kind, message, bare=bare)
        self.sensor.dead_lettered(record, kind, message)


def _failed_message(failure: RecordFailed) -> str:
    if failure.kind == ErrorKind.VALIDATION:
        return f"deciding it failed: {failure.cause}"
    return failure.cause
