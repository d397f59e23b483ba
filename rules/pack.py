"""Rule packs: effective-dated, declarative parameters of the rules (rules/packs/*.toml).

The pack in force on a visit's date of service decides it: the pack with the latest
`effective_from` on or before that date. A date of service before every pack has no pack in
force: `PackSet.for_date` raises `PackNotInForce` rather than guess, and the caller treats the
charge as undecidable.

A pack that cannot be read raises `PackError`, whose message is one line naming the file, the
line where one is known, the key or column, and the problem.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rules.charge import RulePackRef
from rules.model import Documentation, PlanType
from rules.ncci import MueLimit, NcciFileError, PtpEdits, load_mue
from rules.pack_toml import PackError, Table, toml_problem

__all__ = [
    "DEFAULT_PACKS_DIR",
    "PackError",
    "PackNotInForce",
    "PackSet",
    "RulePack",
    "load_pack",
    "load_packs",
]

DEFAULT_PACKS_DIR = Path(__file__).parent / "packs"


class PackNotInForce(LookupError):
    """No pack is in force on a date of service: it is before every pack's effective_from."""

    def __init__(self, date_of_service: dt.date, earliest: dt.date) -> None:
        self.date_of_service, self.earliest = date_of_service, earliest
        super().__init__(
            f"no rule pack in force on date of service {date_of_service.isoformat()}: "
            f"the earliest pack takes effect {earliest.isoformat()}"
        )


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
    max_diagnosis_codes: int
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
    # The CMS NCCI edits of the pack's [ncci] files, indexed by column-2 then column-1 code.
    ptp_edits: PtpEdits = field(default_factory=PtpEdits)
    mue_limits: Mapping[str, MueLimit] = field(default_factory=dict)
    source: str = field(default="", compare=False)  # the file it was read from
    # supporting_diagnoses indexed by their code, so a lookup tries a code's few prefixes
    # instead of scanning the whole list: this runs for every traction line.
    _gp_payer_from: Mapping[str, dt.date] = field(default_factory=dict, repr=False, compare=False)
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
        starts: dict[str, dt.date] = {}
        for payer in self.gp_payers:  # the earliest date a payer's GP requirement applies
            starts[payer.payer_id] = min(
                payer.effective_from, starts.get(payer.payer_id, dt.date.max)
            )
        object.__setattr__(self, "_gp_payer_from", starts)

    @property
    def ref(self) -> RulePackRef:
        return RulePackRef(id=self.id, version=self.version)

    def gp_required(self, plan_type: PlanType, payer_id: str, day: dt.date) -> bool:
        if plan_type in self.gp_plan_types:
            return True
        start = self._gp_payer_from.get(payer_id)
        return start is not None and start <= day

    def supporting(self, icd10: str, day: dt.date) -> bool:
        index = self._support_index
        for end in range(3, len(icd10) + 1):
            for entry in index.get(icd10[:end], ()):
                if entry.supports(icd10, day):
                    return True
        return False


class PackSet:
    """The packs of one directory, ordered by effective date; one pack per effective date."""

    def __init__(self, packs: Iterable[RulePack]) -> None:
        self.packs: tuple[RulePack, ...] = tuple(sorted(packs, key=lambda p: p.effective_from))
        if not self.packs:
            raise PackError("no rule pack found")
        for before, after in zip(self.packs, self.packs[1:], strict=False):
            if before.effective_from == after.effective_from:
                raise PackError(_same_start(before, after))
        self._starts = [p.effective_from for p in self.packs]

    def for_date(self, date_of_service: dt.date) -> RulePack:
        """The pack in force on `date_of_service`; PackNotInForce before every pack."""
        index = bisect.bisect_right(self._starts, date_of_service) - 1
        if index < 0:
            raise PackNotInForce(date_of_service, self._starts[0])
        return self.packs[index]


def _same_start(a: RulePack, b: RulePack) -> str:
    names = " and ".join(p.source or f"pack {p.id} {p.version}" for p in (a, b))
    who = f"id {a.id!r}" if a.id == b.id else f"ids {a.id!r} and {b.id!r}"
    return (
        f"{names}: both packs ({who}) take effect {a.effective_from.isoformat()}; a date of "
        "service must have one pack in force: give one a later effective_from or remove it"
    )


def load_packs(directory: Path | None = None) -> PackSet:
    directory = directory or DEFAULT_PACKS_DIR
    if not directory.exists():
        raise PackError(f"{directory}: no such rule-pack directory")
    if not directory.is_dir():
        raise PackError(f"{directory}: not a directory (a rule-pack directory holds *.toml)")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PackError(f"{directory}: no rule pack (*.toml) in this directory")
    return PackSet(load_pack(path) for path in files)


def load_pack(path: Path) -> RulePack:
    source = os.path.normpath(path)
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except tomllib.TOMLDecodeError as error:
        raise PackError(toml_problem(source, error)) from None
    except UnicodeDecodeError as error:
        raise PackError(f"{source}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise PackError(f"{source}: cannot read it ({error.strerror or error})") from None
    return _build(Table(source, "", data), path.parent)


def _build(root: Table, base: Path) -> RulePack:
    pack = root.table("pack")
    traction = root.table("traction")
    mods = root.table("modifiers")
    pairs = root.table("distinct_pairs")
    cmt = root.table("cmt")
    gp = root.table("gp_required")
    chiro = root.table("medicare_chiropractor")
    np = root.table("not_mechanical_traction")
    decompression = root.table("decompression")
    docs = root.table("documentation")
    diagnosis = root.table("diagnosis")
    ncci = root.table("ncci", {})
    built = RulePack(
        id=pack.string("id"),
        version=_version(pack),
        effective_from=pack.date("effective_from"),
        traction_code=traction.string("code"),
        traction_max_units=traction.integer("max_units", 1),
        max_modifiers=mods.integer("max_per_line", 1),
        max_diagnosis_codes=diagnosis.integer("max_per_claim", 1, default=12),
        distinct_modifiers=frozenset(mods.strings("distinct")),
        distinct_either_line_from=mods.optional_date("distinct_either_line_from"),
        x_modifiers=frozenset(mods.strings("x_modifiers")),
        therapy_modifiers=frozenset(mods.strings("therapy")),
        distinct_pair_codes=frozenset(pairs.strings("codes")),
        cmt_codes=frozenset(cmt.strings("codes")),
        gp_plan_types=gp.plans("plan_types"),
        gp_payers=tuple(_payer(entry) for entry in gp.tables("payers")),
        gy_plan_types=chiro.plans("plan_types"),
        gy_modifier=chiro.string("modifier"),
        roller_table_unlisted_code=np.string("roller_table_unlisted_code"),
        roller_table_unlisted_payer_ids=frozenset(np.strings("roller_table_unlisted_payer_ids")),
        manual_code=np.string("manual_code"),
        decompression_codes=tuple(decompression.strings("codes")),
        decompression_ncd_plan_types=decompression.plans("ncd_plan_types"),
        decompression_ncd_from=decompression.date("ncd_effective_from"),
        documentation_required=_documentation(docs),
        supporting_diagnoses=tuple(_diagnosis(entry) for entry in diagnosis.tables("supporting")),
        source=root.source,
    )
    ptp_files = [base / name for name in ncci.strings("ptp_files", [])]
    mue_files = [base / name for name in ncci.strings("mue_files", [])]
    # Every key is read by now: refuse unknown ones before the (long) load of the NCCI files.
    for table in (pack, traction, mods, pairs, cmt, gp, chiro, np, decompression, docs):
        table.done()
    for table in (diagnosis, ncci, root):
        table.done()
    try:
        ptp = PtpEdits.load(ptp_files)
    except NcciFileError as error:
        raise PackError(f"{error} ({ncci.ref('ptp_files')} of {root.source})") from None
    mue: dict[str, MueLimit] = {}
    try:
        for path in mue_files:  # a code in a later file replaces the earlier limit
            mue.update((limit.code, limit) for limit in load_mue(path))
    except NcciFileError as error:
        raise PackError(f"{error} ({ncci.ref('mue_files')} of {root.source})") from None
    return dataclasses.replace(built, ptp_edits=ptp, mue_limits=mue)


def _version(pack: Table) -> str:
    version = pack.value("version")
    if isinstance(version, int) and not isinstance(version, bool):
        return str(version)
    return pack.string("version")


def _payer(entry: Table) -> DatedPayer:
    effective_from = entry.optional_date("effective_from") or dt.date.min
    payer = DatedPayer(entry.string("payer_id"), effective_from)
    entry.done()
    return payer


def _diagnosis(entry: Table) -> SupportingDiagnosis:
    has_prefix, has_code = "prefix" in entry.data, "code" in entry.data
    if has_prefix == has_code:
        raise entry.error(None, "give exactly one of prefix (a code family) or code (one code)")
    found = SupportingDiagnosis(
        code=entry.string("prefix" if has_prefix else "code"),
        is_prefix=has_prefix,
        valid_from=entry.optional_date("valid_from"),
        valid_to=entry.optional_date("valid_to"),
    )
    if found.valid_from and found.valid_to and found.valid_from > found.valid_to:
        raise entry.error("valid_to", f"{found.valid_to} is before valid_from {found.valid_from}")
    entry.done()
    return found


def _documentation(docs: Table) -> tuple[str, ...]:
    names = docs.strings("required")
    known = [name for name, f in Documentation.model_fields.items() if f.annotation is bool]
    for name in names:
        if name not in known:
            flags = ", ".join(known)
            raise docs.error("required", f"unknown documentation flag {name!r} (one of {flags})")
    return tuple(names)
