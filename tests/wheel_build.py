"""The package's wheel, built as the Docker image's builder stage builds it (used by
tests/test_packaging.py and tests/test_compiled.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def builder_sources() -> list[str]:
    """What the image's builder stage copies before `pip install .` (deploy/Dockerfile)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    builder = text[: text.index("\nFROM ", text.index("AS builder"))]
    sources = []
    for line in builder.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


def build_wheel(workdir: Path, *, compiled: bool) -> tuple[Path, str]:
    """The wheel and pip's output, built with the venv's setuptools (no download) from exactly
    the files the builder stage copies, so the image builds too; `compiled`: with the rules
    core compiled by mypyc (setup.py, CHARGE_CAPTURE_COMPILE=1)."""
    tree, out = workdir / "tree", workdir / "wheel"
    tree.mkdir()
    for source in builder_sources():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, tree / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, tree / source)
    env = {k: v for k, v in os.environ.items() if k != "CHARGE_CAPTURE_COMPILE"}
    if compiled:
        env["CHARGE_CAPTURE_COMPILE"] = "1"
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
        timeout=600,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("charge_capture-*.whl")
    return built, proc.stdout + proc.stderr
