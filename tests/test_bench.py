"""The benchmarks stay runnable the way `make bench` runs them (`python -m bench.<name>`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "name",
    [
        "passthrough",
        "stream_throughput",
        "replay_throughput",
        "registry_decode",
        "outage",
        "rejoin",
        "hot_path",
        "state_restore",
        "peer_quix",
        "scaling",
    ],
)
def test_broker_benchmarks_import_and_parse_options(name: str) -> None:
    result = _bench(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_check_benchmark_prints_its_figure() -> None:
    result = _bench("check_throughput", "--events", "3000", "--runs", "1")
    assert result.returncode == 0, result.stderr
    figure = re.search(r"check throughput .*: ([\d,]+) ev/s", result.stdout)
    assert figure is not None, result.stdout
    assert int(figure.group(1).replace(",", "")) > 0
    events = re.search(r"run 1: (\d+) events", result.stdout)
    assert events is not None and int(events.group(1)) >= 2500
