"""The hot path's Avro: charge events read straight into Structs, decisions written from them.

Generated once from schemas/ (worker.serde.avro_fast) for records written under our current
schemas. A decision embeds the billed charge; when that is the input event unchanged, the
event's own Avro body is spliced in instead of encoding the charge again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from rules import charge as lean
from rules import model
from rules.charge import Charge, Decision
from worker.serde.avro_fast import compile_reader, compile_writer, enum_types

NAMESPACE = "chargecapture.v1"
_ENUMS = enum_types(
    model.EventType,
    model.PlanType,
    model.Specialty,
    model.PerformedBy,
    model.TractionMethod,
    model.BodyRegion,
    model.PlanOfCare,
    model.DecisionStatus,
)
STRUCTS: dict[str, type] = {
    f"{NAMESPACE}.{name}": getattr(lean, name)
    for name in ("Payer", "RenderingProvider", "TractionDetail", "Documentation", "Correction")
} | {
    f"{NAMESPACE}.ChargeEvent": Charge,
    f"{NAMESPACE}.Hold": lean.Hold,
    f"{NAMESPACE}.RulePackRef": lean.RulePackRef,
    f"{NAMESPACE}.DecisionSource": lean.DecisionSource,
    f"{NAMESPACE}.ChargeDecision": Decision,
    **_ENUMS,
}
_PATIENT_ID = re.compile(r"[^\x00-\x1f\x7f]+")


class EventReader:
    """Reads ChargeEvent bodies written under `schema` (our current one) into Charges."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._read = compile_reader(schema, STRUCTS)

    def __call__(self, body: bytes) -> Charge:
        """Raises ValueError (and kin) for bytes that do not decode, and msgspec's
        ValidationError for a record Avro's types allow but the model does not."""
        charge, end = self._read(body, 0)
        if end != len(body):
            raise ValueError("the Avro record ends before or after the value does")
        if not (
            charge.event_id
            and charge.charge_id
            and charge.payer.payer_id
            and _PATIENT_ID.fullmatch(charge.patient_id)
        ):
            # Rare: let the model say what is wrong, in its words (a path, never the value).
            msgspec.convert(msgspec.to_builtins(charge), Charge, strict=False)
        return lean.interned(charge)


class DecisionWriter:
    """Writes Decisions under `schema` (our current ChargeDecision), splicing in the billed
    charge's body when it is the input event's own."""

    def __init__(self, schema: dict[str, Any], charge_writer: Callable[[Any, bytearray], Any]):
        fields = schema["fields"]
        at = next(n for n, f in enumerate(fields) if f["name"] == "charge")
        head = {**schema, "fields": fields[:at]}
        tail = {**schema, "name": "ChargeDecisionTail", "fields": fields[at + 1 :]}
        self._head = compile_writer(head)
        self._tail = compile_writer(tail)
        self._charge = charge_writer

    def __call__(self, decision: Decision, out: bytearray, charge_body: bytes | None) -> None:
        self._head(decision, out)
        if charge_body is not None:
            out += charge_body
        else:
            self._charge(decision.charge, out)
        self._tail(decision, out)


def charge_writer(schema: dict[str, Any]) -> Callable[[Any, bytearray], Any]:
    return compile_writer(schema)
