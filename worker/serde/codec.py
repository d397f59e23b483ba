"""The three records of the data flow as framed Avro: charge events, decisions, dead letters."""

from __future__ import annotations

from pydantic import ValidationError

from rules.model import ChargeDecision, ChargeEvent, DeadLetter, ErrorKind
from worker.errors import UndecidableRecord
from worker.serde.framing import DEAD_LETTER, DECISION, EVENT, LocalRegistry


class Codec:
    """The three records of the data flow, framed."""

    def __init__(self, registry: LocalRegistry | None = None) -> None:
        self.registry = registry or LocalRegistry()

    def decode_event(self, value: bytes | None) -> ChargeEvent:
        record = self.registry.decode(value, EVENT)
        try:
            return ChargeEvent.model_validate(record)
        except ValidationError as error:
            raise UndecidableRecord(ErrorKind.VALIDATION, describe(error)) from error

    def encode_event(self, event: ChargeEvent) -> bytes:
        return self.registry.encode(EVENT, event.model_dump())

    def encode_decision(self, decision: ChargeDecision) -> bytes:
        return self.registry.encode(DECISION, decision.model_dump())

    def decode_decision(self, value: bytes) -> ChargeDecision:
        return ChargeDecision.model_validate(self.registry.decode(value, DECISION))

    def encode_dead_letter(self, letter: DeadLetter) -> bytes:
        return self.registry.encode(DEAD_LETTER, letter.model_dump())

    def decode_dead_letter(self, value: bytes) -> DeadLetter:
        return DeadLetter.model_validate(self.registry.decode(value, DEAD_LETTER))


def describe(error: ValidationError) -> str:
    """Field path and problem for each error, never the offending value (it may be PHI)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
