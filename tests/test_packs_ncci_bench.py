"""`python -m bench.ncci_load` stays runnable and prints its figures (tiny sizes here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--rows", "3000", "--files", "2", "--mue-rows", "200", "--visits", "50"]


def test_ncci_load_benchmark_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.ncci_load", *TINY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loads = re.findall(
        r"rows -> ([\d,]+) edits kept, 200 MUEs: ([\d.]+) s, peak RSS (\d+) MB", result.stdout
    )
    assert len(loads) == 2, result.stdout
    assert int(loads[1][0].replace(",", "")) > int(loads[0][0].replace(",", "")) > 2000
    assert re.search(r"per visit .*: [\d.]+ us with [\d,]+ edits loaded, [\d.]+ us", result.stdout)
    assert "goal (load <= 20 s, <= 800 MB resident): met" in result.stdout
