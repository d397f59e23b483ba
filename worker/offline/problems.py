"""The deliberate problems a sample traction line can carry, one per rule."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from worker.offline.reference import (
    BLOCKS,
    DECOMPRESSION_DEVICES,
    FD_TABLES,
    PAD_MODIFIERS,
    ROLLER_TABLES,
    Event,
    copy_charge,
    uniform,
)


@dataclass(slots=True)
class Line:
    """One charge line: the fields as captured, plus a fixed version if it was captured wrong."""

    charge: Event
    fixed: Event | None = None  # a corrected UPSERT a biller may send later
    void_fix: bool = False  # the fix for this problem is to void the line


def apply_problem(
    rng: random.Random,
    day: dt.date,
    scenario: str,
    bad: Event,
    line: Line,
    method: str,
    medicare_like: bool,
    others: list[Line],
) -> None:
    """Turn the clean traction charge `bad` (a copy) into one with the given problem."""
    mods: list[str] = bad["modifiers"]  # type: ignore[assignment]
    traction: Event = bad["traction"]  # type: ignore[assignment]
    doc: Event = bad["documentation"]  # type: ignore[assignment]
    if scenario == "TRACTION_UNITS":
        regions: list[str] = traction["body_regions"]  # type: ignore[assignment]
        bad["units"] = len(regions) if len(regions) > 1 else rng.choice((2, 2, 3))
    elif scenario in ("NOT_MECHANICAL_TRACTION", "FLEXION_DISTRACTION"):
        traction["method"] = method
        devices = {"ROLLER_TABLE": ROLLER_TABLES, "STATIC_BLOCKS": BLOCKS}
        choices = devices.get(method, FD_TABLES if method == "FLEXION_DISTRACTION" else None)
        traction["device"] = rng.choice(choices) if choices else None
        line.void_fix = True
    elif scenario == "DECOMPRESSION_DEVICE":
        traction["method"] = "DECOMPRESSION_DEVICE"
        traction["device"] = rng.choice(DECOMPRESSION_DEVICES)
        traction["minutes"] = uniform(rng, 20, 31)
        if medicare_like:
            bad["abn_on_file"] = rng.random() < 0.5
            if bad["abn_on_file"] and rng.random() < 0.6:
                mods.append("GA")
            line.void_fix = True
        else:
            fixed = copy_charge(bad)
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
    else:
        _apply_line_problem(rng, day, scenario, bad, line, mods, traction, doc)


def _apply_line_problem(
    rng: random.Random,
    day: dt.date,
    scenario: str,
    bad: Event,
    line: Line,
    mods: list[str],
    traction: Event,
    doc: Event,
) -> None:
    if scenario == "SUPERVISION_NOT_MET":
        bad["performed_by"] = "ASSISTANT"
        bad["supervising_provider_in_suite"] = rng.choice((False, None))
    elif scenario == "DOCUMENTATION_INCOMPLETE":
        if rng.random() < 0.2:
            traction["body_regions"] = []
        else:
            keys = ("medical_necessity", "device_and_region", "times_or_duration")
            for key in rng.sample((*keys, "progress_note"), uniform(rng, 1, 3)):
                doc[key] = False
    elif scenario == "DIAGNOSIS_NOT_SUPPORTING":
        pass  # the visit's diagnosis list already is the unsupporting one
    elif scenario == "TOO_MANY_MODIFIERS":
        pad = [m for m in PAD_MODIFIERS if m not in mods]
        rng.shuffle(pad)
        mods.extend(pad[: 5 - len(mods)])
    elif scenario == "INVALID_CHARGE":
        if bad["date_of_service"] == (day + dt.timedelta(days=1)).isoformat():
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
