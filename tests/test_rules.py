"""Every rule ID (docs/rules.md): a case where it fires and a case where it must not."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from rules.charge import Charge
from rules.engine import Verdict, decide_visit
from rules.model import DecisionStatus
from rules.pack import PackSet, load_packs
from tests.factories import CHIROPRACTOR, MEDICARE, charge, other_line

PACKS = load_packs()


def decide(*lines: Charge) -> dict[str, Verdict]:
    return decide_visit(lines, PACKS.for_date(lines[0].date_of_service))


def rule_ids(verdict: Verdict) -> set[str]:
    return {f.rule_id for f in (*verdict.corrections, *verdict.holds)}


def test_clean_traction_line_is_accepted_unchanged() -> None:
    line = charge()
    verdict = decide(line)["C1"]
    assert verdict.status == DecisionStatus.ACCEPTED
    assert verdict.billed == line
    assert not verdict.corrections and not verdict.holds


def test_lone_non_traction_line_is_accepted() -> None:
    verdict = decide(other_line("97110", "C9", units=3))["C9"]
    assert verdict.status == DecisionStatus.ACCEPTED and verdict.billed.units == 3


# --- TRACTION_UNITS -------------------------------------------------------------------------


def test_traction_units_cut_to_one() -> None:
    verdict = decide(charge(units=3))["C1"]
    assert verdict.status == DecisionStatus.CORRECTED
    assert verdict.billed.units == 1
    (fix,) = verdict.corrections
    assert (fix.rule_id, fix.field, fix.before, fix.after) == ("TRACTION_UNITS", "units", "3", "1")


def test_traction_units_not_on_one_unit_or_other_codes() -> None:
    assert "TRACTION_UNITS" not in rule_ids(decide(charge(units=1))["C1"])
    assert decide(other_line("97110", "C2", units=4))["C2"].billed.units == 4


# --- TRACTION_DUPLICATE ---------------------------------------------------------------------


def test_traction_duplicate_earliest_stands() -> None:
    first = charge(charge_id="C2", occurred_at="2026-03-02T14:00:00Z")
    second = charge(charge_id="C1", occurred_at="2026-03-02T14:30:00Z")
    verdicts = decide(second, first)
    assert verdicts["C2"].status == DecisionStatus.ACCEPTED
    (held,) = verdicts["C1"].holds
    assert held.rule_id == "TRACTION_DUPLICATE" and held.related_charge_ids == ("C2",)


def test_traction_duplicate_ties_broken_by_charge_id() -> None:
    verdicts = decide(charge(charge_id="C2"), charge(charge_id="C1"))
    assert verdicts["C1"].status == DecisionStatus.ACCEPTED
    assert rule_ids(verdicts["C2"]) == {"TRACTION_DUPLICATE"}


def test_single_traction_line_is_no_duplicate() -> None:
    assert "TRACTION_DUPLICATE" not in rule_ids(decide(charge())["C1"])


# --- NOT_MECHANICAL_TRACTION ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [("ROLLER_TABLE", "97039"), ("STATIC_BLOCKS", "not billable"), ("MANUAL", "97140")],
)
def test_not_mechanical_traction_names_method_and_usual_code(method: str, expected: str) -> None:
    verdict = decide(charge(traction={"method": method}))["C1"]
    (held,) = verdict.holds
    assert held.rule_id == "NOT_MECHANICAL_TRACTION"
    assert method in held.message and expected in held.message


def test_roller_table_payer_setting_changes_the_message(tmp_path: object) -> None:
    pack = PACKS.for_date(dt.date(2026, 3, 2))
    allowing = PackSet([_replace(pack, roller_table_unlisted_payer_ids=frozenset({"AETNA"}))])
    line = charge(traction={"method": "ROLLER_TABLE"})
    (held,) = decide_visit([line], allowing.for_date(line.date_of_service))["C1"].holds
    assert "accepts unlisted 97039" in held.message


def test_mechanical_device_is_not_flagged() -> None:
    assert "NOT_MECHANICAL_TRACTION" not in rule_ids(decide(charge())["C1"])


# --- FLEXION_DISTRACTION --------------------------------------------------------------------


def test_flexion_distraction_beside_cmt_is_unbundling() -> None:
    line = charge(traction={"method": "FLEXION_DISTRACTION"}, modifiers=["59"])
    cmt = other_line("98941", "C2")
    (held,) = decide(line, cmt)["C1"].holds
    assert held.rule_id == "FLEXION_DISTRACTION"
    assert "unbundling" in held.message and held.related_charge_ids == ("C2",)


def test_flexion_distraction_alone_is_held_without_related() -> None:
    (held,) = decide(charge(traction={"method": "FLEXION_DISTRACTION"}))["C1"].holds
    assert held.rule_id == "FLEXION_DISTRACTION" and held.related_charge_ids == ()


def test_no_flexion_distraction_hold_for_device_traction_beside_cmt() -> None:
    verdicts = decide(charge(modifiers=["XS"]), other_line("98941", "C2"))
    assert "FLEXION_DISTRACTION" not in rule_ids(verdicts["C1"])


# --- DECOMPRESSION_DEVICE -------------------------------------------------------------------


@pytest.mark.parametrize(("abn", "modifier"), [(True, "GA"), (False, "GZ")])
def test_decompression_for_medicare_names_ga_or_gz(abn: bool, modifier: str) -> None:
    line = charge(
        traction={"method": "DECOMPRESSION_DEVICE", "device": "DRX9000"},
        payer=MEDICARE,
        modifiers=["GP"],
        abn_on_file=abn,
    )
    verdict = decide(line)["C1"]
    (held,) = [h for h in verdict.holds if h.rule_id == "DECOMPRESSION_DEVICE"]
    assert "NCD 160.16" in held.message and modifier in held.message


def test_decompression_commercial_has_no_ncd_text() -> None:
    line = charge(traction={"method": "DECOMPRESSION_DEVICE"})
    (held,) = decide(line)["C1"].holds
    assert held.rule_id == "DECOMPRESSION_DEVICE" and "S9090" in held.message
    assert "NCD" not in held.message


def test_no_decompression_hold_for_mechanical_device() -> None:
    assert "DECOMPRESSION_DEVICE" not in rule_ids(decide(charge())["C1"])


# --- DISTINCT_MODIFIER_MISSING --------------------------------------------------------------


@pytest.mark.parametrize("partner", ["98940", "98941", "98942", "97140", "97110"])
def test_distinct_modifier_missing_for_each_pair(partner: str) -> None:
    verdicts = decide(charge(), other_line(partner, "C2"))
    (held,) = verdicts["C1"].holds
    assert held.rule_id == "DISTINCT_MODIFIER_MISSING" and held.related_charge_ids == ("C2",)
    assert verdicts["C1"].billed.modifiers == ()  # never appended automatically


@pytest.mark.parametrize("where", ["traction", "partner"])
def test_distinct_modifier_on_either_line_satisfies_the_pair(where: str) -> None:
    line = charge(modifiers=["XS"] if where == "traction" else [])
    partner = other_line("97140", "C2", modifiers=["59"] if where == "partner" else [])
    assert decide(line, partner)["C1"].status == DecisionStatus.ACCEPTED


def test_no_pair_no_distinct_hold() -> None:
    assert decide(charge(), other_line("97035", "C2"))["C1"].status == DecisionStatus.ACCEPTED


# --- MODIFIER_59_WITH_X ---------------------------------------------------------------------


def test_59_with_x_modifier_is_held() -> None:
    (held,) = decide(charge(modifiers=["59", "XS"]))["C1"].holds
    assert held.rule_id == "MODIFIER_59_WITH_X" and "XS" in held.message


def test_59_alone_or_x_alone_is_fine() -> None:
    assert decide(charge(modifiers=["59"]))["C1"].status == DecisionStatus.ACCEPTED
    assert decide(charge(modifiers=["XU"]))["C1"].status == DecisionStatus.ACCEPTED


# --- GP_REQUIRED ----------------------------------------------------------------------------


def test_gp_appended_for_medicare_advantage() -> None:
    payer = {"payer_id": "HUMANA-MA", "name": "Humana", "plan_type": "MEDICARE_ADVANTAGE"}
    verdict = decide(charge(payer=payer))["C1"]
    assert verdict.status == DecisionStatus.CORRECTED
    assert verdict.billed.modifiers == ("GP",)
    assert [c.rule_id for c in verdict.corrections] == ["GP_REQUIRED"]


def test_gp_for_configured_commercial_payer_from_its_effective_date() -> None:
    uhc = {"payer_id": "UHC", "name": "UnitedHealthcare", "plan_type": "COMMERCIAL"}
    after = charge(payer=uhc, date_of_service="2020-07-01", occurred_at="2020-07-01T15:00:00Z")
    before = charge(payer=uhc, date_of_service="2020-06-30", occurred_at="2020-06-30T15:00:00Z")
    assert decide(after)["C1"].billed.modifiers == ("GP",)
    assert "GP_REQUIRED" not in rule_ids(decide(before)["C1"])


@pytest.mark.parametrize("present", ["GP", "GO", "GN"])
def test_no_gp_when_a_therapy_modifier_is_there(present: str) -> None:
    verdict = decide(charge(payer=MEDICARE, modifiers=[present]))["C1"]
    assert "GP_REQUIRED" not in rule_ids(verdict)


def test_no_gp_for_payer_without_the_requirement() -> None:
    assert "GP_REQUIRED" not in rule_ids(decide(charge())["C1"])


# --- MEDICARE_CHIROPRACTOR_NONCOVERED -------------------------------------------------------


def test_medicare_chiropractor_gets_gp_then_gy() -> None:
    verdict = decide(charge(payer=MEDICARE, rendering_provider=CHIROPRACTOR))["C1"]
    assert verdict.billed.modifiers == ("GP", "GY")
    assert [c.rule_id for c in verdict.corrections] == [
        "GP_REQUIRED",
        "MEDICARE_CHIROPRACTOR_NONCOVERED",
    ]
    assert verdict.status == DecisionStatus.CORRECTED


def test_no_gy_for_medicare_advantage_chiropractor_or_medicare_pt() -> None:
    ma = {"payer_id": "HUMANA-MA", "name": "Humana", "plan_type": "MEDICARE_ADVANTAGE"}
    chiro_ma = decide(charge(payer=ma, rendering_provider=CHIROPRACTOR))["C1"]
    pt_medicare = decide(charge(payer=MEDICARE))["C1"]
    assert "MEDICARE_CHIROPRACTOR_NONCOVERED" not in rule_ids(chiro_ma)
    assert "MEDICARE_CHIROPRACTOR_NONCOVERED" not in rule_ids(pt_medicare)
    coded = charge(payer=MEDICARE, rendering_provider=CHIROPRACTOR, modifiers=["GP", "GY"])
    already = decide(coded)
    assert already["C1"].status == DecisionStatus.ACCEPTED


# --- SUPERVISION_NOT_MET --------------------------------------------------------------------


@pytest.mark.parametrize("in_suite", [False, None])
def test_assistant_without_supervisor_in_suite_is_held(in_suite: bool | None) -> None:
    line = charge(performed_by="ASSISTANT", supervising_provider_in_suite=in_suite)
    (held,) = decide(line)["C1"].holds
    assert held.rule_id == "SUPERVISION_NOT_MET"


def test_supervised_assistant_is_fine() -> None:
    line = charge(performed_by="ASSISTANT", supervising_provider_in_suite=True)
    assert decide(line)["C1"].status == DecisionStatus.ACCEPTED


# --- DOCUMENTATION_INCOMPLETE ---------------------------------------------------------------


def test_documentation_incomplete_lists_what_is_missing() -> None:
    line = charge(
        documentation={"progress_note": False, "times_or_duration": False},
        traction={"body_regions": []},
    )
    (held,) = decide(line)["C1"].holds
    assert held.rule_id == "DOCUMENTATION_INCOMPLETE"
    for missing in ("progress note", "times or duration", "body region"):
        assert missing in held.message
    assert "medical necessity" not in held.message


def test_traction_line_without_traction_details_is_incomplete() -> None:
    (held,) = decide(charge(traction=None))["C1"].holds
    assert held.rule_id == "DOCUMENTATION_INCOMPLETE" and "traction details" in held.message


def test_complete_documentation_passes() -> None:
    assert "DOCUMENTATION_INCOMPLETE" not in rule_ids(decide(charge())["C1"])


# --- DIAGNOSIS_NOT_SUPPORTING ---------------------------------------------------------------


def test_non_supporting_diagnoses_are_held_without_echoing_codes() -> None:
    (held,) = decide(charge(diagnosis_codes=["S13.4XXA", "R51.9"]))["C1"].holds
    assert held.rule_id == "DIAGNOSIS_NOT_SUPPORTING"
    assert "S13.4XXA" not in held.message and "R51.9" not in held.message


def test_m54_5_only_through_2021_09_30() -> None:
    old = charge(
        diagnosis_codes=["M54.5"], date_of_service="2021-09-30", occurred_at="2021-09-30T15:00:00Z"
    )
    new = charge(
        diagnosis_codes=["M54.5"], date_of_service="2021-10-01", occurred_at="2021-10-01T15:00:00Z"
    )
    replacement = charge(diagnosis_codes=["M54.50"])
    assert "DIAGNOSIS_NOT_SUPPORTING" not in rule_ids(decide(old)["C1"])
    assert "DIAGNOSIS_NOT_SUPPORTING" in rule_ids(decide(new)["C1"])
    assert "DIAGNOSIS_NOT_SUPPORTING" not in rule_ids(decide(replacement)["C1"])


def test_one_supporting_code_among_others_is_enough_and_dotless_codes_count() -> None:
    assert decide(charge(diagnosis_codes=["R51.9", "M5116"]))["C1"].status == "ACCEPTED"


# --- TOO_MANY_MODIFIERS ---------------------------------------------------------------------


def test_too_many_modifiers_counts_after_corrections() -> None:
    four = ["59", "KX", "AT", "CQ"]
    line = charge(payer=MEDICARE, modifiers=four)  # GP appended makes five
    verdict = decide(line)["C1"]
    assert "TOO_MANY_MODIFIERS" in {h.rule_id for h in verdict.holds}
    assert len(verdict.billed.modifiers) == 5


def test_four_modifiers_are_fine() -> None:
    verdict = decide(charge(modifiers=["59", "KX", "AT", "CQ"]))["C1"]
    assert "TOO_MANY_MODIFIERS" not in rule_ids(verdict)


def test_too_many_modifiers_applies_to_every_line() -> None:
    line = other_line("97110", "C5", modifiers=["GP", "59", "KX", "CQ", "AT"])
    assert rule_ids(decide(line)["C5"]) == {"TOO_MANY_MODIFIERS"}


def test_a_line_of_many_modifiers_is_held_and_its_hold_echoes_only_the_first() -> None:
    modifiers = [f"{n % 90 + 10}" for n in range(300_000)]  # ~1 MB of modifiers
    verdict = decide(other_line("97110", "C5", modifiers=modifiers))["C5"]
    (hold,) = [h for h in verdict.holds if h.rule_id == "TOO_MANY_MODIFIERS"]
    assert hold.message.startswith("300000 modifiers (10,11,12,13,14,15,16,17,18,19,20,21,...")
    assert "and 299988 more); a claim line carries at most 4" in hold.message
    assert len(hold.message) < 200


# --- INVALID_CHARGE -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"units": 0}, "units 0 < 1"),
        ({"cpt_code": "9701"}, "malformed CPT"),
        ({"modifiers": ["G"]}, "malformed modifier"),
        ({"diagnosis_codes": ["M54.16", "54.16"]}, "1 malformed ICD-10-CM"),
        ({"date_of_service": "2026-03-03"}, "after the capture time"),
    ],
)
def test_invalid_charge(overrides: dict[str, object], text: str) -> None:
    verdict = decide(charge(**overrides))["C1"]
    invalid = [h for h in verdict.holds if h.rule_id == "INVALID_CHARGE"]
    assert verdict.status == DecisionStatus.HELD and len(invalid) == 1
    assert text in invalid[0].message


def test_thirteen_diagnosis_codes_are_held_not_billed() -> None:
    """A claim carries at most 12 diagnosis codes (837P HI01-HI12, CMS-1500 item 21 A-L)."""
    codes = [f"M51.{n:02d}" for n in range(13)]
    verdict = decide(charge(diagnosis_codes=codes))["C1"]
    assert verdict.status == DecisionStatus.HELD
    (invalid,) = [h for h in verdict.holds if h.rule_id == "INVALID_CHARGE"]
    assert invalid.message == (
        "Invalid charge line: 13 diagnosis codes, a claim carries at most 12"
    )
    assert decide(charge(diagnosis_codes=codes[:12]))["C1"].status == DecisionStatus.ACCEPTED


def test_the_diagnosis_cap_is_a_pack_setting() -> None:
    pack = dataclasses.replace(PACKS.for_date(dt.date(2026, 3, 2)), max_diagnosis_codes=2)
    verdict = decide_visit([charge(diagnosis_codes=["M51.16", "M54.2", "M47.26"])], pack)["C1"]
    assert "3 diagnosis codes, a claim carries at most 2" in verdict.holds[0].message


def test_malformed_codes_are_echoed_short() -> None:
    line = other_line("9" * 5000, "C1", modifiers=["G"] * 100 + ["x" * 1000])
    (invalid,) = [h for h in decide(line)["C1"].holds if h.rule_id == "INVALID_CHARGE"]
    assert f"malformed CPT/HCPCS code '{'9' * 32}...'" in invalid.message
    assert "malformed modifier(s) 'G', 'G'" in invalid.message
    assert "... and 89 more" in invalid.message and len(invalid.message) < 300


def test_valid_codes_are_not_invalid() -> None:
    for code in ("97012", "0001F", "0191T", "S9090"):
        assert "INVALID_CHARGE" not in rule_ids(decide(other_line(code, "C1"))["C1"])
    for diagnoses in (["M54.16", "U07.1"], ["M5416", "U099"], ["S13.4XXA"]):
        line = other_line("97110", "C1", diagnosis_codes=diagnoses)
        assert "INVALID_CHARGE" not in rule_ids(decide(line)["C1"]), diagnoses


# --- combinations ---------------------------------------------------------------------------


def test_a_line_can_carry_several_corrections_and_holds() -> None:
    line = charge(
        payer=MEDICARE,
        rendering_provider=CHIROPRACTOR,
        units=2,
        traction={"method": "ROLLER_TABLE"},
        documentation={"progress_note": False},
    )
    verdict = decide(line)["C1"]
    assert verdict.status == DecisionStatus.HELD
    assert rule_ids(verdict) == {
        "TRACTION_UNITS",
        "GP_REQUIRED",
        "MEDICARE_CHIROPRACTOR_NONCOVERED",
        "NOT_MECHANICAL_TRACTION",
        "DOCUMENTATION_INCOMPLETE",
    }
    assert verdict.billed.units == 1 and verdict.billed.modifiers == ("GP", "GY")


def _replace(pack: object, **changes: object) -> object:
    import dataclasses

    return dataclasses.replace(pack, **changes)  # type: ignore[type-var]
