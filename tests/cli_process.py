"""`charge-capture` as a user runs it: the console script in a subprocess, its exit code, its
stderr, and the one-line error the CLI promises for a user's mistake."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

from tests.worker_process import charge_capture_bin


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    seconds: float


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without CHARGE_CAPTURE_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str = "") -> Ran:
    began = time.monotonic()
    proc = subprocess.run(
        [charge_capture_bin(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env() if env is None else env,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - began)


def one_line_error(ran: Ran, code: int, *parts: str) -> str:
    """The single stderr line of a failed command: exit `code`, every part in it, no
    traceback."""
    assert "Traceback" not in ran.stderr and "Traceback" not in ran.stdout, ran.stderr
    assert ran.code == code, (ran.code, ran.stderr)
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    (line,) = lines
    for part in parts:
        assert part in line, (part, line)
    return line
