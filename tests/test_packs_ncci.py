"""Rule packs as data: effective dating, and the official NCCI PTP/MUE file formats."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rules.charge import Charge
from rules.engine import Verdict, decide_visit
from rules.ncci import NcciFileError, PtpEdit, PtpEdits, load_mue, load_ptp
from rules.pack import PackNotInForce, load_packs
from tests.factories import DOS, charge, other_line

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


def _decide(*lines: Charge) -> dict[str, Verdict]:
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
    with pytest.raises(PackNotInForce, match=r"2001-01-01.*earliest pack takes effect 2015-10-01"):
        packs.for_date(dt.date(2001, 1, 1))  # before every pack: no pack, no guess
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


# --- the files as CMS ships them (tests/data/ncci/cms) ---------------------------------------

CMS = DATA / "ncci" / "cms"
PTP_F1_TXT = CMS / "ccipra-v321r0-f1.txt"
PTP_F2_TXT = CMS / "ccipra-v321r0-f2.txt"
PTP_F2_ZIP = CMS / "ccipra-v321r0-f2.zip"
MUE_CSV = CMS / "MCR_MUE_PractitionerServices_Eff_01-01-2026.csv"
MUE_ZIP = CMS / "MCR_MUE_PractitionerServices_Eff_01-01-2026.zip"


def test_cms_ptp_txt_skips_the_notice_title_and_four_header_lines() -> None:
    assert PTP_F1_TXT.read_bytes().count(b"\r\n") == 13  # Windows line ends, as downloaded
    edits = load_ptp(PTP_F1_TXT)
    assert [(e.column1, e.column2) for e in edits] == [
        ("97012", "97140"),
        ("97012", "97530"),
        ("97140", "97530"),
        ("97530", "97110"),
        ("98940", "97112"),
        ("98941", "97124"),
        ("99213", "97012"),
    ]
    pre_1996 = edits[4]  # "*" in "in existence prior to 1996"
    assert pre_1996.effective == dt.date(1996, 1, 1) and pre_1996.deleted is None
    assert pre_1996.modifier_indicator == 1
    deleted = edits[6]
    assert deleted.deleted == dt.date(2020, 1, 1) and deleted.modifier_indicator == 0


def test_index_drops_indicator_9_and_never_applied_rows() -> None:
    edits = PtpEdits.load([PTP_F1_TXT])
    assert len(edits) == 5
    assert dict(edits.column1_edits("97530")) == {
        "97012": ((dt.date(2020, 1, 1), None, 1),)  # 97140/97530 was deleted the day it began
    }
    assert not edits.column1_edits("97124")  # indicator 9
    assert not edits.column1_edits("99999")


def test_a_pair_deleted_then_added_back_keeps_both_spans(tmp_path: Path) -> None:
    text = [
        *PTP_F1_TXT.read_text().splitlines()[:6],  # the notice, the title and the header
        "97012\t97140\t\t20150101\t20180101\t0\tMutually exclusive procedures",
        "97012\t97140\t\t20200101\t*\t1\tMutually exclusive procedures",
    ]
    (tmp_path / "f.txt").write_text("\n".join(text) + "\n")
    by_column1 = PtpEdits.load([tmp_path / "f.txt"]).column1_edits("97140")
    assert by_column1["97012"] == (
        (dt.date(2015, 1, 1), dt.date(2018, 1, 1), 0),
        (dt.date(2020, 1, 1), None, 1),
    )


def test_cms_ptp_zip_reads_its_txt_member_and_ignores_the_others() -> None:
    with zipfile.ZipFile(PTP_F2_ZIP) as archive:
        assert sorted(archive.namelist()) == [
            "README-ptp.pdf",
            "ccipra-v321r0-f2.txt",
            "ccipra-v321r0-f2.xlsx",
        ]
        assert archive.read("ccipra-v321r0-f2.txt") == PTP_F2_TXT.read_bytes()
    assert load_ptp(PTP_F2_ZIP) == load_ptp(PTP_F2_TXT)
    # f2's rationale has a Windows-1252 apostrophe: free text, it must not fail the load.
    assert b"\x92" in PTP_F2_TXT.read_bytes()
    assert [(e.column1, e.column2) for e in load_ptp(PTP_F2_ZIP)] == [
        ("G0283", "97014"),
        ("G0283", "97110"),
    ]


def test_zip_readme_txt_beside_the_edits_is_skipped(tmp_path: Path) -> None:
    archive_path = tmp_path / "ccipra-v321r0-f1.zip"
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0_readme.txt", "Read me first.\r\nThese files hold the PTP edits.\r\n")
        archive.write(PTP_F1_TXT, "ccipra-v321r0-f1.txt")
    assert load_ptp(archive_path) == load_ptp(PTP_F1_TXT)


def test_zip_without_the_table_is_refused(tmp_path: Path) -> None:
    archive_path = tmp_path / "ccipra-v321r0-f1.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("ccipra-v321r0-f1.xlsx", b"not read")
    with pytest.raises(NcciFileError, match=r"ccipra-v321r0-f1\.zip: no \.txt file in the zip"):
        load_ptp(archive_path)
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("readme.txt", "nothing tabular\n")
    with pytest.raises(NcciFileError, match=r"\[readme\.txt\]: no header row"):
        load_ptp(archive_path)


def test_cms_mue_csv_with_multiline_notice_and_header() -> None:
    text = MUE_CSV.read_text()
    assert text.startswith('"CPT only copyright') and '"HCPCS/\nCPT Code"' in text
    limits = {m.code: m for m in load_mue(MUE_CSV)}
    assert sorted(limits) == ["97012", "97110", "97140", "97530", "98941", "99213"]
    assert (limits["97110"].max_units, limits["97110"].adjudication_indicator) == (8, 3)
    assert (limits["97012"].max_units, limits["97012"].adjudication_indicator) == (1, 2)
    assert (limits["98941"].max_units, limits["98941"].adjudication_indicator) == (1, 1)
    assert limits["99213"].adjudication_indicator == 2  # its quoted rationale holds a comma


def test_cms_mue_zip_reads_its_csv_member() -> None:
    with zipfile.ZipFile(MUE_ZIP) as archive:
        assert archive.read(MUE_CSV.name) == MUE_CSV.read_bytes()
        assert len(archive.namelist()) == 2  # and a readme
    assert load_mue(MUE_ZIP) == load_mue(MUE_CSV)


class _NotScanned(PtpEdits):
    def __iter__(self) -> Iterator[PtpEdit]:
        raise AssertionError("NCCI_PTP scanned every edit")


def test_ptp_rule_looks_edits_up_instead_of_scanning_them() -> None:
    spy = _NotScanned.load([PTP_F1_TXT, PTP_F2_ZIP])
    pack = dataclasses.replace(NCCI_PACKS.for_date(DOS), ptp_edits=spy)
    verdicts = decide_visit([charge(charge_id="C1"), other_line("97140", "C2")], pack)
    (held,) = verdicts["C2"].holds
    assert held.rule_id == "NCCI_PTP" and "97012/97140" in held.message
