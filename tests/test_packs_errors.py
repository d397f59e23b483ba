"""A broken rule pack is refused with one line naming the file, line, key or column, and problem.

The command line prints that line and exits 78 (EX_CONFIG), never a traceback.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rules.pack import DEFAULT_PACKS_DIR, PackError, PackNotInForce, load_pack, load_packs
from tests.factories import event_dict
from worker.offline.check import run_check

BUILT_IN = (DEFAULT_PACKS_DIR / "cpt97012.toml").read_text()
CMS = Path(__file__).parent / "data" / "ncci" / "cms"
PTP_TXT = CMS / "ccipra-v321r0-f1.txt"
MUE_CSV = CMS / "MCR_MUE_PractitionerServices_Eff_01-01-2026.csv"
CLI = Path(sys.executable).parent / "charge-capture"


def _edited(old: str, new: str, text: str = BUILT_IN) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _pack_error(tmp_path: Path, text: str, name: str = "cpt97012.toml") -> str:
    (tmp_path / name).write_text(text)
    with pytest.raises(PackError) as caught:
        load_packs(tmp_path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert name in message, message
    return message


def _ncci_pack(tmp_path: Path, ptp: list[str] | None = None, mue: list[str] | None = None) -> str:
    listed = {
        "ptp": ", ".join(f'"{name}"' for name in ptp or []),
        "mue": ", ".join(f'"{name}"' for name in mue or []),
    }
    text = _edited("ptp_files = []", f"ptp_files = [{listed['ptp']}]")
    return _edited("mue_files = []", f"mue_files = [{listed['mue']}]", text)


# --- the TOML --------------------------------------------------------------------------------


def test_broken_toml_names_line_and_column(tmp_path: Path) -> None:
    text = _edited('id = "cpt97012"', 'id = "cpt97012', BUILT_IN)
    line = text.splitlines().index('id = "cpt97012') + 1
    message = _pack_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'cpt97012.toml'}:{line}:")
    assert "invalid TOML" in message


def test_bad_date_names_the_key(tmp_path: Path) -> None:
    text = _edited('effective_from = "2015-10-01"', 'effective_from = "2026-13-01"')
    message = _pack_error(tmp_path, text)
    assert "[pack].effective_from: '2026-13-01' is not a date" in message
    assert "month must be in 1..12" in message


def test_date_in_another_shape_is_refused(tmp_path: Path) -> None:
    text = _edited('valid_to = "2021-09-30"', 'valid_to = "09/30/2021"')
    message = _pack_error(tmp_path, text)
    assert "[[diagnosis.supporting]] #6 valid_to: '09/30/2021' is not a date (YYYY-MM-DD)" in (
        message
    )


def test_native_toml_date_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(
        _edited('effective_from = "2015-10-01"', "effective_from = 2015-10-01")
    )
    assert load_pack(tmp_path / "p.toml").effective_from.isoformat() == "2015-10-01"


def test_missing_section_and_missing_key(tmp_path: Path) -> None:
    no_section = _edited('[cmt]\ncodes = ["98940", "98941", "98942"]\n', "")
    assert _pack_error(tmp_path, no_section).endswith(": [cmt] missing")
    no_key = _edited('[cmt]\ncodes = ["98940", "98941", "98942"]\n', "[cmt]\n")
    assert _pack_error(tmp_path, no_key).endswith(": [cmt].codes missing")


def test_wrong_type(tmp_path: Path) -> None:
    text = _edited('[cmt]\ncodes = ["98940", "98941", "98942"]', '[cmt]\ncodes = "98940"')
    message = _pack_error(tmp_path, text)
    assert message.endswith(": [cmt].codes: expected a list of strings, got a string ('98940')")
    units = _edited("max_units = 1", 'max_units = "1"')
    assert "[traction].max_units: expected a whole number, got a string ('1')" in (
        _pack_error(tmp_path, units)
    )


def test_unknown_plan_type(tmp_path: Path) -> None:
    text = _edited('plan_types = ["MEDICARE"]', 'plan_types = ["MEDICARE_PART_B"]')
    message = _pack_error(tmp_path, text)
    assert "[medicare_chiropractor].plan_types: unknown plan type 'MEDICARE_PART_B'" in message
    assert "MEDICARE_ADVANTAGE" in message  # says what is allowed


def test_misspelt_key_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    text = _edited("ptp_files = []", "ptp_file = []")
    message = _pack_error(tmp_path, text)
    assert "[ncci]: unknown key 'ptp_file'" in message and "ptp_files" in message
    section = _pack_error(tmp_path, BUILT_IN + "\n[nccii]\nptp_files = []\n")
    assert "unknown section [nccii]" in section


def test_unknown_documentation_flag(tmp_path: Path) -> None:
    text = _edited('"progress_note"]', '"progress_notes"]')
    message = _pack_error(tmp_path, text)
    assert "[documentation].required: unknown documentation flag 'progress_notes'" in message


def test_empty_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PackError, match=r"no rule pack \(\*\.toml\) in this directory"):
        load_packs(tmp_path)
    with pytest.raises(PackError, match=r"nowhere: no such rule-pack directory"):
        load_packs(tmp_path / "nowhere")


def test_two_packs_from_the_same_date_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(BUILT_IN)
    (tmp_path / "b.toml").write_text(_edited('version = "2026.11.0"', 'version = "2026.12.0"'))
    with pytest.raises(PackError) as caught:
        load_packs(tmp_path)
    message = str(caught.value)
    assert "a.toml and " in message and "b.toml: both packs (id 'cpt97012')" in message
    assert "take effect 2015-10-01" in message


def test_date_before_every_pack_is_not_decided_by_the_earliest() -> None:
    with pytest.raises(PackNotInForce) as caught:
        load_packs().for_date(__import__("datetime").date(2015, 9, 30))
    assert str(caught.value) == (
        "no rule pack in force on date of service 2015-09-30: "
        "the earliest pack takes effect 2015-10-01"
    )
    assert isinstance(caught.value, LookupError)


# --- the NCCI files it names -----------------------------------------------------------------


def _bad_copy(source: Path, target: Path, line: int, old: str, new: str) -> None:
    """`source` with `old` replaced by `new` on its line `line` (bytes kept otherwise)."""
    lines = source.read_bytes().split(b"\n")
    assert old.encode() in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old.encode(), new.encode(), 1)
    target.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("\t1\tMutually", "\tx\tMutually", "Modifier: 'x' is not 0, 1 or 9"),
        ("20200101", "2020-01-01", "Effective Date: '2020-01-01' is not a date (YYYYMMDD)"),
        ("\t*\t1\tMutually", "\t20201301\t1\tMutually", "Deletion Date: '20201301' is not a date"),
        ("97012\t97140", "\t97140", "Column 1: empty"),
    ],
    ids=["modifier", "effective", "deletion", "column 1"],
)
def test_bad_ptp_row_names_file_line_and_column(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    _bad_copy(PTP_TXT, tmp_path / "ccipra-v321r0-f1.txt", 7, old, new)
    message = _pack_error(tmp_path, _ncci_pack(tmp_path, ptp=["ccipra-v321r0-f1.txt"]))
    assert message.startswith(f"{tmp_path / 'ccipra-v321r0-f1.txt'}:7: {problem}"), message
    assert message.endswith(f"([ncci].ptp_files of {tmp_path / 'cpt97012.toml'})")


def test_bad_row_in_a_zip_names_the_member(tmp_path: Path) -> None:
    import zipfile

    _bad_copy(PTP_TXT, tmp_path / "f1.txt", 10, "\t0\t", "\t2\t")
    with zipfile.ZipFile(tmp_path / "ccipra-v321r0-f1.zip", "w") as archive:
        archive.write(tmp_path / "f1.txt", "ccipra-v321r0-f1.txt")
    message = _pack_error(tmp_path, _ncci_pack(tmp_path, ptp=["ccipra-v321r0-f1.zip"]))
    assert "ccipra-v321r0-f1.zip[ccipra-v321r0-f1.txt]:10: Modifier: '2' is not 0, 1 or 9" in (
        message
    )


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("97110,8,", "97110,eight,", "Practitioner Services MUE Values: 'eight' is not a number"),
        ("97110,8,3 Date", "97110,8,Date", "MUE Adjudication Indicator: 'Date of Service Edit:"),
    ],
    ids=["value", "indicator"],
)
def test_bad_mue_row_names_file_line_and_column(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    # The notice spans lines 1-4 and the header lines 5-6: 97110 is on line 8.
    _bad_copy(MUE_CSV, tmp_path / "mue.csv", 8, old, new)
    message = _pack_error(tmp_path, _ncci_pack(tmp_path, mue=["mue.csv"]))
    assert message.startswith(f"{tmp_path / 'mue.csv'}:8: {problem}"), message
    assert "[ncci].mue_files of" in message


def test_missing_ncci_file(tmp_path: Path) -> None:
    message = _pack_error(tmp_path, _ncci_pack(tmp_path, ptp=["../cms/ccipra-v999r0-f1.zip"]))
    assert message == (
        f"{tmp_path.parent / 'cms' / 'ccipra-v999r0-f1.zip'}: no such file "
        f"([ncci].ptp_files of {tmp_path / 'cpt97012.toml'})"
    )


def test_file_that_is_not_an_ncci_table(tmp_path: Path) -> None:
    message = _pack_error(tmp_path, _ncci_pack(tmp_path, ptp=[MUE_CSV.as_posix()]))
    assert f"{MUE_CSV}: no header row starting with 'Column 1'" in message


# --- the command line ------------------------------------------------------------------------


def _check(tmp_path: Path, rules: Path) -> subprocess.CompletedProcess[str]:
    day = tmp_path / "day.jsonl"
    day.write_text(json.dumps(event_dict()) + "\n")
    return subprocess.run(
        [str(CLI), "check", str(day), "--rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 78, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("charge-capture: "), line
    for part in expected:
        assert part in line, line
    assert result.stdout == ""


def test_cli_broken_toml_is_one_line_and_exit_78(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cpt97012.toml").write_text(_edited("[cmt]", "[cmt"))
    _assert_one_line(_check(tmp_path, rules), "cpt97012.toml:", "invalid TOML")


def test_cli_bad_ncci_row_is_one_line_and_exit_78(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    _bad_copy(MUE_CSV, rules / "mue.csv", 8, "97110,8,", "97110,8.5,")
    (rules / "cpt97012.toml").write_text(_ncci_pack(rules, mue=["mue.csv"]))
    _assert_one_line(_check(tmp_path, rules), "mue.csv:8: Practitioner Services MUE Values")


def test_cli_missing_directory_is_one_line_and_exit_78(tmp_path: Path) -> None:
    _assert_one_line(_check(tmp_path, tmp_path / "nope"), "nope: no such rule-pack directory")


def test_cli_empty_directory_is_one_line_and_exit_78(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(CMS, rules)  # NCCI files but no pack
    _assert_one_line(_check(tmp_path, rules), "no rule pack (*.toml)")


def test_check_rejects_a_line_no_pack_is_in_force_for() -> None:
    early = event_dict(
        event_id="E1", date_of_service="2001-01-02", occurred_at="2001-01-02T10:00:00Z"
    )
    fine = event_dict(event_id="E2", charge_id="C2")
    source = io.StringIO(json.dumps(early) + "\n" + json.dumps(fine) + "\n")
    out = io.StringIO()
    report = run_check(source, out, load_packs())
    assert report.rejected == [
        "line 1: no rule pack in force on date of service 2001-01-02: the earliest pack takes "
        "effect 2015-10-01"
    ]
    assert [json.loads(line)["charge_id"] for line in out.getvalue().splitlines()] == ["C2"]
