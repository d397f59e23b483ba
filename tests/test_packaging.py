"""The package builds without setuptools warnings, from the files the Docker image's builder
stage copies, and the wheel holds every module, the rule packs, the schemas and the licence (a
regular install, as in the image, not only an editable one).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.wheel_build import ROOT, build_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The pure-Python wheel, as the image's builder stage builds it."""
    return build_wheel(tmp_path_factory.mktemp("wheel"), compiled=False)


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
