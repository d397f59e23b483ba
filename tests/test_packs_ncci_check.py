"""End to end: `charge-capture check` with a pack naming CMS NCCI files exactly as CMS ships them
(a PTP .txt, a PTP zip, and the MUE CSV or its zip) holds charges by NCCI_PTP and MUE_EXCEEDED.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.factories import event_dict

DATA = Path(__file__).parent / "data"
CMS = DATA / "ncci" / "cms"
CLI = Path(sys.executable).parent / "charge-capture"
MUE = "MCR_MUE_PractitionerServices_Eff_01-01-2026"


def _pack_dir(tmp_path: Path, mue_file: str) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(CMS, rules / "ncci")
    text = (DATA / "packs_ncci" / "cpt97012.toml").read_text()
    ncci = text.index("[ncci]\n")
    text = text[:ncci] + (
        "[ncci]\n"
        'ptp_files = ["ncci/ccipra-v321r0-f1.txt", "ncci/ccipra-v321r0-f2.zip"]\n'
        f'mue_files = ["ncci/{mue_file}"]\n'
    )
    (rules / "cpt97012.toml").write_text(text)
    return rules


def _line(charge_id: str, patient: str, code: str, **overrides: Any) -> dict[str, Any]:
    if code != "97012":
        overrides.setdefault("traction", None)
    return event_dict(charge_id=charge_id, patient_id=patient, cpt_code=code, **overrides)


EARLY = {"date_of_service": "2019-06-03", "occurred_at": "2019-06-03T15:00:00Z"}
DAY = [
    # 97012/97140, modifier indicator 1: the 97140 line is held without a distinct modifier...
    _line("A1", "P1", "97012"),
    _line("A2", "P1", "97140"),
    # ... and released by one (XS, on either line from 2019-07-01).
    _line("B1", "P2", "97012"),
    _line("B2", "P2", "97140", modifiers=["XS"]),
    # 97530/97110 has indicator 0: a modifier does not release it. The file order (column 1
    # ascending) makes 97530 the edit named, before G0283/97110 (in the zip).
    _line("C1", "P3", "97530"),
    _line("C2", "P3", "97110", modifiers=["59"]),
    _line("C3", "P3", "G0283"),
    # G0283/97110 comes from the zip.
    _line("D1", "P4", "G0283"),
    _line("D2", "P4", "97110"),
    # MUE 97110: 8 units per date of service (MAI 3), summed across the day's lines.
    _line("E1", "P5", "97110", units=5),
    _line("E2", "P5", "97110", units=4),
    # MUE 98941: 1 unit per line (MAI 1).
    _line("F1", "P6", "98941", units=2),
    # 98941/97124 has indicator 9: never a hold.
    _line("G1", "P7", "98941"),
    _line("G2", "P7", "97124"),
    # 97140/97530 was deleted on its effective date: it never applied.
    _line("H1", "P8", "97140", date_of_service="2021-01-04", occurred_at="2021-01-04T15:00Z"),
    _line("H2", "P8", "97530", date_of_service="2021-01-04", occurred_at="2021-01-04T15:00Z"),
    # 99213/97012 applies before its deletion date (2020-01-01) only.
    _line("I1", "P9", "97012", **EARLY),
    _line("I2", "P9", "99213", **EARLY),
    _line("J1", "P9", "97012"),
    _line("J2", "P9", "99213"),
]


def _holds(decision: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    return [h for h in decision["holds"] if h["rule_id"] == rule_id]


@pytest.mark.parametrize("mue_file", [f"{MUE}.csv", f"{MUE}.zip"])
def test_check_applies_the_cms_files(tmp_path: Path, mue_file: str) -> None:
    rules = _pack_dir(tmp_path, mue_file)
    day, out = tmp_path / "day.jsonl", tmp_path / "decisions.jsonl"
    day.write_text("".join(json.dumps(line) + "\n" for line in DAY))
    result = subprocess.run(
        [str(CLI), "check", str(day), "--rules", str(rules), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    decided = {d["charge_id"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert set(decided) == {line["charge_id"] for line in DAY}

    def ptp(charge_id: str) -> list[dict[str, Any]]:
        return _holds(decided[charge_id], "NCCI_PTP")

    def mue(charge_id: str) -> list[dict[str, Any]]:
        return _holds(decided[charge_id], "MUE_EXCEEDED")

    (held,) = ptp("A2")
    assert held["related_charge_ids"] == ["A1"] and "NCCI edit 97012/97140" in held["message"]
    assert decided["A2"]["status"] == "HELD" and not ptp("A1")
    assert not ptp("B2") and decided["B2"]["status"] == "ACCEPTED"
    (held,) = ptp("C2")
    assert held["related_charge_ids"] == ["C1"] and "NCCI edit 97530/97110" in held["message"]
    assert "modifier indicator 0" in held["message"]
    (held,) = ptp("D2")
    assert held["related_charge_ids"] == ["D1"] and "NCCI edit G0283/97110" in held["message"]
    for charge_id, other in (("E1", "E2"), ("E2", "E1")):
        (held,) = mue(charge_id)
        assert held["related_charge_ids"] == [other]
        assert "9 units of 97110 exceed the NCCI MUE of 8 (MAI 3)" in held["message"]
    (held,) = mue("F1")
    assert "2 units of 98941 exceed the NCCI MUE of 1 (MAI 1)" in held["message"]
    assert decided["G2"]["status"] == "ACCEPTED"
    assert decided["H2"]["status"] == "ACCEPTED"
    (held,) = ptp("I1")
    assert held["related_charge_ids"] == ["I2"] and "NCCI edit 99213/97012" in held["message"]
    assert not ptp("J1")
    rules_fired = {h["rule_id"] for d in decided.values() for h in d["holds"]}
    assert {"NCCI_PTP", "MUE_EXCEEDED"} <= rules_fired
    assert "NCCI_PTP" in result.stderr and "MUE_EXCEEDED" in result.stderr  # the summary
