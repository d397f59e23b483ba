"""Data contracts: pydantic models that mirror schemas/*.avsc one to one.

tests/test_models_match_avro.py proves the field names, types and optionality agree, so the
Avro schemas (the wire contract) and these models (the in-process contract) cannot drift.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class EventType(StrEnum):
    UPSERT = "UPSERT"
    VOID = "VOID"


class PlanType(StrEnum):
    MEDICARE = "MEDICARE"
    MEDICARE_ADVANTAGE = "MEDICARE_ADVANTAGE"
    MEDICAID = "MEDICAID"
    COMMERCIAL = "COMMERCIAL"
    WORKERS_COMP = "WORKERS_COMP"
    AUTO = "AUTO"
    SELF_PAY = "SELF_PAY"
    OTHER = "OTHER"


class Specialty(StrEnum):
    CHIROPRACTOR = "CHIROPRACTOR"
    PHYSICAL_THERAPIST = "PHYSICAL_THERAPIST"
    PHYSICIAN = "PHYSICIAN"
    OTHER = "OTHER"


class PerformedBy(StrEnum):
    PROVIDER = "PROVIDER"
    ASSISTANT = "ASSISTANT"


class TractionMethod(StrEnum):
    MECHANICAL_DEVICE = "MECHANICAL_DEVICE"
    ROLLER_TABLE = "ROLLER_TABLE"
    STATIC_BLOCKS = "STATIC_BLOCKS"
    FLEXION_DISTRACTION = "FLEXION_DISTRACTION"
    MANUAL = "MANUAL"
    DECOMPRESSION_DEVICE = "DECOMPRESSION_DEVICE"


class BodyRegion(StrEnum):
    CERVICAL = "CERVICAL"
    THORACIC = "THORACIC"
    LUMBAR = "LUMBAR"
    SACRAL = "SACRAL"
    PELVIC = "PELVIC"


class PlanOfCare(StrEnum):
    NONE = "NONE"
    PHYSICAL_THERAPY = "PHYSICAL_THERAPY"
    CHIROPRACTIC = "CHIROPRACTIC"


class DecisionStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    CORRECTED = "CORRECTED"
    HELD = "HELD"
    RETRACTED = "RETRACTED"
    VOIDED = "VOIDED"


class ErrorKind(StrEnum):
    DECODE = "DECODE"
    SCHEMA = "SCHEMA"
    VALIDATION = "VALIDATION"
    REPARTITION = "REPARTITION"
    # Added in schemas/dead_letter.v2.avsc (the enum's default, VALIDATION, lets readers of
    # a later version read symbols they do not know).
    TOO_LARGE = "TOO_LARGE"  # the record, or what deciding it produces, is over a size limit
    UNPRODUCIBLE = "UNPRODUCIBLE"  # the broker refused its outputs for another per-record reason


NonEmpty = Annotated[str, Field(min_length=1)]
# A patient id keys Kafka records and state; control characters in it are never a real id and
# would collide with the state store's key separators.
PatientId = Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Payer(_Frozen):
    payer_id: NonEmpty
    name: str
    plan_type: PlanType


class RenderingProvider(_Frozen):
    npi: str
    specialty: Specialty


class TractionDetail(_Frozen):
    method: TractionMethod
    device: str | None = None
    body_regions: tuple[BodyRegion, ...]
    minutes: int | None = None


class Documentation(_Frozen):
    medical_necessity: bool
    device_and_region: bool
    times_or_duration: bool
    progress_note: bool
    plan_of_care: PlanOfCare


class ChargeEvent(_Frozen):
    """One captured charge line event (schemas/charge_event.avsc).

    Only what makes an event impossible to decide is rejected here; problems a biller can fix
    (units < 1, a malformed code, too many modifiers) pass and become holds (docs/rules.md).
    """

    event_id: NonEmpty
    event_type: EventType
    occurred_at: dt.datetime
    charge_id: NonEmpty
    patient_id: PatientId
    encounter_id: str | None = None
    date_of_service: dt.date
    cpt_code: str
    modifiers: tuple[str, ...]
    units: int
    diagnosis_codes: tuple[str, ...]
    payer: Payer
    rendering_provider: RenderingProvider
    performed_by: PerformedBy
    supervising_provider_in_suite: bool | None = None
    traction: TractionDetail | None = None
    documentation: Documentation
    abn_on_file: bool
    place_of_service: str

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_text_in_json(cls, value: object, info: ValidationInfo) -> object:
        # JSON input carries ISO-8601 text (docs/data-flow.md). pydantic would also take a
        # number (or a numeric string) as Unix seconds: 1767225600000 meant as milliseconds
        # becomes the year 57970, so a number is refused rather than guessed at. Avro input
        # (python mode) is unaffected: timestamp-millis arrives as a datetime.
        if info.mode != "json":
            return value
        if isinstance(value, int | float) or (
            isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()
        ):
            raise ValueError("must be ISO-8601 text (e.g. 2026-03-02T14:05:00Z), not a number")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware_utc(cls, value: dt.datetime) -> dt.datetime:
        # Event time is compared across sources; a naive timestamp is taken as UTC, as Avro's
        # timestamp-millis is, so the same instant always orders the same way.
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Correction(_Frozen):
    rule_id: str
    field: str
    before: str | None = None
    after: str | None = None
    message: str


class Hold(_Frozen):
    rule_id: str
    message: str
    related_charge_ids: tuple[str, ...]


class RulePackRef(_Frozen):
    id: str
    version: str


class DecisionSource(_Frozen):
    topic: str
    partition: int
    offset: int
    event_id: str


class ChargeDecision(_Frozen):
    """One change of a charge's decision (schemas/charge_decision.avsc), keyed by charge_id."""

    charge_id: str
    patient_id: str
    date_of_service: dt.date
    status: DecisionStatus
    charge: ChargeEvent
    corrections: tuple[Correction, ...]
    holds: tuple[Hold, ...]
    decision_version: int
    rule_pack: RulePackRef
    source: DecisionSource
    flags: tuple[str, ...] = ()


class DeadLetter(_Frozen):
    """An input record that cannot be decided (schemas/dead_letter.v2.avsc).

    `value` is the input's value as received, or only its first bytes when the whole would
    not fit in a DLQ record: then `value_length` is the original length and `value_sha256`
    its digest (hex), so the record can still be matched to its source."""

    key: bytes | None = None
    value: bytes | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: dt.datetime | None = None
    error_kind: ErrorKind
    error_message: str
    value_length: int | None = None
    value_sha256: str | None = None
