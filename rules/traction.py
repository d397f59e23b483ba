"""The CPT 97012 rules, one function per rule ID (reference: docs/rules.md).

Each rule is a pure function of one line and its visit (`VisitContext`: every active charge of
the patient on the date of service, plus the rule pack in force on that date). Correction rules
return the corrected line and the correction; hold rules return a hold. Nothing here reads a
clock, a broker or a file: the same visit and pack always give the same findings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from msgspec.structs import replace

from rules.charge import Charge, Correction, Hold
from rules.codes import is_icd10, is_modifier, is_procedure_code, normalize_icd10
from rules.model import PerformedBy, Specialty, TractionMethod
from rules.ncci import in_force
from rules.pack import RulePack
from rules.rulebook import (
    VisitContext,
    correction,
    hold,
)


def _hold(rule_id: str, message: str, related: list[str] | tuple[str, ...] = ()) -> Hold:
    return Hold(rule_id=rule_id, message=message, related_charge_ids=tuple(related))


# A hold message names what is wrong, but a line of 300,000 modifiers must not make a decision
# of megabytes: messages echo at most this many items, and codes cut to this many characters.
ECHOED_ITEMS = 12
ECHOED_CHARS = 32


def _clip(text: str) -> str:
    return text if len(text) <= ECHOED_CHARS else text[:ECHOED_CHARS] + "..."


def _echo(items: Sequence[str], separator: str, form: Callable[[str], str] = _clip) -> str:
    """The first ECHOED_ITEMS items, each shown by `form`, and how many more there are."""
    shown = separator.join(form(item) for item in items[:ECHOED_ITEMS])
    hidden = len(items) - ECHOED_ITEMS
    return shown if hidden <= 0 else f"{shown}{separator}... and {hidden} more"


def _append_modifier(
    line: Charge, rule_id: str, modifier: str, why: str
) -> tuple[Charge, Correction]:
    before = line.modifiers
    after = (*before, modifier)
    fixed = replace(line, modifiers=after)
    return fixed, Correction(
        rule_id=rule_id,
        field="modifiers",
        before=",".join(before),
        after=",".join(after),
        message=f"{modifier} appended: {why}",
    )


# --- corrections (97012 lines) -------------------------------------------------------------


@correction("TRACTION_UNITS")
def traction_units(line: Charge, visit: VisitContext) -> tuple[Charge, Correction] | None:
    cap = visit.pack.traction_max_units
    if line.units <= cap:
        return None
    fixed = replace(line, units=cap)
    return fixed, Correction(
        rule_id="TRACTION_UNITS",
        field="units",
        before=str(line.units),
        after=str(cap),
        message=(
            f"97012 is untimed: {cap} unit per date of service whatever the minutes or "
            f"areas treated; units cut from {line.units} to {cap}"
        ),
    )


@correction("GP_REQUIRED")
def gp_required(line: Charge, visit: VisitContext) -> tuple[Charge, Correction] | None:
    pack = visit.pack
    if not pack.gp_required(line.payer.plan_type, line.payer.payer_id, visit.date_of_service):
        return None
    if pack.therapy_modifiers.intersection(line.modifiers):
        return None
    why = f"{line.payer.payer_id} requires a therapy modifier on always-therapy code 97012"
    return _append_modifier(line, "GP_REQUIRED", "GP", why)


@correction("MEDICARE_CHIROPRACTOR_NONCOVERED")
def medicare_chiropractor_noncovered(
    line: Charge, visit: VisitContext
) -> tuple[Charge, Correction] | None:
    pack = visit.pack
    if line.payer.plan_type not in pack.gy_plan_types:
        return None
    if (
        line.rendering_provider.specialty != Specialty.CHIROPRACTOR
        or pack.gy_modifier in line.modifiers
    ):
        return None
    why = (
        "Medicare covers only spinal manipulation from a chiropractor; 97012 is statutorily "
        "excluded (patient liable, lets a secondary payer pay)"
    )
    return _append_modifier(line, "MEDICARE_CHIROPRACTOR_NONCOVERED", pack.gy_modifier, why)


# --- holds on every line -------------------------------------------------------------------


@hold("INVALID_CHARGE", every_line=True)
def invalid_charge(line: Charge, visit: VisitContext) -> Hold | None:
    codes = (line.cpt_code, line.modifiers, line.diagnosis_codes)
    # Only lines of ordinary size are cached: a cache of 65536 lines of 10,000 codes each
    # would hold gigabytes.
    ordinary = len(line.modifiers) + len(line.diagnosis_codes) <= 4 * ECHOED_ITEMS
    problems = list(_cached_code_problems(*codes) if ordinary else _code_problems(*codes))
    if line.units < 1:
        problems.insert(0, f"units {line.units} < 1")
    count, cap = len(line.diagnosis_codes), visit.pack.max_diagnosis_codes
    if count > cap:
        problems.append(f"{count} diagnosis codes, a claim carries at most {cap}")
    if line.date_of_service > line.occurred_at.date():
        problems.append("date of service is after the capture time")
    if not problems:
        return None
    return _hold("INVALID_CHARGE", "Invalid charge line: " + "; ".join(problems))


def _code_problems(
    cpt_code: str, modifiers: tuple[str, ...], diagnosis_codes: tuple[str, ...]
) -> tuple[str, ...]:
    """Shape problems of a line's codes."""
    problems = []
    if not is_procedure_code(cpt_code):
        problems.append(f"malformed CPT/HCPCS code {_clip(cpt_code)!r}")
    bad_modifiers = [m for m in modifiers if not is_modifier(m)]
    if bad_modifiers:
        shown = _echo(bad_modifiers, ", ", lambda m: repr(_clip(m)))
        problems.append(f"malformed modifier(s) {shown}")
    bad_icd = sum(1 for code in diagnosis_codes if not is_icd10(code))
    if bad_icd:
        # The codes themselves are clinical data: count them, don't echo them.
        problems.append(f"{bad_icd} malformed ICD-10-CM code(s)")
    return tuple(problems)


# The same combinations recur all day.
_cached_code_problems = lru_cache(maxsize=65536)(_code_problems)


@hold("TOO_MANY_MODIFIERS", every_line=True)
def too_many_modifiers(line: Charge, visit: VisitContext) -> Hold | None:
    cap = visit.pack.max_modifiers
    if len(line.modifiers) <= cap:
        return None
    return _hold(
        "TOO_MANY_MODIFIERS",
        f"{len(line.modifiers)} modifiers ({_echo(line.modifiers, ',')}); a claim line carries "
        f"at most {cap}: choose which to keep",
    )


@hold("NCCI_PTP", every_line=True, reads_visit=True)
def ncci_ptp(line: Charge, visit: VisitContext) -> Hold | None:
    """Official NCCI pairs loaded into the pack: the column-2 line is the one held.

    The edits are indexed by column-2 then column-1 code, so a line costs a probe per code of
    its visit, whatever the number of edits loaded. Column-1 codes are tried in ascending order,
    the order of the CMS files, so the first edit in force that holds the line names it.
    """
    by_column1 = visit.pack.ptp_edits.column1_edits(line.cpt_code)
    if not by_column1:
        return None
    pack, day = visit.pack, visit.date_of_service
    for column1 in sorted(visit.ids_by_code):
        spans = by_column1.get(column1)
        if spans is None:
            continue
        partners = visit.others_with((column1,), line)
        if not partners:
            continue
        for span in spans:
            if not in_force(span, day):
                continue
            indicator = span[2]
            either = pack.distinct_on_either_line(day)
            lines = [line, *map(visit.line, partners)] if either else [line]
            if indicator == 1 and _has_distinct(pack, lines):
                continue
            allowed = (
                "allowed only with 59/XE/XS/XP/XU where the service was distinct"
                + ("" if either else f" (on the {line.cpt_code} line for this date of service)")
                if indicator == 1
                else "never allowed together (modifier indicator 0)"
            )
            return _hold(
                "NCCI_PTP",
                f"NCCI edit {column1}/{line.cpt_code}: {line.cpt_code} is bundled into "
                f"{column1} on the same date, {allowed}",
                partners,
            )
    return None


@hold("MUE_EXCEEDED", every_line=True, reads_visit=True)
def mue_exceeded(line: Charge, visit: VisitContext) -> Hold | None:
    """Official MUE limits loaded into the pack (97012 itself is TRACTION_UNITS)."""
    limit = visit.pack.mue_limits.get(line.cpt_code)
    if limit is None or line.cpt_code == visit.pack.traction_code:
        return None
    same_code = visit.ids_by_code.get(line.cpt_code, (line.charge_id,))
    if limit.adjudication_indicator == 1:
        units, related = line.units, []
    else:  # MAI 2/3: the limit is per date of service, across the day's lines of the code
        units = sum(visit.line(cid).units for cid in same_code)
        related = [cid for cid in same_code if cid != line.charge_id]
    if units <= limit.max_units:
        return None
    return _hold(
        "MUE_EXCEEDED",
        f"{units} units of {line.cpt_code} exceed the NCCI MUE of {limit.max_units} "
        f"(MAI {limit.adjudication_indicator})",
        sorted(related),
    )


# --- holds on 97012 lines ------------------------------------------------------------------


@hold("TRACTION_DUPLICATE", reads_visit=True)
def traction_duplicate(line: Charge, visit: VisitContext) -> Hold | None:
    same_day = visit.ids_by_code[line.cpt_code]  # ordered by (occurred_at, charge_id)
    standing = same_day[0]
    if standing == line.charge_id:
        return None
    return _hold(
        "TRACTION_DUPLICATE",
        f"97012 is billed once per date of service; {standing} already carries it for this "
        "visit (the earliest line stands)",
        [standing],
    )


@hold("NOT_MECHANICAL_TRACTION")
def not_mechanical_traction(line: Charge, visit: VisitContext) -> Hold | None:
    method = line.traction.method if line.traction else None
    pack = visit.pack
    if method == TractionMethod.ROLLER_TABLE:
        if line.payer.payer_id in pack.roller_table_unlisted_payer_ids:
            usual = f"this payer accepts unlisted {pack.roller_table_unlisted_code}"
        else:
            usual = f"this payer does not accept unlisted {pack.roller_table_unlisted_code}: none"
        text = f"roller table (positioning, no device-applied pull) is not 97012; {usual}"
    elif method == TractionMethod.STATIC_BLOCKS:
        text = "static traction blocks/wedges apply no traction force: not billable as 97012"
    elif method == TractionMethod.MANUAL:
        text = f"manual traction is part of manual therapy: bill {pack.manual_code}, not 97012"
    else:
        return None
    return _hold("NOT_MECHANICAL_TRACTION", f"Method {method}: {text}")


@hold("FLEXION_DISTRACTION", reads_visit=True)
def flexion_distraction(line: Charge, visit: VisitContext) -> Hold | None:
    if not line.traction or line.traction.method != TractionMethod.FLEXION_DISTRACTION:
        return None
    cmt = visit.others_with(visit.pack.cmt_codes, line)
    text = "flexion-distraction is part of chiropractic manipulation (CMT 98940-98942)"
    if cmt:
        text += "; billing 97012 beside the CMT line on this date is unbundling: bill CMT only"
    else:
        text += ": bill the CMT code, not 97012"
    return _hold("FLEXION_DISTRACTION", text, cmt)


@hold("DECOMPRESSION_DEVICE")
def decompression_device(line: Charge, visit: VisitContext) -> Hold | None:
    if not line.traction or line.traction.method != TractionMethod.DECOMPRESSION_DEVICE:
        return None
    pack = visit.pack
    codes = "/".join(pack.decompression_codes) or "unlisted"
    text = f"spinal decompression is not 97012: bill {codes} or unlisted per payer"
    if (
        line.payer.plan_type in pack.decompression_ncd_plan_types
        and visit.date_of_service >= pack.decompression_ncd_from
    ):
        modifier = "GA (ABN on file)" if line.abn_on_file else "GZ (no ABN on file)"
        text += f"; Medicare NCD 160.16: non-covered, bill with {modifier}"
    return _hold("DECOMPRESSION_DEVICE", text)


def _has_distinct(pack: RulePack, lines: list[Charge]) -> bool:
    return any(pack.distinct_modifiers.intersection(line.modifiers) for line in lines)


@hold("DISTINCT_MODIFIER_MISSING", reads_visit=True)
def distinct_modifier_missing(line: Charge, visit: VisitContext) -> Hold | None:
    pack = visit.pack
    if pack.distinct_modifiers.intersection(line.modifiers):
        return None
    partners = [
        cid
        for cid in visit.others_with(pack.distinct_pair_codes, line)
        if not pack.distinct_modifiers.intersection(visit.line(cid).modifiers)
    ]
    if not partners:
        return None
    codes = sorted({visit.line(cid).cpt_code for cid in partners})
    return _hold(
        "DISTINCT_MODIFIER_MISSING",
        f"97012 billed with {', '.join(codes)} on the same date and neither line carries "
        "59/XE/XS/XP/XU; add one only if the service was truly distinct (never just to "
        "bypass the edit)",
        partners,
    )


@hold("MODIFIER_59_WITH_X")
def modifier_59_with_x(line: Charge, visit: VisitContext) -> Hold | None:
    x = sorted(visit.pack.x_modifiers.intersection(line.modifiers))
    if "59" not in line.modifiers or not x:
        return None
    return _hold(
        "MODIFIER_59_WITH_X",
        f"59 and {', '.join(x)} on one line: use the more specific X modifier only",
    )


@hold("SUPERVISION_NOT_MET")
def supervision_not_met(line: Charge, visit: VisitContext) -> Hold | None:
    if line.performed_by != PerformedBy.ASSISTANT or line.supervising_provider_in_suite is True:
        return None
    state = "not recorded" if line.supervising_provider_in_suite is None else "not in the suite"
    return _hold(
        "SUPERVISION_NOT_MET",
        f"traction applied by an assistant with the supervising provider {state}: the "
        "provider must be present in the office suite",
    )


@hold("DOCUMENTATION_INCOMPLETE")
def documentation_incomplete(line: Charge, visit: VisitContext) -> Hold | None:
    docs = line.documentation
    missing = [name for name in visit.pack.documentation_required if not getattr(docs, name)]
    if line.traction is None:
        missing.append("traction details (method, device, body region)")
    elif not line.traction.body_regions:
        missing.append("body region")
    if not missing:
        return None
    readable = ", ".join(m.replace("_", " ") for m in missing)
    return _hold("DOCUMENTATION_INCOMPLETE", f"documentation missing: {readable}")


@hold("DIAGNOSIS_NOT_SUPPORTING")
def diagnosis_not_supporting(line: Charge, visit: VisitContext) -> Hold | None:
    day, pack = visit.date_of_service, visit.pack
    if any(pack.supporting(normalize_icd10(code), day) for code in line.diagnosis_codes):
        return None
    # The codes are clinical data: the message says what is needed, not what was billed.
    return _hold(
        "DIAGNOSIS_NOT_SUPPORTING",
        f"none of the {len(line.diagnosis_codes)} diagnosis code(s) valid on {day} supports "
        "traction (disc disorder, radiculopathy, neck/back pain, spondylosis, stenosis, "
        "segmental dysfunction)",
    )
