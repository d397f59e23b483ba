"""Builders for ChargeEvents in tests: a clean 97012 line that no rule touches, plus overrides."""

from __future__ import annotations

import datetime as dt
from typing import Any

from msgspec.structs import asdict as to_dict

from rules.charge import Charge, charge_from_dict
from rules.model import ChargeEvent

DOS = dt.date(2026, 3, 2)


def event_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "E-" + str(overrides.get("charge_id", "C1")),
        "event_type": "UPSERT",
        "occurred_at": "2026-03-02T15:00:00Z",
        "charge_id": "C1",
        "patient_id": "P00000001",
        "encounter_id": "ENC1",
        "date_of_service": DOS.isoformat(),
        "cpt_code": "97012",
        "modifiers": [],
        "units": 1,
        "diagnosis_codes": ["M54.16"],
        "payer": {"payer_id": "AETNA", "name": "Aetna", "plan_type": "COMMERCIAL"},
        "rendering_provider": {"npi": "1234567893", "specialty": "PHYSICAL_THERAPIST"},
        "performed_by": "PROVIDER",
        "supervising_provider_in_suite": None,
        "traction": {
            "method": "MECHANICAL_DEVICE",
            "device": "Chattanooga Triton",
            "body_regions": ["LUMBAR"],
            "minutes": 15,
        },
        "documentation": {
            "medical_necessity": True,
            "device_and_region": True,
            "times_or_duration": True,
            "progress_note": True,
            "plan_of_care": "PHYSICAL_THERAPY",
        },
        "abn_on_file": False,
        "place_of_service": "11",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def charge(**overrides: Any) -> Charge:
    """A validated Charge, as the worker's edge makes one."""
    return charge_from_dict(event_dict(**overrides))


def avro_fields(**overrides: Any) -> dict[str, Any]:
    """The event as fastavro writes it (Python dates and times), through the pydantic model."""
    return ChargeEvent.model_validate(event_dict(**overrides)).model_dump()


def lean(event: ChargeEvent | Charge) -> Charge:
    """The pydantic contract model of an event (e.g. read back from a topic) as a Charge."""
    return event if isinstance(event, Charge) else charge_from_dict(event.model_dump())


def findings(items: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Corrections or holds, pydantic or lean, as plain dicts to compare."""
    return [i.model_dump() if hasattr(i, "model_dump") else to_dict(i) for i in items]


def other_line(code: str, charge_id: str, **overrides: Any) -> Charge:
    """A non-traction line of the same visit."""
    return charge(charge_id=charge_id, cpt_code=code, traction=None, **overrides)


MEDICARE = {"payer_id": "MEDICARE", "name": "Medicare Part B", "plan_type": "MEDICARE"}
CHIROPRACTOR = {"npi": "1234567893", "specialty": "CHIROPRACTOR"}
