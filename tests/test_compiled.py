"""The compiled build (setup.py, CHARGE_CAPTURE_COMPILE=1, as the Docker image builds it)
decides exactly as the sources do: the golden day gives the golden files byte for byte, and a
freshly generated day gives the pure-Python `check`'s output byte for byte; the compiled
direct append of output records writes kafka-python's own bytes.

The compiled wheel is installed into a directory of its own and run in a subprocess whose
path starts there, so its extension modules, not this checkout's .py files, are imported.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rules.pack import load_packs
from tests.wheel_build import build_wheel
from worker.offline.check import run_check
from worker.offline.sample import generate_events, write_jsonl

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
NCCI_PACKS = DATA / "packs_ncci"

# Run inside the compiled install: `check` of argv[1] (JSON lines) with the packs of argv[2]
# ("-": the built-in ones), written to argv[3]; prints where rules.engine was loaded from.
CHECK = """
import sys
from pathlib import Path
import rules, rules.engine
from rules.pack import load_packs
from worker.offline.check import run_check
source, packs, out = sys.argv[1:4]
with open(source, encoding="utf-8") as src, open(out, "w", encoding="utf-8", newline="") as dst:
    run_check(src, dst, load_packs(None if packs == "-" else Path(packs)))
print(rules.compiled(), rules.engine.__file__)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled wheel, installed (without dependencies: the venv has them) on its own."""
    built, _ = build_wheel(tmp_path_factory.mktemp("compiled"), compiled=True)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, built],
        check=True,
        timeout=300,
    )
    return target


def compiled_check(site: Path, source: Path, packs: Path | None, out: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(source), str(packs or "-"), str(out)],
        cwd=site,  # not this checkout: its rules/*.py would be found first
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_wheel_carries_the_compiled_rules_core(site: Path, tmp_path: Path) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("")
    loaded = compiled_check(site, source, None, tmp_path / "out.jsonl")
    flag, engine = loaded.split()
    assert flag == "True"
    assert Path(engine).parent == site / "rules" and engine.endswith(".so")
    # ... and this checkout's own run is pure Python (the editable install compiles nothing).
    import rules

    assert not rules.compiled()


def test_the_compiled_direct_append_writes_kafka_pythons_bytes(site: Path) -> None:
    """The producer's direct append (worker.kafka.batch_append) is compiled too, and its
    check (its records against kafka-python's own, byte for byte) holds there."""
    probe = (
        "from worker.kafka import batch_append as b; "
        "print(b.check(256 * 1024), b.check(16384), b.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=site,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    large, small, where = proc.stdout.split()
    assert (large, small) == ("True", "True")
    assert where.endswith(".so")


@pytest.mark.parametrize(
    ("packs_dir", "expected"),
    [(None, "decisions.jsonl.gz"), (NCCI_PACKS, "decisions-ncci.jsonl.gz")],
    ids=["built-in packs", "ncci pack"],
)
def test_compiled_check_matches_golden(
    site: Path, tmp_path: Path, packs_dir: Path | None, expected: str
) -> None:
    day = tmp_path / "day.jsonl"
    day.write_bytes(gzip.decompress((GOLDEN / "day.jsonl.gz").read_bytes()))
    out = tmp_path / "decisions.jsonl"
    compiled_check(site, day, packs_dir, out)
    golden = gzip.decompress((GOLDEN / expected).read_bytes()).decode()
    produced, wanted = out.read_text(encoding="utf-8").splitlines(), golden.splitlines()
    assert len(produced) == len(wanted) > 5000
    for number, (line, want) in enumerate(zip(produced, wanted, strict=True), start=1):
        assert line == want, f"decision line {number} differs"


@pytest.mark.parametrize("packs_dir", [None, NCCI_PACKS], ids=["built-in packs", "ncci pack"])
def test_compiled_check_equals_the_sources_on_a_fresh_day(
    site: Path, tmp_path: Path, packs_dir: Path | None
) -> None:
    day = tmp_path / "day.jsonl"
    with day.open("w", encoding="utf-8") as stream:
        write_jsonl(generate_events(4000, seed=29), stream)
    expected = io.StringIO()
    with day.open(encoding="utf-8") as source:
        report = run_check(source, expected, load_packs(packs_dir))
    assert report.events > 10_000 and not report.rejected
    out = tmp_path / "compiled.jsonl"
    compiled_check(site, day, packs_dir, out)
    assert out.read_text(encoding="utf-8") == expected.getvalue()
