"""Group handover of `charge-capture run` processes: start, a second instance joining, SIGTERM.

Printed, each the median of `--runs`:
- cold start -> ready: process started -> /readyz 200 (one instance, its partitions restored);
- second instance joins: the second process started -> both ready and sharing the partitions;
- SIGTERM -> exit: how long a stopping instance takes to leave;
- SIGTERM -> handover: until the remaining instance owns every partition and is ready;
- restart -> ready: SIGTERM of the only instance, a new process with the same instance id
  started at once -> /readyz 200.

    python -m bench.rejoin
    python -m bench.rejoin --session-timeout-ms 6000   # Tansu joins in about half of it
    python -m bench.rejoin --source /path/to/another/checkout   # that checkout's worker

Against the embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.common import bench_broker
from rules.model import ChargeEvent
from worker.cli.cluster import produce_events
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.kafka.embedded import free_loopback_port
from worker.offline.sample import generate_events

ROOT = Path(__file__).resolve().parent.parent


class Instance:
    def __init__(
        self, config: WorkerConfig, name: str, log_dir: Path, extra: list[str], source: Path
    ) -> None:
        self.source = source
        self.port = free_loopback_port()
        self.argv = [
            sys.executable, "-c", "import sys; from worker.cli import main; sys.exit(main())",
            "run", "--bootstrap-servers", str(config.bootstrap_servers), "--app-id",
            config.app_id, "--instance-id", name, "--http-port", str(self.port),
            "--session-timeout-ms", str(config.session_timeout_ms),
            "--heartbeat-interval-ms", str(config.heartbeat_interval_ms), *extra,
        ]  # fmt: skip
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
        env["PYTHONPATH"] = str(self.source)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.source
            )
        return time.monotonic()

    def sigterm(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return time.monotonic()

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def partitions(self) -> int:
        status, body = self._get("/metrics")
        if status != 200:
            return -1
        for line in body.splitlines():
            if line.startswith("charge_capture_partitions_assigned "):
                return int(float(line.split()[1]))
        return -1

    def _get(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""
        except OSError:
            return 0, ""


def until(done: Callable[[], bool], timeout_s: float = 120.0) -> float:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("not within the time limit")
        time.sleep(0.05)
    return time.monotonic()


def one_run(
    config: WorkerConfig, log_dir: Path, extra: list[str], n: int, source: Path
) -> dict[str, float]:
    a = Instance(config, f"a{n}", log_dir, extra, source)
    b = Instance(config, f"b{n}", log_dir, extra, source)
    figures: dict[str, float] = {}
    try:
        started = a.start()
        figures["cold start -> ready"] = until(a.ready) - started
        started = b.start()
        shared = until(
            lambda: a.ready() and b.ready() and 0 < a.partitions() < config.partitions
            and a.partitions() + b.partitions() == config.partitions
        )  # fmt: skip
        figures["second instance joins"] = shared - started
        stopped = b.sigterm()
        assert b.proc is not None
        b.proc.wait(timeout=60)
        figures["SIGTERM -> exit"] = time.monotonic() - stopped
        handed = until(lambda: a.ready() and a.partitions() == config.partitions)
        figures["SIGTERM -> handover"] = handed - stopped
        a.sigterm()
        assert a.proc is not None
        a.proc.wait(timeout=60)
        started = a.start()
        figures["restart -> ready"] = until(a.ready) - started
    finally:
        for instance in (a, b):
            if instance.proc is not None and instance.proc.poll() is None:
                instance.proc.kill()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--worker-arg", action="append", default=[], help="extra `run` flag")
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose worker runs")
    args = parser.parse_args()
    with bench_broker() as (servers, description), tempfile.TemporaryDirectory() as tmp:
        print(f"broker: {description}; session timeout {args.session_timeout_ms} ms")
        results: dict[str, list[float]] = {}
        for n in range(args.runs):
            config = WorkerConfig(
                bootstrap_servers=servers,
                app_id=f"bench-rejoin-{n}-{time.time_ns()}",
                session_timeout_ms=args.session_timeout_ms,
                heartbeat_interval_ms=max(args.session_timeout_ms // 5, 100),
            )
            ensure_topics(config)
            events = [ChargeEvent.model_validate(e) for e in generate_events(200, seed=n)]
            produce_events(config, events)
            run = one_run(config, Path(tmp), args.worker_arg, n, args.source)
            for name, value in run.items():
                results.setdefault(name, []).append(value)
        for name, values in results.items():
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(f"{name:<24} median {statistics.median(values):5.1f} s  ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
