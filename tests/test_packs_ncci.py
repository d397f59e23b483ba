"""Rule packs as data: effective dating, and the official NCCI PTP/MUE file formats."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rules.engine import decide_visit
from rules.ncci import load_mue, load_ptp
from rules.pack import load_packs
from tests.factories import charge, other_line

DATA = Path(__file__).parent / "data"
NCCI_PACKS = load_packs(DATA / "packs_ncci")


def test_ptp_file_parses_dates_and_indicators() -> None:
    edits = load_ptp(DATA / "ncci" / "ccipra-v324r0-f1.csv")
    first = edits[0]
    assert (first.column1, first.column2, first.modifier_indicator) == ("97012", "97140", 1)
    assert first.effective == dt.date(2020, 1, 1) and first.deleted is None
    deleted = edits[2]
    assert deleted.deleted == dt.date(2020, 1, 1)
    assert deleted.in_force(dt.date(2019, 12, 31)) and not deleted.in_force(dt.date(2020, 1, 1))


def test_mue_file_parses_adjudication_indicator_digit() -> None:
    limits = {m.code: m for m in load_mue(DATA / "ncci" / "mue-practitioner-2026q1.csv")}
    assert limits["97110"].max_units == 8 and limits["97110"].adjudication_indicator == 3
    assert limits["98941"].adjudication_indicator == 1


def test_file_without_header_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="no header row"):
        load_ptp(bad)


def _decide(*lines):  # type: ignore[no-untyped-def]
    return decide_visit(lines, NCCI_PACKS.for_date(lines[0].date_of_service))


def test_ptp_modifier_indicator_1_holds_column_2_without_modifier() -> None:
    verdicts = _decide(other_line("98940", "C1", modifiers=["AT"]), other_line("97112", "C2"))
    (held,) = verdicts["C2"].holds
    assert held.rule_id == "NCCI_PTP" and held.related_charge_ids == ("C1",)
    assert verdicts["C1"].status == "ACCEPTED"


def test_ptp_modifier_on_either_line_releases_indicator_1() -> None:
    verdicts = _decide(other_line("98940", "C1"), other_line("97112", "C2", modifiers=["XS"]))
    assert verdicts["C2"].status == "ACCEPTED"


def test_ptp_modifier_counts_only_on_column_2_before_2019_07_01() -> None:
    early = {"date_of_service": "2019-06-28", "occurred_at": "2019-06-28T15:00:00Z"}
    on_column_1 = _decide(
        other_line("98940", "C1", modifiers=["59"], **early), other_line("97112", "C2", **early)
    )
    (held,) = on_column_1["C2"].holds
    assert held.rule_id == "NCCI_PTP" and "on the 97112 line" in held.message
    on_column_2 = _decide(
        other_line("98940", "C1", **early), other_line("97112", "C2", modifiers=["59"], **early)
    )
    assert on_column_2["C2"].status == "ACCEPTED"
    from_july = {"date_of_service": "2019-07-01", "occurred_at": "2019-07-01T15:00:00Z"}
    either = _decide(
        other_line("98940", "C1", modifiers=["59"], **from_july),
        other_line("97112", "C2", **from_july),
    )
    assert either["C2"].status == "ACCEPTED"


def test_ptp_deleted_edit_and_indicator_9_do_not_apply() -> None:
    after_deletion = _decide(charge(charge_id="C2"), other_line("99213", "C1"))
    assert "NCCI_PTP" not in {h.rule_id for h in after_deletion["C2"].holds}
    early = {"date_of_service": "2019-06-03", "occurred_at": "2019-06-03T15:00:00Z"}
    before_deletion = _decide(charge(charge_id="C2", **early), other_line("99213", "C1", **early))
    assert "NCCI_PTP" in {h.rule_id for h in before_deletion["C2"].holds}
    indicator_9 = _decide(other_line("98941", "C1"), other_line("97124", "C2"))
    assert indicator_9["C2"].status == "ACCEPTED"


def test_mue_per_date_of_service_sums_lines() -> None:
    verdicts = _decide(other_line("97110", "C1", units=5), other_line("97110", "C2", units=4))
    for cid, other in (("C1", "C2"), ("C2", "C1")):
        (held,) = verdicts[cid].holds
        assert held.rule_id == "MUE_EXCEEDED" and held.related_charge_ids == (other,)
    assert _decide(other_line("97110", "C1", units=8))["C1"].status == "ACCEPTED"


def test_mue_per_line() -> None:
    assert _decide(other_line("98941", "C1", units=2))["C1"].holds[0].rule_id == "MUE_EXCEEDED"
    two_lines = _decide(other_line("98941", "C1"), other_line("98941", "C2"))
    assert two_lines["C1"].status == two_lines["C2"].status == "ACCEPTED"


def test_pack_in_force_on_the_date_of_service_decides(tmp_path: Path) -> None:
    base = (Path(load_packs.__code__.co_filename).parent / "packs" / "cpt97012.toml").read_text()
    (tmp_path / "a.toml").write_text(base)
    later = base.replace('version = "2026.11.0"', 'version = "2027.1.0"').replace(
        'effective_from = "2015-10-01"   #', 'effective_from = "2027-01-01"   #'
    )
    later = later.replace(
        'plan_types = ["MEDICARE", "MEDICARE_ADVANTAGE"]\n\n[[gp',
        ('plan_types = ["MEDICARE", "MEDICARE_ADVANTAGE", "MEDICAID"]\n\n[[gp'),
    )
    (tmp_path / "b.toml").write_text(later)
    packs = load_packs(tmp_path)
    assert packs.for_date(dt.date(2026, 12, 31)).version == "2026.11.0"
    assert packs.for_date(dt.date(2027, 1, 1)).version == "2027.1.0"
    assert packs.for_date(dt.date(2001, 1, 1)).version == "2026.11.0"  # before all: earliest
    medicaid = {"payer_id": "NC-MEDICAID", "name": "NC Medicaid", "plan_type": "MEDICAID"}
    line = charge(payer=medicaid, date_of_service="2027-01-04", occurred_at="2027-01-04T15:00Z")
    assert decide_visit([line], packs.for_date(line.date_of_service))["C1"].billed.modifiers == (
        "GP",
    )
    old = charge(payer=medicaid)
    assert decide_visit([old], packs.for_date(old.date_of_service))["C1"].billed.modifiers == ()


def test_broken_pack_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('[pack]\nid = "x"\n')
    with pytest.raises(ValueError, match=r"broken\.toml"):
        load_packs(tmp_path)
