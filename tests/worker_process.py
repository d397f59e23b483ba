"""Worker subprocesses and stream-progress probes for the multi-process broker tests.

Shared by tests/test_worker_crash.py and tests/test_worker_scaling.py. Everything waits by
polling with a deadline (tests.helpers.wait_until); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from tests.helpers import wait_until
from tests.worker_harness import isolated_config
from worker.config import WorkerConfig
from worker.kafka.embedded import die_with_parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def charge_capture_bin() -> str:
    """The console script of the venv running the tests (`.venv/bin/charge-capture`)."""
    beside = Path(sys.executable).parent / "charge-capture"
    if beside.is_file():
        return str(beside)
    found = shutil.which("charge-capture")
    assert found, "the charge-capture console script is not installed"
    return found


def worker_config(bootstrap_servers: str, prefix: str, **overrides: Any) -> WorkerConfig:
    """Unique topic names, app id and group for one test on the shared broker."""
    return isolated_config(bootstrap_servers, prefix, group_id=f"{prefix}.group", **overrides)


class WorkerProcess:
    """`charge-capture run` as a subprocess with its JSON logs captured to a file."""

    def __init__(
        self,
        config: WorkerConfig,
        instance_id: str,
        log_dir: Path,
        *extra: str,
        http_port: int = 0,
    ) -> None:
        self.config = config
        self.http_port = http_port
        self.instance_id = instance_id
        self.log_dir = log_dir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.log_paths: list[Path] = []

    def argv(self) -> list[str]:
        c = self.config
        assert c.bootstrap_servers
        return [
            charge_capture_bin(),
            "run",
            "--bootstrap-servers",
            c.bootstrap_servers,
            "--instance-id",
            self.instance_id,
            "--http-port",
            str(self.http_port),
            "--session-timeout-ms",
            str(c.session_timeout_ms),
            "--heartbeat-interval-ms",
            str(c.heartbeat_interval_ms),
            "--input-topic",
            c.input_topic,
            "--corrected-topic",
            c.corrected_topic,
            "--held-topic",
            c.held_topic,
            "--dlq-topic",
            c.dlq_topic,
            "--app-id",
            c.app_id,
            "--group-id",
            c.group,
            *self.extra,
        ]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.incarnation += 1
        path = self.log_dir / f"{self.instance_id}-{self.incarnation}.log"
        self.log_paths.append(path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
        with path.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                # An orphaned worker would keep consuming into the next test's broker state.
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no close, no abort, no leave-group — a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the worker's clean shutdown), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def log_entries(self) -> Iterator[dict[str, Any]]:
        """JSON log lines of every incarnation (non-JSON lines, e.g. tracebacks, skipped)."""
        for path in self.log_paths:
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:  # a line cut by SIGKILL
                        continue

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_paths or not self.log_paths[-1].exists():
            return "(no log)"
        text = self.log_paths[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics by `name{labels}` (needs http_port)."""
        assert self.http_port, "started without --http-port"
        return scrape(self.http_port)

    def restored_partitions(self) -> list[list[int]]:
        """The partitions of each "state restored" log line, in order."""
        return [list(e["partitions"]) for e in self.log_entries() if e["msg"] == "state restored"]


def scrape(port: int) -> dict[str, float]:
    """Samples of the /metrics on `port` by `name{labels}`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


class RecordCounter:
    """Counts records arriving on topics (read_uncommitted: in-flight work counts as progress)."""

    def __init__(self, bootstrap_servers: str, topics: list[str]) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_uncommitted",
            fetch_max_wait_ms=50,
        )
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.seen = 0

    def poll(self) -> int:
        for records in self.consumer.poll(timeout_ms=50, max_records=10_000).values():
            self.seen += len(records)
        return self.seen

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class GroupProgress:
    """Committed offsets of a consumer group against the input highwater (seen on a fetch).

    The highwater comes from fetch responses, never ListOffsets, which Tansu gets wrong.
    """

    def __init__(self, bootstrap_servers: str, group: str, topics: list[str]) -> None:
        self.tail = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
        )
        self.tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.tail.partitions_for_topic(t) or ())
        ]
        self.tail.assign(self.tps)
        self.tail.seek_to_beginning(*self.tps)
        # Never subscribes: only used for OffsetFetch of the worker group's commits.
        self.offsets = KafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
        )

    def lag(self) -> int | None:
        """Records not yet committed by the group; None until every highwater is known."""
        self.tail.poll(timeout_ms=50, max_records=10_000)
        total = 0
        for tp in self.tps:
            highwater = self.tail.highwater(tp)
            if highwater is None:
                return None
            committed = self.offsets.committed(tp) or 0
            total += max(highwater - committed, 0)
        return total

    def committed_equals_highwater(self) -> bool:
        return self.lag() == 0

    def highwaters(self) -> int:
        return sum(self.tail.highwater(tp) or 0 for tp in self.tps)

    def wait_drained(self, timeout_s: float, *workers: WorkerProcess, records: int = 0) -> None:
        """Until the group has committed every record; with `records`, once the highwaters
        seen count at least that many (a highwater is the last fetch response's: one fetched
        while the producer was still writing would make a half-read input look drained)."""

        def done() -> bool:
            for w in workers:
                assert w.alive, f"worker {w.instance_id} exited:\n{w.log_tail()}"
            return self.committed_equals_highwater() and self.highwaters() >= records

        wait_until(done, timeout_s, interval_s=0.1, message="input not fully committed")

    def close(self) -> None:
        self.tail.close(autocommit=False)
        self.offsets.close(autocommit=False)
