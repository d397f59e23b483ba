"""Reproducible sample charge events: a realistic day at chiropractic, PT and physician clinics.

`generate_events(visits, seed)` returns JSON-ready `ChargeEvent` dicts (field names exactly as
`rules.model.ChargeEvent`, dates `YYYY-MM-DD`, timestamps ISO-8601 UTC with a `Z`). Everything
is drawn from one `random.Random(seed)`: the same (visits, seed, day) always gives the same list,
never touching the wall clock or the global random state. Plain dicts throughout (no pydantic in
the loop) so a benchmark's 100k events take a second or two.

A visit is one patient on one date of service with 1..5 charge lines. Most lines are clean; a
visit may carry one deliberate problem (sometimes two), one per rule of DESIGN §4, at roughly
the rates in `SCENARIO_RATES_PER_1000_VISITS`. Event dynamics: every charge gets an UPSERT;
some get a later corrected UPSERT or a VOID; about 1% of events are redelivered later (same
event_id); about 10% arrive a few minutes late, so the list is only mostly in occurred_at order.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import itertools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TextIO

__all__ = ["SCENARIO_RATES_PER_1000_VISITS", "generate_events", "write_jsonl"]

Event = dict[str, object]

# Deliberate problems per 1000 visits (primary draw; a few visits get a second one, see
# _SECONDARY_*). Named by the rule each one should trigger.
SCENARIO_RATES_PER_1000_VISITS: Final[dict[str, float]] = {
    "TRACTION_UNITS": 8.0,
    "TRACTION_DUPLICATE": 5.0,
    "NOT_MECHANICAL_TRACTION": 9.0,
    "FLEXION_DISTRACTION": 5.0,
    "DECOMPRESSION_DEVICE": 6.0,
    "DISTINCT_MODIFIER_MISSING": 8.0,
    "MODIFIER_59_WITH_X": 4.0,
    "GP_REQUIRED": 7.0,
    "MEDICARE_CHIROPRACTOR_NONCOVERED": 6.0,
    "SUPERVISION_NOT_MET": 5.0,
    "DOCUMENTATION_INCOMPLETE": 8.0,
    "DIAGNOSIS_NOT_SUPPORTING": 6.0,
    "TOO_MANY_MODIFIERS": 4.0,
    "INVALID_CHARGE": 6.0,
}
_SCENARIO_NAMES: Final = tuple(SCENARIO_RATES_PER_1000_VISITS)
_SCENARIO_CUM: Final = tuple(itertools.accumulate(SCENARIO_RATES_PER_1000_VISITS.values()))
# A visit with a problem sometimes has a second, line-local one.
_SECONDARY_P: Final = 0.10
_SECONDARY: Final = (
    "TRACTION_UNITS",
    "DOCUMENTATION_INCOMPLETE",
    "SUPERVISION_NOT_MET",
    "DIAGNOSIS_NOT_SUPPORTING",
)

# Event dynamics.
_P_FIX_DEFECT: Final = 0.25  # a biller fixes a problem line later in the day (UPSERT or VOID)
_P_CORRECT_CLEAN: Final = 0.04  # a clean line is re-sent with a harmless change
_P_VOID: Final = 0.02
_P_REDELIVER: Final = 0.01
_P_LATE: Final = 0.10
_P_PREVIOUS_DAY: Final = 0.03  # visit entered the morning after
_P_NO_ENCOUNTER: Final = 0.02

# --- reference data -------------------------------------------------------------------------

# (payer_id, name, plan_type)
_PAYERS: Final = (
    ("MEDICARE", "Medicare Part B (Palmetto GBA JM)", "MEDICARE"),
    ("HUMANA-MA", "Humana Medicare Advantage", "MEDICARE_ADVANTAGE"),
    ("UHC", "UnitedHealthcare", "COMMERCIAL"),
    ("BCBSNC", "Blue Cross and Blue Shield of North Carolina", "COMMERCIAL"),
    ("NCSHP", "North Carolina State Health Plan", "COMMERCIAL"),
    ("AETNA", "Aetna", "COMMERCIAL"),
    ("NC-MEDICAID", "NC Medicaid", "MEDICAID"),
    ("WC-ACME", "Acme Workers' Compensation", "WORKERS_COMP"),
    ("AUTO-GEICO", "GEICO Auto PIP/MedPay", "AUTO"),
    ("SELF", "Self Pay", "SELF_PAY"),
)
_PAYER_BY_ID: Final = {p[0]: p for p in _PAYERS}
_GP_PAYERS: Final = frozenset({"MEDICARE", "HUMANA-MA", "UHC", "BCBSNC", "NCSHP"})
_MEDICARE_LIKE: Final = frozenset({"MEDICARE", "HUMANA-MA"})

_CHIRO: Final = "CHIRO"
_PT: Final = "PT"
_MD: Final = "MD"
_KIND_CUM: Final = (45.0, 90.0, 100.0)  # chiropractic, physical therapy, physician offices
_KINDS: Final = (_CHIRO, _PT, _MD)
_SPECIALTY: Final = {_CHIRO: "CHIROPRACTOR", _PT: "PHYSICAL_THERAPIST", _MD: "PHYSICIAN"}
_PLAN_OF_CARE: Final = {_CHIRO: "CHIROPRACTIC", _PT: "PHYSICAL_THERAPY", _MD: "PHYSICAL_THERAPY"}
# payer mix by office kind, in _PAYERS order
_PAYER_CUM: Final = {
    _CHIRO: tuple(itertools.accumulate((18, 10, 9, 16, 8, 7, 4, 4, 10, 14))),
    _PT: tuple(itertools.accumulate((24, 12, 12, 16, 10, 8, 8, 6, 2, 2))),
    _MD: tuple(itertools.accumulate((26, 14, 12, 15, 10, 9, 8, 3, 2, 1))),
}
# share of assistant-applied lines (chiropractic assistant, PTA, office staff)
_P_ASSISTANT_MODALITY: Final = {_CHIRO: 0.35, _PT: 0.25, _MD: 0.10}
_P_ASSISTANT_THERAPY: Final = {_CHIRO: 0.10, _PT: 0.25, _MD: 0.0}
_P_TRACTION: Final = {_CHIRO: 0.82, _PT: 0.85, _MD: 0.75}  # visits with a 97012 line

_TRACTION_DEVICES: Final = (
    "Chattanooga Triton",
    "Chattanooga Tru-Trac",
    "Saunders 3D ActiveTrac",
    "Chattanooga Triton DTS",
)
_DECOMPRESSION_DEVICES: Final = ("DRX9000", "VAX-D")
_ROLLER_TABLES: Final = ("Spinalator", "Sport Roller IST table", None)
_BLOCKS: Final = ("SOT blocks", "Denneroll wedge", None)
_FD_TABLES: Final = ("Cox 8 table", "Lloyd Galaxy flexion table", None)

_CMT_CODES: Final = ("98940", "98941", "98942")
_CMT_CUM: Final = (60.0, 95.0, 100.0)
_CMT_SET: Final = frozenset(_CMT_CODES)
_THERAPY_CODES: Final = frozenset({"97012", "97140", "97110", "97035", "97014", "G0283"})
_DISTINCT_PARTNERS: Final = frozenset({"98940", "98941", "98942", "97140", "97110"})

_DX_CERVICAL: Final = ("M54.2", "M50.120", "M54.12", "M47.812")
_DX_LUMBAR: Final = ("M54.16", "M54.17", "M54.50", "M54.59", "M51.26", "M51.27", "M47.816")
_DX_LUMBAR_EXTRA: Final = ("M48.061",)
_DX_SECONDARY_OTHER: Final = ("R51.9", "G44.209", "M62.830")
_DX_NOT_SUPPORTING: Final = (
    ("M54.5",),  # low back pain: deleted 2021-09-30, still in some templates
    ("M54.5", "Z00.00"),
    ("S13.4XXA",),  # whiplash, initial encounter
    ("S13.4XXA", "R51.9"),
    ("R51.9",),
    ("Z00.00",),
)

_PAD_MODIFIERS: Final = ("KX", "AT", "76", "77", "RT", "LT")


# --- helpers ----------------------------------------------------------------------------------


def _uniform(rng: random.Random, lo: int, hi: int) -> int:
    """An int in [lo, hi), faster than rng.randrange for the hot loop (one rng.random() call)."""
    return lo + int(rng.random() * (hi - lo))


def _pick_cum(rng: random.Random, cum: Sequence[float]) -> int:
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def _npi(rng: random.Random) -> str:
    """A 10-digit NPI starting with 1, with a valid Luhn check digit (prefix 80840)."""
    body = str(rng.randrange(100_000_000, 200_000_000))
    total = 0
    for i, ch in enumerate(reversed("80840" + body)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


_UUID4_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET: Final = (0x4000 << 64) | (0x8000 << 48)


def _event_id(rng: random.Random) -> str:
    """'E' + a version-4 UUID from the seeded rng (str(uuid.UUID(int=..., version=4)), inlined)."""
    h = f"{(rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"E{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _eastern_utc_offset_hours(day: dt.date) -> int:
    """US Eastern (North Carolina) offset from UTC: -4 in daylight time, -5 otherwise."""
    march = dt.date(day.year, 3, 1)
    dst_start = march + dt.timedelta(days=(6 - march.weekday()) % 7 + 7)  # 2nd Sunday
    november = dt.date(day.year, 11, 1)
    dst_end = november + dt.timedelta(days=(6 - november.weekday()) % 7)  # 1st Sunday
    return -4 if dst_start <= day < dst_end else -5


_EPOCH: Final = dt.datetime(1970, 1, 1)


def _iso_ms(epoch_ms: int) -> str:
    t = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


class _Clock:
    """ISO-8601 'Z' strings for epoch milliseconds, fast for one UTC day."""

    def __init__(self, day: dt.date) -> None:
        self.start = (day - dt.date(1970, 1, 1)).days * 86_400_000
        self.prefix = day.isoformat() + "T"

    def iso(self, epoch_ms: int) -> str:
        ms = epoch_ms - self.start
        if not 0 <= ms < 86_400_000:
            return _iso_ms(epoch_ms)
        s, ms = divmod(ms, 1000)
        m, s = divmod(s, 60)
        h, m = divmod(m, 60)
        return f"{self.prefix}{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def _copy_charge(charge: Event) -> Event:
    """A fresh copy with its own nested dicts/lists, so no two events share mutable parts."""
    out = dict(charge)
    out["modifiers"] = list(charge["modifiers"])  # type: ignore[call-overload]
    out["diagnosis_codes"] = list(charge["diagnosis_codes"])  # type: ignore[call-overload]
    out["payer"] = dict(charge["payer"])  # type: ignore[call-overload]
    out["rendering_provider"] = dict(charge["rendering_provider"])  # type: ignore[call-overload]
    out["documentation"] = dict(charge["documentation"])  # type: ignore[call-overload]
    traction = charge["traction"]
    if isinstance(traction, dict):
        t = dict(traction)
        t["body_regions"] = list(traction["body_regions"])
        out["traction"] = t
    return out


@dataclass(frozen=True, slots=True)
class _Clinic:
    kind: str
    npis: tuple[str, ...]
    device: str


@dataclass(slots=True)
class _Line:
    """One charge line: the fields as captured, plus a fixed version if it was captured wrong."""

    charge: Event
    fixed: Event | None = None  # a corrected UPSERT a biller may send later
    void_fix: bool = False  # the fix for this problem is to void the line


def _make_clinics(rng: random.Random, visits: int) -> dict[str, list[_Clinic]]:
    per_kind = max(1, visits // 90)
    clinics: dict[str, list[_Clinic]] = {}
    for kind, n in ((_CHIRO, per_kind), (_PT, per_kind), (_MD, max(1, per_kind // 3))):
        clinics[kind] = [
            _Clinic(
                kind=kind,
                npis=tuple(_npi(rng) for _ in range(rng.randint(1, 4))),
                device=rng.choice(_TRACTION_DEVICES),
            )
            for _ in range(n)
        ]
    return clinics


# --- visit construction -----------------------------------------------------------------------


class _VisitBuilder:
    def __init__(self, rng: random.Random, day: dt.date, visits: int) -> None:
        self.rng = rng
        self.day = day
        self.clinics = _make_clinics(rng, visits)
        self.patients: set[str] = set()
        self.local_midnight_ms = (day - dt.date(1970, 1, 1)).days * 86_400_000 - (
            _eastern_utc_offset_hours(day) * 3_600_000
        )
        self.next_charge = rng.randrange(4_000_000_000, 5_000_000_000)
        self.next_encounter = rng.randrange(70_000_000, 80_000_000)

    def _charge_id(self) -> str:
        self.next_charge += 1
        return f"C{self.next_charge}"

    def _patient_id(self) -> str:
        while True:
            pid = f"P{_uniform(self.rng, 10_000_000, 100_000_000)}"
            if pid not in self.patients:
                self.patients.add(pid)
                return pid

    def _scenarios(self) -> list[str]:
        rng = self.rng
        u = rng.random() * 1000.0
        if u >= _SCENARIO_CUM[-1]:
            return []
        primary = _SCENARIO_NAMES[bisect.bisect_right(_SCENARIO_CUM, u)]
        out = [primary]
        if primary != "INVALID_CHARGE" and rng.random() < _SECONDARY_P:
            second = rng.choice(_SECONDARY)
            if second != primary:
                out.append(second)
        return out

    def build(self) -> tuple[list[_Line], int]:
        """One visit's lines and the epoch-ms its charges start being entered."""
        rng = self.rng
        scen = self._scenarios()
        primary = scen[0] if scen else None

        # --- who, where, which payer (some problems only exist in certain settings)
        kind = _KINDS[_pick_cum(rng, _KIND_CUM)]
        payer_id: str | None = None
        method = "MECHANICAL_DEVICE"
        if primary == "MEDICARE_CHIROPRACTOR_NONCOVERED":
            kind, payer_id = _CHIRO, "MEDICARE"
        elif primary == "FLEXION_DISTRACTION":
            kind, method = _CHIRO, "FLEXION_DISTRACTION"
        elif primary == "NOT_MECHANICAL_TRACTION":
            method = rng.choice(("ROLLER_TABLE", "ROLLER_TABLE", "STATIC_BLOCKS", "MANUAL"))
            if method != "MANUAL":
                kind = _CHIRO
            elif kind == _MD:
                kind = _PT
        elif primary == "DECOMPRESSION_DEVICE":
            method = "DECOMPRESSION_DEVICE"
            kind = _CHIRO if rng.random() < 0.8 else _PT
            r = rng.random()
            payer_id = "MEDICARE" if r < 0.4 else "SELF" if r < 0.7 else None
        elif primary == "GP_REQUIRED":
            payer_id = rng.choice(sorted(_GP_PAYERS))
        if payer_id is None:
            payer_id = _PAYERS[_pick_cum(rng, _PAYER_CUM[kind])][0]
        clinic = rng.choice(self.clinics[kind])
        npi = rng.choice(clinic.npis)
        pid, pname, plan = _PAYER_BY_ID[payer_id]
        medicare_like = payer_id in _MEDICARE_LIKE
        medicare_chiro = plan == "MEDICARE" and kind == _CHIRO

        # --- when
        day = self.day
        if "INVALID_CHARGE" in scen and rng.random() < 0.15:
            dos = day + dt.timedelta(days=1)  # entered against tomorrow's appointment
            late_entry = False
        elif rng.random() < _P_PREVIOUS_DAY:
            dos = day - dt.timedelta(days=1)
            late_entry = True
        else:
            dos = day
            late_entry = False
        local_midnight_ms = self.local_midnight_ms
        if late_entry:  # morning catch-up of yesterday's charges
            entry_ms = local_midnight_ms + _uniform(rng, 8 * 3_600_000, 10 * 3_600_000)
        else:  # visit 08:00-16:30, charges entered 10-60 minutes later
            entry_ms = (
                local_midnight_ms
                + _uniform(rng, 8 * 3_600_000, 16 * 3_600_000 + 1_800_000)
                + _uniform(rng, 600_000, 3_600_000)
            )

        # --- diagnoses
        r = rng.random()
        regions = ["CERVICAL"] if r < 0.4 else ["LUMBAR"] if r < 0.9 else ["CERVICAL", "LUMBAR"]
        good_dx: list[str] = []
        if kind == _CHIRO:  # subluxation first (Medicare CMT needs it), then the condition
            good_dx.extend("M99.01" if reg == "CERVICAL" else "M99.03" for reg in regions)
        for reg in regions:
            pool = _DX_CERVICAL if reg == "CERVICAL" else _DX_LUMBAR
            good_dx.append(rng.choice(pool))
            if reg == "LUMBAR" and rng.random() < 0.15:
                good_dx.append(_DX_LUMBAR_EXTRA[0])
        if rng.random() < 0.15:
            good_dx.append(rng.choice(_DX_SECONDARY_OTHER))
        good_dx = list(dict.fromkeys(good_dx))[:12]
        visit_dx = (
            list(rng.choice(_DX_NOT_SUPPORTING)) if "DIAGNOSIS_NOT_SUPPORTING" in scen else good_dx
        )

        # --- which codes
        has_traction = bool(scen) or rng.random() < _P_TRACTION[kind]
        need_partner = primary in ("DISTINCT_MODIFIER_MISSING", "MODIFIER_59_WITH_X")
        mandatory: list[tuple[str, int]] = []
        optional: list[tuple[str, int]] = []
        estim = "G0283" if medicare_like else "97014"
        if kind == _CHIRO:
            mandatory.append((_CMT_CODES[_pick_cum(rng, _CMT_CUM)], 1))
            for code, p in (("97140", 0.2), ("97110", 0.15), (estim, 0.3), ("97035", 0.12)):
                if rng.random() < p:
                    optional.append((code, 1 if code != "97110" else _uniform(rng, 1, 3)))
            if rng.random() < 0.05:
                optional.append(("99213", 1))
        elif kind == _PT:
            if rng.random() < 0.9 or need_partner:
                mandatory.append(("97110", _uniform(rng, 1, 4)))
            for code, p in (("97140", 0.5), (estim, 0.3), ("97035", 0.2)):
                if rng.random() < p:
                    optional.append((code, _uniform(rng, 1, 3) if code == "97140" else 1))
        else:
            mandatory.append(("99213", 1))
            if need_partner:
                mandatory.append(("97140", 1))
            for code, p in (("97140", 0.15), ("97110", 0.1), (estim, 0.1)):
                if rng.random() < p and all(c != code for c, _ in mandatory):
                    optional.append((code, 1))
        n_traction = 0
        if has_traction:
            n_traction = 2 if primary == "TRACTION_DUPLICATE" else 1
        room = max(0, 5 - len(mandatory) - n_traction)
        codes = mandatory + optional[:room]
        if not codes and not n_traction:
            codes = [("97110", _uniform(rng, 1, 4))]
        code_set = {c for c, _ in codes}
        partner_present = bool(code_set & _DISTINCT_PARTNERS)
        cmt_present = bool(code_set & _CMT_SET)

        # --- shared line parts
        payer: Event = {"payer_id": pid, "name": pname, "plan_type": plan}
        provider: Event = {"npi": npi, "specialty": _SPECIALTY[kind]}
        plan_of_care = _PLAN_OF_CARE[kind]
        encounter_id: str | None = None
        if rng.random() >= _P_NO_ENCOUNTER:
            self.next_encounter += _uniform(rng, 1, 8)
            encounter_id = f"ENC{self.next_encounter}"
        abn = medicare_chiro and rng.random() < 0.3
        patient_id = self._patient_id()
        dos_s = dos.isoformat()
        gp_applies = payer_id in _GP_PAYERS or kind == _PT  # PT offices put GP on everything

        def charge(
            cpt: str,
            modifiers: list[str],
            units: int,
            *,
            assistant: bool = False,
            traction: Event | None = None,
        ) -> Event:
            return {
                "charge_id": self._charge_id(),
                "patient_id": patient_id,
                "encounter_id": encounter_id,
                "date_of_service": dos_s,
                "cpt_code": cpt,
                "modifiers": modifiers,
                "units": units,
                "diagnosis_codes": list(visit_dx),
                "payer": payer,
                "rendering_provider": provider,
                "performed_by": "ASSISTANT" if assistant else "PROVIDER",
                "supervising_provider_in_suite": True if assistant else None,
                "traction": traction,
                "documentation": {
                    "medical_necessity": True,
                    "device_and_region": True,
                    "times_or_duration": True,
                    "progress_note": True,
                    "plan_of_care": plan_of_care,
                },
                "abn_on_file": abn,
                "place_of_service": "11",
            }

        lines: list[_Line] = []
        for cpt, units in codes:
            mods: list[str] = []
            assistant = False
            if cpt in _CMT_CODES:
                if medicare_like:
                    mods.append("AT")  # active treatment
            elif cpt == "99213":
                if len(codes) > 1 or n_traction:
                    mods.append("25")
            else:
                p_assist = (
                    _P_ASSISTANT_THERAPY[kind]
                    if cpt in ("97110", "97140")
                    else _P_ASSISTANT_MODALITY[kind]
                )
                assistant = rng.random() < p_assist
                if gp_applies and primary != "GP_REQUIRED":
                    mods.append("GP")
                if assistant and kind == _PT and medicare_like:
                    mods.append("CQ")
                if medicare_chiro and primary != "MEDICARE_CHIROPRACTOR_NONCOVERED":
                    mods.append("GY")
                if cpt == "97140" and cmt_present and primary != "DISTINCT_MODIFIER_MISSING":
                    mods.append("59")  # NCCI CMT/97140 edit
            lines.append(_Line(charge(cpt, mods, units, assistant=assistant)))

        # --- the traction line(s)
        for i in range(n_traction):
            mods = []
            assistant = rng.random() < _P_ASSISTANT_MODALITY[kind]
            if gp_applies:
                mods.append("GP")
            if assistant and kind == _PT and medicare_like:
                mods.append("CQ")
            if medicare_chiro:
                mods.append("GY")
            if partner_present:
                mods.append("59" if rng.random() < 0.6 else "XS")
            trac_regions = list(regions)
            if i == 1 and len(regions) == 2:  # region split across two lines
                trac_regions = [regions[1]]
            elif i == 0 and n_traction == 2 and len(regions) == 2:
                trac_regions = [regions[0]]
            traction: Event = {
                "method": "MECHANICAL_DEVICE",
                "device": clinic.device,
                "body_regions": trac_regions,
                "minutes": _uniform(rng, 10, 21),
            }
            clean = charge("97012", mods, 1, assistant=assistant, traction=traction)
            clean["diagnosis_codes"] = list(good_dx)
            line = _Line(clean)
            if i == 0 and scen:
                bad = _copy_charge(clean)
                bad["diagnosis_codes"] = list(visit_dx)
                for s in scen:
                    self._apply(s, bad, line, method, medicare_like, lines)
                if line.fixed is None and not line.void_fix and bad != clean:
                    line.fixed = _copy_charge(clean)
                line.charge = bad
            elif i == 1:
                line.void_fix = True  # the duplicate entry
            lines.append(line)

        # entry order inside the visit is not the code order
        rng.shuffle(lines)
        return lines, entry_ms

    def _apply(
        self,
        scenario: str,
        bad: Event,
        line: _Line,
        method: str,
        medicare_like: bool,
        others: list[_Line],
    ) -> None:
        """Turn the clean traction charge `bad` (a copy) into one with the given problem."""
        rng = self.rng
        mods: list[str] = bad["modifiers"]  # type: ignore[assignment]
        traction: Event = bad["traction"]  # type: ignore[assignment]
        doc: Event = bad["documentation"]  # type: ignore[assignment]
        if scenario == "TRACTION_UNITS":
            regions: list[str] = traction["body_regions"]  # type: ignore[assignment]
            bad["units"] = len(regions) if len(regions) > 1 else rng.choice((2, 2, 3))
        elif scenario in ("NOT_MECHANICAL_TRACTION", "FLEXION_DISTRACTION"):
            traction["method"] = method
            traction["device"] = (
                rng.choice(_ROLLER_TABLES)
                if method == "ROLLER_TABLE"
                else rng.choice(_BLOCKS)
                if method == "STATIC_BLOCKS"
                else rng.choice(_FD_TABLES)
                if method == "FLEXION_DISTRACTION"
                else None
            )
            line.void_fix = True
        elif scenario == "DECOMPRESSION_DEVICE":
            traction["method"] = "DECOMPRESSION_DEVICE"
            traction["device"] = rng.choice(_DECOMPRESSION_DEVICES)
            traction["minutes"] = _uniform(rng, 20, 31)
            if medicare_like:
                bad["abn_on_file"] = rng.random() < 0.5
                if bad["abn_on_file"] and rng.random() < 0.6:
                    mods.append("GA")
                line.void_fix = True
            else:
                fixed = _copy_charge(bad)
                fixed["cpt_code"] = "S9090"
                line.fixed = fixed
        elif scenario == "DISTINCT_MODIFIER_MISSING":
            mods[:] = [m for m in mods if m not in ("59", "XS")]
            for other in others:  # and none of the partners carries one either
                om: list[str] = other.charge["modifiers"]  # type: ignore[assignment]
                om[:] = [m for m in om if m not in ("59", "XE", "XS", "XP", "XU")]
        elif scenario == "MODIFIER_59_WITH_X":
            mods[:] = [m for m in mods if m not in ("59", "XS")] + ["59", "XS"]
        elif scenario == "GP_REQUIRED":
            mods[:] = [m for m in mods if m != "GP"]
        elif scenario == "MEDICARE_CHIROPRACTOR_NONCOVERED":
            mods[:] = [m for m in mods if m != "GY"]
        elif scenario == "SUPERVISION_NOT_MET":
            bad["performed_by"] = "ASSISTANT"
            bad["supervising_provider_in_suite"] = rng.choice((False, None))
        elif scenario == "DOCUMENTATION_INCOMPLETE":
            if rng.random() < 0.2:
                traction["body_regions"] = []
            else:
                keys = ("medical_necessity", "device_and_region", "times_or_duration")
                for key in rng.sample((*keys, "progress_note"), _uniform(rng, 1, 3)):
                    doc[key] = False
        elif scenario == "DIAGNOSIS_NOT_SUPPORTING":
            pass  # the visit's diagnosis list already is the unsupporting one
        elif scenario == "TOO_MANY_MODIFIERS":
            pad = [m for m in _PAD_MODIFIERS if m not in mods]
            rng.shuffle(pad)
            mods.extend(pad[: 5 - len(mods)])
        elif scenario == "INVALID_CHARGE":
            if bad["date_of_service"] == (self.day + dt.timedelta(days=1)).isoformat():
                line.void_fix = True  # entered against tomorrow's appointment: void it
                return  # the date of service in the future of occurred_at is the problem
            r = rng.random()
            if r < 0.45:
                bad["units"] = 0
            elif r < 0.65:
                bad["cpt_code"] = "9701"
            elif r < 0.8:
                bad["cpt_code"] = "97O12"
            else:
                mods[:] = ["G" if m == "GP" else m for m in mods] if "GP" in mods else ["G", *mods]


# --- events -----------------------------------------------------------------------------------


def generate_events(
    visits: int, seed: int, *, day: dt.date = dt.date(2026, 3, 2)
) -> list[dict[str, object]]:
    """Sample ChargeEvents (JSON-ready dicts) for `visits` patient visits on `day`.

    Reproducible: the same (visits, seed, day) gives an identical list. The list is in arrival
    order: mostly by occurred_at, with ~10% of events a few minutes late and ~1% redelivered.
    """
    if visits < 0:
        raise ValueError("visits must be >= 0")
    # Only acyclic dicts and lists are built here: the cyclic collector would just rescan the
    # growing event list (about 40% of the run time at 100k events).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate(visits, seed, day)
    finally:
        if gc_was_enabled:
            gc.enable()


def _generate(visits: int, seed: int, day: dt.date) -> list[Event]:
    rng = random.Random(seed)
    builder = _VisitBuilder(rng, day, visits)
    clock = _Clock(day)
    day_end_ms = (
        (day - dt.date(1970, 1, 1)).days * 86_400_000
        + (18 - _eastern_utc_offset_hours(day)) * 3_600_000
        - 1
    )
    # (arrival_ms, sequence, occurred_ms, event_type, charge)
    pending: list[tuple[int, int, int, str, Event]] = []
    seq = itertools.count()

    def later(after_ms: int, max_minutes: int) -> int:
        room = max(1_000, min(max_minutes * 60_000, day_end_ms - after_ms))
        return after_ms + _uniform(rng, 60_000 if room > 120_000 else 1_000, room + 1)

    def emit(occurred_ms: int, event_type: str, charge: Event) -> None:
        arrival = occurred_ms
        if rng.random() < _P_LATE:
            arrival += _uniform(rng, 60_000, 15 * 60_000)
        pending.append((arrival, next(seq), occurred_ms, event_type, charge))

    for _ in range(visits):
        lines, entry_ms = builder.build()
        t = entry_ms
        for line in lines:
            t += _uniform(rng, 5_000, 90_000)  # lines keyed one after another
            emit(t, "UPSERT", line.charge)
            last_ms, last = t, line.charge
            fix_due = (line.fixed is not None or line.void_fix) and rng.random() < _P_FIX_DEFECT
            if fix_due and line.void_fix:
                emit(later(last_ms, 120), "VOID", last)
                continue
            if fix_due and line.fixed is not None:
                last_ms, last = later(last_ms, 120), line.fixed
                emit(last_ms, "UPSERT", last)
            elif line.fixed is None and rng.random() < _P_CORRECT_CLEAN:
                last_ms, last = later(last_ms, 90), _harmless_change(rng, line.charge)
                emit(last_ms, "UPSERT", last)
            if rng.random() < _P_VOID:
                emit(later(last_ms, 180), "VOID", last)

    pending.sort(key=lambda p: (p[0], p[1]))
    events: list[Event] = []
    redeliveries: list[tuple[int, int, Event]] = []
    for arrival, n, occurred_ms, event_type, charge in pending:
        event = _copy_charge(
            {
                "event_id": _event_id(rng),
                "event_type": event_type,
                "occurred_at": clock.iso(occurred_ms),
                **charge,
            }
        )
        events.append(event)
        if rng.random() < _P_REDELIVER:
            redeliveries.append((arrival + _uniform(rng, 5_000, 20 * 60_000), n, event))
    if not redeliveries:
        return events
    # merge the redelivered copies in at their (later) arrival time
    arrivals = [p[0] for p in pending]
    redeliveries.sort(key=lambda r: (r[0], r[1]))
    out: list[Event] = []
    start = 0
    for arrival, _, event in redeliveries:
        stop = bisect.bisect_right(arrivals, arrival, lo=start)
        out.extend(events[start:stop])
        out.append(_copy_charge(event))
        start = stop
    out.extend(events[start:])
    return out


def _harmless_change(rng: random.Random, charge: Event) -> Event:
    """A re-sent clean charge: traction minutes edited, a diagnosis added or pointers reordered."""
    changed = _copy_charge(charge)
    traction = changed["traction"]
    dx: list[str] = changed["diagnosis_codes"]  # type: ignore[assignment]
    extra = [code for code in _DX_SECONDARY_OTHER if code not in dx]
    if isinstance(traction, dict) and isinstance(traction["minutes"], int) and rng.random() < 0.5:
        minutes: int = traction["minutes"]
        traction["minutes"] = minutes + 5 if minutes <= 15 else minutes - 5
    elif extra and len(dx) < 4:
        dx.append(rng.choice(extra))
    elif len(dx) >= 2:
        dx[0], dx[1] = dx[1], dx[0]
    else:
        changed["units"] = charge["units"] + 1  # type: ignore[operator]
    return changed


def write_jsonl(events: Iterable[dict[str, object]], stream: TextIO) -> None:
    """Write events as compact JSON, one per line, fields in their dict order."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    stream.writelines(dumps(e) + "\n" for e in events)
