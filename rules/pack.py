"""Rule packs: effective-dated, declarative parameters of the rules (rules/packs/*.toml).

The pack in force on a visit's date of service decides it: the pack with the latest
`effective_from` on or before that date (dates before every pack fall to the earliest one,
so a configuration gap can never stall the stream).
"""

from __future__ import annotations

import bisect
import datetime as dt
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.model import PlanType, RulePackRef
from rules.ncci import MueLimit, PtpEdit, load_mue, load_ptp

DEFAULT_PACKS_DIR = Path(__file__).parent / "packs"


@dataclass(frozen=True, slots=True)
class DatedPayer:
    payer_id: str
    effective_from: dt.date

    def applies(self, payer_id: str, day: dt.date) -> bool:
        return payer_id == self.payer_id and self.effective_from <= day


@dataclass(frozen=True, slots=True)
class SupportingDiagnosis:
    """An ICD-10-CM code (`exact`) or the subcodes of a family (`prefix`), valid for a span."""

    code: str
    is_prefix: bool
    valid_from: dt.date | None
    valid_to: dt.date | None

    def supports(self, icd10: str, day: dt.date) -> bool:
        if self.valid_from is not None and day < self.valid_from:
            return False
        if self.valid_to is not None and day > self.valid_to:
            return False
        if self.is_prefix:
            # Subcodes only: "M54.5" as a prefix means M54.50/M54.51/M54.59, never M54.5 itself.
            return len(icd10) > len(self.code) and icd10.startswith(self.code)
        return icd10 == self.code


@dataclass(frozen=True, slots=True)
class RulePack:
    id: str
    version: str
    effective_from: dt.date
    traction_code: str
    traction_max_units: int
    max_modifiers: int
    distinct_modifiers: frozenset[str]
    # NCCI PTP: from this date of service a distinct modifier on either line of a pair counts;
    # before it, only on the column-2 line (None: the column-2 line only, always).
    distinct_either_line_from: dt.date | None
    x_modifiers: frozenset[str]
    therapy_modifiers: frozenset[str]
    distinct_pair_codes: frozenset[str]
    cmt_codes: frozenset[str]
    gp_plan_types: frozenset[PlanType]
    gp_payers: tuple[DatedPayer, ...]
    gy_plan_types: frozenset[PlanType]
    gy_modifier: str
    roller_table_unlisted_code: str
    roller_table_unlisted_payer_ids: frozenset[str]
    manual_code: str
    decompression_codes: tuple[str, ...]
    decompression_ncd_plan_types: frozenset[PlanType]
    decompression_ncd_from: dt.date
    documentation_required: tuple[str, ...]
    supporting_diagnoses: tuple[SupportingDiagnosis, ...]
    ptp_edits: tuple[PtpEdit, ...] = ()
    mue_limits: Mapping[str, MueLimit] = field(default_factory=dict)
    # supporting_diagnoses indexed by their code, so a lookup tries a code's few prefixes
    # instead of scanning the whole list: this runs for every traction line.
    _support_index: Mapping[str, tuple[SupportingDiagnosis, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def distinct_on_either_line(self, day: dt.date) -> bool:
        start = self.distinct_either_line_from
        return start is not None and day >= start

    def __post_init__(self) -> None:
        index: dict[str, list[SupportingDiagnosis]] = {}
        for entry in self.supporting_diagnoses:
            index.setdefault(entry.code, []).append(entry)
        object.__setattr__(self, "_support_index", {k: tuple(v) for k, v in index.items()})

    @property
    def ref(self) -> RulePackRef:
        return RulePackRef(id=self.id, version=self.version)

    def gp_required(self, plan_type: PlanType, payer_id: str, day: dt.date) -> bool:
        if plan_type in self.gp_plan_types:
            return True
        return any(p.applies(payer_id, day) for p in self.gp_payers)

    def supporting(self, icd10: str, day: dt.date) -> bool:
        index = self._support_index
        for end in range(3, len(icd10) + 1):
            for entry in index.get(icd10[:end], ()):
                if entry.supports(icd10, day):
                    return True
        return False


class PackSet:
    """The packs of one directory, ordered by effective date."""

    def __init__(self, packs: Iterable[RulePack]) -> None:
        self.packs: tuple[RulePack, ...] = tuple(sorted(packs, key=lambda p: p.effective_from))
        if not self.packs:
            raise ValueError("no rule pack found")
        self._starts = [p.effective_from for p in self.packs]

    def for_date(self, date_of_service: dt.date) -> RulePack:
        index = bisect.bisect_right(self._starts, date_of_service) - 1
        return self.packs[max(index, 0)]


def load_packs(directory: Path | None = None) -> PackSet:
    directory = directory or DEFAULT_PACKS_DIR
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ValueError(f"no rule pack (*.toml) in {directory}")
    return PackSet(load_pack(path) for path in files)


def load_pack(path: Path) -> RulePack:
    with path.open("rb") as stream:
        data = tomllib.load(stream)
    try:
        return _build(data, path.parent)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid rule pack: {error!r}") from error


def _date(text: str | None) -> dt.date | None:
    return None if text is None else dt.date.fromisoformat(str(text))


def _plans(names: Sequence[str]) -> frozenset[PlanType]:
    return frozenset(PlanType(name) for name in names)


def _build(data: dict[str, Any], base: Path) -> RulePack:
    pack, mods, np = data["pack"], data["modifiers"], data["not_mechanical_traction"]
    decompression = data["decompression"]
    effective_from = _date(pack["effective_from"])
    ncd_from = _date(decompression["ncd_effective_from"])
    assert effective_from is not None and ncd_from is not None
    ncci = data.get("ncci", {})
    mue: dict[str, MueLimit] = {}
    for name in ncci.get("mue_files", []):
        mue.update((limit.code, limit) for limit in load_mue(base / name))
    return RulePack(
        id=pack["id"],
        version=str(pack["version"]),
        effective_from=effective_from,
        traction_code=data["traction"]["code"],
        traction_max_units=int(data["traction"]["max_units"]),
        max_modifiers=int(mods["max_per_line"]),
        distinct_modifiers=frozenset(mods["distinct"]),
        distinct_either_line_from=_date(mods.get("distinct_either_line_from")),
        x_modifiers=frozenset(mods["x_modifiers"]),
        therapy_modifiers=frozenset(mods["therapy"]),
        distinct_pair_codes=frozenset(data["distinct_pairs"]["codes"]),
        cmt_codes=frozenset(data["cmt"]["codes"]),
        gp_plan_types=_plans(data["gp_required"]["plan_types"]),
        gp_payers=tuple(
            DatedPayer(p["payer_id"], _date(p.get("effective_from")) or dt.date.min)
            for p in data["gp_required"].get("payers", [])
        ),
        gy_plan_types=_plans(data["medicare_chiropractor"]["plan_types"]),
        gy_modifier=data["medicare_chiropractor"]["modifier"],
        roller_table_unlisted_code=np["roller_table_unlisted_code"],
        roller_table_unlisted_payer_ids=frozenset(np["roller_table_unlisted_payer_ids"]),
        manual_code=np["manual_code"],
        decompression_codes=tuple(decompression["codes"]),
        decompression_ncd_plan_types=_plans(decompression["ncd_plan_types"]),
        decompression_ncd_from=ncd_from,
        documentation_required=tuple(data["documentation"]["required"]),
        supporting_diagnoses=tuple(
            SupportingDiagnosis(
                code=entry.get("prefix") or entry["code"],
                is_prefix="prefix" in entry,
                valid_from=_date(entry.get("valid_from")),
                valid_to=_date(entry.get("valid_to")),
            )
            for entry in data["diagnosis"]["supporting"]
        ),
        ptp_edits=tuple(e for name in ncci.get("ptp_files", []) for e in load_ptp(base / name)),
        mue_limits=mue,
    )
