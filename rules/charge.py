"""The lean in-process model: what lives in state and flows through the rules.

`rules.model` holds the pydantic contract models that mirror schemas/*.avsc for the cold
edges (readers of the output topics, the dead-letter record, tests). On the hot path every
event is validated once, at the edge, straight into these msgspec Structs (from the fastavro
dict of an Avro record, or from a JSON line): frozen, slotted, and not tracked by the cyclic
garbage collector (`gc=False`: they hold only strings, numbers, tuples and other such Structs,
so they can never be part of a reference cycle). Shared parts (payer, provider, codes) are
interned, so a day of charges from a few clinics holds each payer once.

tests/test_models_match_avro.py proves these Structs, the pydantic models and the Avro
schemas agree field for field.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from typing import Annotated, Any, TypeVar

import msgspec

from rules.model import (
    BodyRegion,
    DecisionStatus,
    EventType,
    PerformedBy,
    PlanOfCare,
    PlanType,
    Specialty,
    TractionMethod,
)

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# A patient id keys Kafka records and state; control characters in it are never a real id and
# would collide with the state store's key separators.
PatientId = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+\Z")]


class _Lean(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    pass


class Payer(_Lean, frozen=True, gc=False, kw_only=True):
    payer_id: NonEmpty
    name: str
    plan_type: PlanType


class RenderingProvider(_Lean, frozen=True, gc=False, kw_only=True):
    npi: str
    specialty: Specialty


class TractionDetail(_Lean, frozen=True, gc=False, kw_only=True):
    method: TractionMethod
    device: str | None = None
    body_regions: tuple[BodyRegion, ...]
    minutes: int | None = None


class Documentation(_Lean, frozen=True, gc=False, kw_only=True):
    medical_necessity: bool
    device_and_region: bool
    times_or_duration: bool
    progress_note: bool
    plan_of_care: PlanOfCare


class Charge(_Lean, frozen=True, gc=False, kw_only=True):
    """One captured charge line event, validated (schemas/charge_event.avsc).

    Only what makes an event impossible to decide is rejected; problems a biller can fix
    (units < 1, a malformed code, too many modifiers) pass and become holds.
    """

    event_id: NonEmpty
    event_type: EventType
    occurred_at: dt.datetime  # always UTC (see `_utc`)
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

    def __post_init__(self) -> None:
        # Event time is compared across sources: a naive timestamp is taken as UTC, as Avro's
        # timestamp-millis is, and an offset is converted, so the same instant always orders
        # (and dates) the same way.
        at = self.occurred_at
        if at.tzinfo is not dt.UTC:
            msgspec.structs.force_setattr(self, "occurred_at", _utc(at))


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


class Correction(_Lean, frozen=True, gc=False, kw_only=True):
    rule_id: str
    field: str
    before: str | None
    after: str | None
    message: str


class Hold(_Lean, frozen=True, gc=False, kw_only=True):
    rule_id: str
    message: str
    related_charge_ids: tuple[str, ...]


class RulePackRef(_Lean, frozen=True, gc=False, kw_only=True):
    id: str
    version: str


class DecisionSource(_Lean, frozen=True, gc=False, kw_only=True):
    topic: str
    partition: int
    offset: int
    event_id: str


class Decision(_Lean, frozen=True, gc=False, kw_only=True):
    """One change of a charge's decision (schemas/charge_decision.avsc), keyed by charge_id."""

    charge_id: str
    patient_id: str
    date_of_service: dt.date
    status: DecisionStatus
    charge: Charge
    corrections: tuple[Correction, ...]
    holds: tuple[Hold, ...]
    decision_version: int
    rule_pack: RulePackRef
    source: DecisionSource
    flags: tuple[str, ...] = ()


# -- the edge: validation and interning --------------------------------------------------------

ValidationError = msgspec.ValidationError
_JSON = msgspec.json.Decoder(Charge, strict=True)
T = TypeVar("T")
_SHARED: dict[Any, Any] = {}
_SHARED_LIMIT = 200_000  # distinct shared parts kept; past it the table starts again


def _shared(value: T) -> T:
    """The one instance of an immutable value (payer, provider, code tuples, dates)."""
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()  # a bound on memory, not on correctness: identity is an optimisation
        _SHARED[value] = found = value
    return found


def interned(charge: Charge) -> Charge:
    """`charge` with its shared parts replaced by their one instance (a fresh Charge only:
    it is changed in place, before anything else holds it)."""
    shared, put = _shared, msgspec.structs.force_setattr
    put(charge, "patient_id", sys.intern(charge.patient_id))
    put(charge, "date_of_service", shared(charge.date_of_service))
    put(charge, "modifiers", shared(charge.modifiers))
    put(charge, "diagnosis_codes", shared(charge.diagnosis_codes))
    put(charge, "payer", shared(charge.payer))
    put(charge, "rendering_provider", shared(charge.rendering_provider))
    put(charge, "documentation", shared(charge.documentation))
    if charge.traction is not None:
        put(charge, "traction", shared(charge.traction))
    return charge


def charge_from_avro(record: dict[str, Any]) -> Charge:
    """A fastavro-decoded ChargeEvent as a validated, interned Charge.

    Avro already guarantees the types and enum symbols; this pass checks what it cannot
    (non-empty ids, the patient id's characters) and builds the Struct in one C call.
    Raises ValidationError with the field's path (never its value).
    """
    return interned(msgspec.convert(record, Charge))


def charge_from_json(line: str | bytes) -> Charge:
    """A JSON ChargeEvent (dates `YYYY-MM-DD`, timestamps ISO-8601) as a validated Charge.

    Strict: a timestamp given as a bare number, a number given as a string, an unknown
    field are errors. Raises ValidationError (or msgspec.DecodeError for malformed JSON).
    """
    try:
        return _JSON.decode(line)
    except msgspec.ValidationError as error:
        if "$.occurred_at" not in str(error):
            raise
        # RFC 3339 is what the fast decoder reads; ISO-8601 also allows e.g. `T16:00Z`. A
        # number (an epoch?) or text that is no ISO-8601 time stays the error it is.
        fields = msgspec.json.decode(line)
        at = fields.get("occurred_at") if isinstance(fields, dict) else None
        if not isinstance(at, str):
            raise
        try:
            parsed = dt.datetime.fromisoformat(at)
        except ValueError:
            raise error from None
    return msgspec.convert({**fields, "occurred_at": parsed}, Charge)


def charge_from_dict(fields: dict[str, Any]) -> Charge:
    """A ChargeEvent given as JSON-ready Python values (tests, the sample generator), as
    strict as `charge_from_json`."""
    at = fields.get("occurred_at")
    if isinstance(at, str):
        with contextlib.suppress(ValueError):  # if it does not parse, the model says why
            fields = {**fields, "occurred_at": dt.datetime.fromisoformat(at)}
    return msgspec.convert(fields, Charge)


def describe_invalid(error: msgspec.ValidationError | msgspec.DecodeError) -> str:
    """Field path and problem, never the offending value (it may be PHI): `units: Expected
    `int`, got `str``."""
    text = str(error)
    problem, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".") if where else ""
    return f"{path or 'record'}: {problem}"
