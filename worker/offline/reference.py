"""The sample generator's reference data: scenario rates, payers, clinics, codes, diagnoses.

Billing facts the rules also use (which payers require GP, the CMT codes, the same-day pair
codes, the traction code) are read from the built-in rule pack, so the sample and the rules
cannot drift apart; what stays here is the sample's own world (payer names, payer mix per
office kind, devices, diagnosis pools).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
from collections.abc import Sequence
from typing import Final

from rules.model import PlanType
from rules.pack import RulePack, load_packs

Event = dict[str, object]

# Deliberate problems per 1000 visits (primary draw; a few visits get a second one, see
# SECONDARY_*). Named by the rule each one should trigger.
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
SCENARIO_NAMES: Final = tuple(SCENARIO_RATES_PER_1000_VISITS)
SCENARIO_CUM: Final = tuple(itertools.accumulate(SCENARIO_RATES_PER_1000_VISITS.values()))
# A visit with a problem sometimes has a second, line-local one.
SECONDARY_P: Final = 0.10
SECONDARY: Final = (
    "TRACTION_UNITS",
    "DOCUMENTATION_INCOMPLETE",
    "SUPERVISION_NOT_MET",
    "DIAGNOSIS_NOT_SUPPORTING",
)

# Event dynamics.
P_FIX_DEFECT: Final = 0.25  # a biller fixes a problem line later in the day (UPSERT or VOID)
P_CORRECT_CLEAN: Final = 0.04  # a clean line is re-sent with a harmless change
P_VOID: Final = 0.02
P_REDELIVER: Final = 0.01
P_LATE: Final = 0.10
P_PREVIOUS_DAY: Final = 0.03  # visit entered the morning after
P_NO_ENCOUNTER: Final = 0.02

# --- reference data -------------------------------------------------------------------------

# (payer_id, name, plan_type)
PAYERS: Final = (
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
PAYER_BY_ID: Final = {p[0]: p for p in PAYERS}
# The pack in force on the sample's default day decides which billing facts the sample uses.
PACK: Final[RulePack] = load_packs().for_date(dt.date(2026, 3, 2))
GP_PAYERS: Final = frozenset(
    payer_id
    for payer_id, _, plan in PAYERS
    if PACK.gp_required(PlanType(plan), payer_id, dt.date(2026, 3, 2))
)
MEDICARE_LIKE: Final = frozenset(
    payer_id
    for payer_id, _, plan in PAYERS
    if plan in (PlanType.MEDICARE, PlanType.MEDICARE_ADVANTAGE)
)

CHIRO: Final = "CHIRO"
PT: Final = "PT"
MD: Final = "MD"
KIND_CUM: Final = (45.0, 90.0, 100.0)  # chiropractic, physical therapy, physician offices
KINDS: Final = (CHIRO, PT, MD)
SPECIALTY: Final = {CHIRO: "CHIROPRACTOR", PT: "PHYSICAL_THERAPIST", MD: "PHYSICIAN"}
PLAN_OF_CARE: Final = {CHIRO: "CHIROPRACTIC", PT: "PHYSICAL_THERAPY", MD: "PHYSICAL_THERAPY"}
# payer mix by office kind, in PAYERS order
PAYER_CUM: Final = {
    CHIRO: tuple(itertools.accumulate((18, 10, 9, 16, 8, 7, 4, 4, 10, 14))),
    PT: tuple(itertools.accumulate((24, 12, 12, 16, 10, 8, 8, 6, 2, 2))),
    MD: tuple(itertools.accumulate((26, 14, 12, 15, 10, 9, 8, 3, 2, 1))),
}
# share of assistant-applied lines (chiropractic assistant, PTA, office staff)
P_ASSISTANT_MODALITY: Final = {CHIRO: 0.35, PT: 0.25, MD: 0.10}
P_ASSISTANT_THERAPY: Final = {CHIRO: 0.10, PT: 0.25, MD: 0.0}
P_TRACTION: Final = {CHIRO: 0.82, PT: 0.85, MD: 0.75}  # visits with a 97012 line

TRACTION_DEVICES: Final = (
    "Chattanooga Triton",
    "Chattanooga Tru-Trac",
    "Saunders 3D ActiveTrac",
    "Chattanooga Triton DTS",
)
DECOMPRESSION_DEVICES: Final = ("DRX9000", "VAX-D")
ROLLER_TABLES: Final = ("Spinalator", "Sport Roller IST table", None)
BLOCKS: Final = ("SOT blocks", "Denneroll wedge", None)
FD_TABLES: Final = ("Cox 8 table", "Lloyd Galaxy flexion table", None)

TRACTION_CODE: Final = PACK.traction_code
CMT_CODES: Final = tuple(sorted(PACK.cmt_codes))
CMT_CUM: Final = (60.0, 95.0, 100.0)  # share of 98940 / 98941 / 98942
CMT_SET: Final = PACK.cmt_codes
DISTINCT_PARTNERS: Final = PACK.distinct_pair_codes

DX_CERVICAL: Final = ("M54.2", "M50.120", "M54.12", "M47.812")
DX_LUMBAR: Final = ("M54.16", "M54.17", "M54.50", "M54.59", "M51.26", "M51.27", "M47.816")
DX_LUMBAR_EXTRA: Final = ("M48.061",)
DX_SECONDARY_OTHER: Final = ("R51.9", "G44.209", "M62.830")
DX_NOT_SUPPORTING: Final = (
    ("M54.5",),  # low back pain: deleted 2021-09-30, still in some templates
    ("M54.5", "Z00.00"),
    ("S13.4XXA",),  # whiplash, initial encounter
    ("S13.4XXA", "R51.9"),
    ("R51.9",),
    ("Z00.00",),
)

PAD_MODIFIERS: Final = ("KX", "AT", "76", "77", "RT", "LT")


# --- draws shared by the visit builder and the event stream ------------------------------


def uniform(rng: random.Random, lo: int, hi: int) -> int:
    """An int in [lo, hi), faster than rng.randrange for the hot loop (one rng.random() call)."""
    return lo + int(rng.random() * (hi - lo))


def pick_cum(rng: random.Random, cum: Sequence[float]) -> int:
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def eastern_utc_offset_hours(day: dt.date) -> int:
    """US Eastern (North Carolina) offset from UTC: -4 in daylight time, -5 otherwise."""
    march = dt.date(day.year, 3, 1)
    dst_start = march + dt.timedelta(days=(6 - march.weekday()) % 7 + 7)  # 2nd Sunday
    november = dt.date(day.year, 11, 1)
    dst_end = november + dt.timedelta(days=(6 - november.weekday()) % 7)  # 1st Sunday
    return -4 if dst_start <= day < dst_end else -5


def copy_charge(charge: Event) -> Event:
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
