"""`check` on a committed generated day gives byte-identical decisions to the golden files.

The files were written by `charge-capture generate --visits 2000 --seed 11` and `check` before
the hot path was redesigned: any change to the rules' outcome, the fold, or the output format
shows up here as a diff. Regenerate them only for a deliberate change of decisions, and say why
in the commit.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from rules.pack import load_packs
from worker.offline.check import run_check

GOLDEN = Path(__file__).parent / "data" / "golden"
NCCI_PACKS = Path(__file__).parent / "data" / "packs_ncci"


@pytest.mark.parametrize(
    ("packs_dir", "expected"),
    [(None, "decisions.jsonl.gz"), (NCCI_PACKS, "decisions-ncci.jsonl.gz")],
    ids=["built-in packs", "ncci pack"],
)
def test_check_output_matches_golden(packs_dir: Path | None, expected: str) -> None:
    source = io.StringIO(gzip.decompress((GOLDEN / "day.jsonl.gz").read_bytes()).decode())
    out = io.StringIO()
    report = run_check(source, out, load_packs(packs_dir))
    golden = gzip.decompress((GOLDEN / expected).read_bytes()).decode()
    assert report.events == 5685 and not report.rejected
    produced = out.getvalue().splitlines()
    wanted = golden.splitlines()
    assert len(produced) == len(wanted)
    for number, (line, want) in enumerate(zip(produced, wanted, strict=True), start=1):
        assert line == want, f"decision line {number} differs"
