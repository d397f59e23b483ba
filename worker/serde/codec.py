"""The three records of the data flow as framed Avro: charge events, decisions, dead letters.

Hot path: an event written under our current charge_event schema is read straight into a
Charge by generated code, and its Avro body is kept so a decision that bills it unchanged
splices it in; decisions are written by generated code too (worker.serde.records). Anything
else (an older or evolved writer schema) is resolved by fastavro and validated into a Charge.
Cold paths (readers of the output topics, dead letters, tools) use fastavro and the pydantic
contract models.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from rules.charge import Charge, Decision, charge_from_avro, describe_invalid
from rules.model import ChargeDecision, ChargeEvent, DeadLetter, ErrorKind
from worker.errors import UndecidableRecord
from worker.serde.framing import DEAD_LETTER, DECISION, EVENT, HEADER, MAGIC, LocalRegistry
from worker.serde.records import DecisionWriter, EventReader, charge_writer


class Decoded(NamedTuple):
    charge: Charge
    body: bytes | None  # its Avro body under our current schema, when it was written so


class Codec:
    """The three records of the data flow, framed."""

    def __init__(self, registry: LocalRegistry | None = None) -> None:
        self.registry = registry or LocalRegistry()
        event, decision = self.registry.current[EVENT], self.registry.current[DECISION]
        self._event_id = event.schema_id
        self._read_event = EventReader(event.document)
        self._write_charge = charge_writer(event.document)
        self._write_decision = DecisionWriter(decision.document, self._write_charge)
        self._decision_header = HEADER.pack(MAGIC, decision.schema_id)
        self._event_header = HEADER.pack(MAGIC, event.schema_id)

    def decode_event(self, value: bytes | None) -> Charge:
        """A validated Charge; UndecidableRecord (DECODE, SCHEMA or VALIDATION) otherwise."""
        return self.read_event(value).charge

    def read_event(self, value: bytes | None) -> Decoded:
        """`decode_event`, and the event's Avro body when it was written under our schema."""
        if (
            value is not None
            and len(value) > HEADER.size
            and value[0] == MAGIC
            and int.from_bytes(value[1:5], "big") == self._event_id
        ):
            body = value[HEADER.size :]
            try:
                return Decoded(self._read_event(body), body)
            except msgspec.ValidationError as error:
                raise UndecidableRecord(ErrorKind.VALIDATION, describe_invalid(error)) from error
            except (ValueError, IndexError, OverflowError) as error:
                raise UndecidableRecord(
                    ErrorKind.DECODE, f"Avro body does not decode: {type(error).__name__}"
                ) from error
        record = self.registry.decode(value, EVENT)  # another writer schema: resolve it
        try:
            return Decoded(charge_from_avro(record), None)
        except msgspec.ValidationError as error:
            raise UndecidableRecord(ErrorKind.VALIDATION, describe_invalid(error)) from error

    def encode_charge(self, charge: Charge) -> bytes:
        """A Charge's Avro body under our current schema."""
        return bytes(self._write_charge(charge, bytearray()))

    def encode_event(self, event: ChargeEvent | Charge) -> bytes:
        if isinstance(event, Charge):
            return self._event_header + self.encode_charge(event)
        return self.registry.encode(EVENT, event.model_dump())

    def encode_decision(self, decision: Decision, charge_body: bytes | None = None) -> bytes:
        """Framed; `charge_body`: the billed charge's Avro body, when it is at hand."""
        out = bytearray(self._decision_header)
        self._write_decision(decision, out, charge_body)
        return bytes(out)

    def decode_decision(self, value: bytes) -> ChargeDecision:
        return ChargeDecision.model_validate(self.registry.decode(value, DECISION))

    def encode_dead_letter(self, letter: DeadLetter) -> bytes:
        return self.registry.encode(DEAD_LETTER, letter.model_dump())

    def decode_dead_letter(self, value: bytes) -> DeadLetter:
        return DeadLetter.model_validate(self.registry.decode(value, DEAD_LETTER))


def decision_json(decision: Decision) -> str:
    """A decision as one JSON line (replay's file output): msgspec's field order and ISO-8601
    times, readable by the pydantic ChargeDecision."""
    return msgspec.json.encode(decision).decode()
