"""`charge-capture demo`: the summary table it prints is what its /metrics says.

Runs the real demo command against the test broker with unique topics, reads its summary from
stdout, then scrapes the URL it printed while it is still serving.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import BrokerInfo
from tests.helpers import stop_process, wait_until
from tests.worker_harness import config_flags, isolated_config
from worker.kafka.admin import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHARGE_CAPTURE = Path(sys.executable).with_name("charge-capture")
STATUSES = ("ACCEPTED", "CORRECTED", "HELD", "VOIDED", "RETRACTED")
ROW_RE = re.compile(rf"^({'|'.join(STATUSES)})\s+(\d+)\s+(\d+)$", re.M)
HEADLINE_RE = re.compile(r"^(\d+) events decided in [\d.]+ s; dead-lettered (\d+)$", re.M)
METRICS_RE = re.compile(r"^metrics: (http://localhost:(\d+)/metrics)$", re.M)
TIMEOUT_S = 75.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_demo_summary_matches_its_metrics(
    broker: BrokerInfo, topic_prefix: str, tmp_path: Path
) -> None:
    config = isolated_config(broker, topic_prefix)
    # With --bootstrap-servers the demo uses the topics as they are (it creates them only on
    # its embedded broker), so create them here as `charge-capture topics` would.
    ensure_topics(config)
    port = free_port()
    args = [
        str(CHARGE_CAPTURE),
        "demo",
        "--visits",
        "150",
        "--http-port",
        str(port),
        "--serve-seconds",
        "30",
        *config_flags(config),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
    try:

        def summary_printed() -> bool:
            text = stdout_path.read_text()
            if METRICS_RE.search(text):
                return True
            assert proc.poll() is None, (
                f"demo exited ({proc.returncode}) before its metrics line:\n{text[-3000:]}\n"
                f"{stderr_path.read_text()[-3000:]}"
            )
            return False

        wait_until(summary_printed, TIMEOUT_S, 0.1, "the demo printed no metrics URL")
        summary = stdout_path.read_text()
        metrics_match = METRICS_RE.search(summary)
        assert metrics_match is not None and int(metrics_match.group(2)) == port
        samples = scrape(metrics_match.group(1))
        assert proc.poll() is None, "the demo stopped serving before --serve-seconds"
    finally:
        returncode = stop_process(proc)
    assert returncode == 0, stderr_path.read_text()[-3000:]

    rows = {m.group(1): int(m.group(3)) for m in ROW_RE.finditer(summary)}
    assert set(rows) == set(STATUSES), summary
    assert sum(rows.values()) > 0, summary
    for status, published in rows.items():
        metric = samples[("charge_capture_decisions_total", frozenset({("status", status)}))]
        assert metric == published, f"{status}: table {published}, /metrics {metric}\n{summary}"

    headline = HEADLINE_RE.search(summary)
    assert headline is not None, summary
    events, dead_lettered = int(headline.group(1)), int(headline.group(2))
    consumed = samples[
        ("charge_capture_events_consumed_total", frozenset({("topic", config.input_topic)}))
    ]
    assert consumed == events
    dlq = sum(v for (name, _), v in samples.items() if name == "charge_capture_dlq_records_total")
    assert dlq == dead_lettered

    # The demo's events occur just before it runs, so event-to-decision latency is the
    # pipeline's (seconds), not the months since a fixed sample day.
    latency = "charge_capture_event_to_decision_seconds_bucket"
    observed = samples[(latency, frozenset({("le", "+Inf")}))]
    assert observed == sum(rows.values()) > 0
    assert samples[(latency, frozenset({("le", "300.0")}))] == observed


def _run_in_a_terminal(args: list[str], stop: str, timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
    """Run `args` on a pseudo-terminal (stdin a tty, as with `make demo`); once it asks to be
    stopped, send `stop` (ctrl-c: the terminal's ^C, which signals the whole foreground
    process group; sigterm: to the process alone). Its exit code and everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the demo
        os.execve(
            args[0],
            args,
            {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")},
        )
    output = bytearray()
    sent_at: float | None = None
    deadline = time.monotonic() + timeout_s
    status = None
    try:
        while status is None:
            if select.select([fd], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO once the child has exited
                    output += os.read(fd, 65536)
            if sent_at is None and b"press Enter or Ctrl-C to stop" in output:
                sent_at = time.monotonic()
                if stop == "ctrl-c":
                    os.write(fd, b"\x03")
                else:
                    os.kill(pid, signal.SIGTERM)
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
            elif time.monotonic() > deadline or (sent_at and time.monotonic() - sent_at > 15):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"still running after {stop}:\n{output.decode()[-3000:]}")
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 65536):
                output += chunk
    finally:
        os.close(fd)
    assert sent_at is not None, output.decode()[-3000:]
    return status, output.decode(errors="replace")


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_demo_in_a_terminal_stops_cleanly_on_ctrl_c_and_sigterm(stop: str) -> None:
    """Its own embedded broker, as `make demo` runs it: a ^C reaches the demo, which stops its
    clients before the broker under them, so nothing logs an error on the way out."""
    args = [str(CHARGE_CAPTURE), "demo", "--visits", "50", "--http-port", str(free_port())]
    code, output = _run_in_a_terminal(args, stop)
    assert code == 0, output[-3000:]
    assert '"level": "ERROR"' not in output and "Traceback" not in output, output[-3000:]
    assert METRICS_RE.search(output.replace("\r\n", "\n"))
