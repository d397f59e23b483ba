"""The package builds without setuptools warnings, from the files the Docker image's builder
stage copies, and the wheel holds every module, the rule packs, the schemas and the licence (a
regular install, as in the image, not only an editable one).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def builder_sources() -> list[str]:
    """What the image's builder stage copies before `pip install .` (deploy/Dockerfile)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    builder = text[: text.index("\nFROM ", text.index("AS builder"))]
    sources = []
    for line in builder.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built with the venv's setuptools (no download) from exactly the files the
    Docker image's builder stage copies, so the image builds too."""
    tree = tmp_path_factory.mktemp("tree")
    for source in builder_sources():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, tree / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, tree / source)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-w",
            str(out),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("charge_capture-*.whl")
    return built, proc.stdout + proc.stderr


def test_the_build_warns_about_nothing(wheel: tuple[Path, str]) -> None:
    _, output = wheel
    warnings = [
        line
        for line in output.splitlines()
        if "warn" in line.lower() and "Location '" not in line  # pip's index config, not ours
    ]
    assert not warnings, "\n".join(warnings)


def test_the_wheel_holds_every_module_the_packs_and_the_licence(wheel: tuple[Path, str]) -> None:
    built, _ = wheel
    names = set(zipfile.ZipFile(built).namelist())
    sources = {
        str(path.relative_to(ROOT))
        for part in ("worker", "rules")
        for path in (ROOT / part).rglob("*.py")
    }
    assert sources and sources <= names, sorted(sources - names)
    assert "rules/packs/cpt97012.toml" in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(built).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "Requires-Dist: zstandard" in text  # --compression-type zstd works out of the box
    schemas = {n for n in names if "/data/share/charge-capture/schemas/" in n}
    assert any(n.endswith("registry.json") for n in schemas)
