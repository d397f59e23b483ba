"""A broker outage as a worker sees it: every connection cut and refused for a while, then back.

A dedicated embedded Tansu advertises a loopback TCP proxy (tests/tcp_proxy.py) as its address,
so every client (the worker's and the feeder's) talks through the proxy. A `charge-capture run`
subprocess decides a steady stream of events; the proxy is cut for `--cut-seconds` and
restored. Printed: /readyz during and after the cut, the worker's exit code if it died, the
seconds from reconnection to the group's first new commit, and the worker's log lines at
WARNING and above during the cut and in the 30 s after it, by logger and message.

    python -m bench.outage --cut-seconds 60
    python -m bench.outage --cut-seconds 60 --source /path/to/another/checkout   # its worker

`--source` runs the worker of another checkout (e.g. the commit before a change) with this
checkout's harness: the figures before and after a change come from the same script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from rules.model import ChargeEvent
from tests.tcp_proxy import TcpProxy
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.kafka.embedded import EmbeddedBroker, free_loopback_port
from worker.offline.sample import generate_events
from worker.serde.codec import Codec

ROOT = Path(__file__).resolve().parent.parent
AFTER_S = 30.0


def readyz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return f"{response.status} {response.read().decode().strip()}"
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read().decode().strip()}"
    except OSError as error:
        return f"down ({type(error).__name__})"


class Feeder(threading.Thread):
    """Produces events at a steady rate through the proxy; the producer buffers during a cut."""

    def __init__(self, config: WorkerConfig, per_s: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.config, self.per_s = config, per_s
        self.events = [ChargeEvent.model_validate(e) for e in generate_events(5000, seed=11)]
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        codec = Codec()
        producer = KafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers,
            acks="all",
            linger_ms=5,
            delivery_timeout_ms=600_000,
            request_timeout_ms=30_000,
            reconnect_backoff_max_ms=1000,
        )
        try:
            while not self.stop.is_set() and self.sent < len(self.events):
                event = self.events[self.sent]
                producer.send(
                    self.config.input_topic,
                    key=event.patient_id.encode(),
                    value=codec.encode_event(event),
                )
                self.sent += 1
                self.stop.wait(1 / self.per_s)
            producer.flush(timeout=600)
        finally:
            producer.close(timeout=5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def committed_total(config: WorkerConfig) -> int | None:
    consumer = KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=config.group,
        enable_auto_commit=False,
        request_timeout_ms=5000,
        reconnect_backoff_max_ms=500,
    )
    try:
        total = 0
        for partition in range(config.partitions):
            tp = TopicPartition(config.input_topic, partition)
            total += consumer.committed(tp, timeout_ms=3000) or 0
        return total
    except Exception:  # the broker not back yet: no figure this round
        return None
    finally:
        consumer.close(autocommit=False, timeout_ms=1000)


def worker_argv(config: WorkerConfig, http_port: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from worker.cli import main; sys.exit(main())",
        "run",
        "--bootstrap-servers",
        str(config.bootstrap_servers),
        "--instance-id",
        "bench-1",
        "--http-port",
        str(http_port),
        "--app-id",
        config.app_id,
        *extra,
    ]


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        elif line.strip():
            out.append({"level": "RAW", "logger": "(not JSON)", "msg": line[:80], "ts": None})
    return out


def count_loud(entries: list[dict[str, Any]], start: float, end: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    for entry in entries:
        if entry["level"] not in ("WARNING", "ERROR", "CRITICAL", "RAW"):
            continue
        ts = entry.get("ts")
        if ts and start <= dt.datetime.fromisoformat(ts).timestamp() < end:
            counts[f"{entry['level']} {entry['logger']}: {str(entry['msg'])[:70]}"] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut-seconds", type=float, default=60.0)
    parser.add_argument("--events-per-s", type=float, default=20.0)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose worker runs")
    parser.add_argument("--worker-arg", action="append", default=[], help="extra `run` flag")
    parser.add_argument(
        "--stop-in-cut",
        type=float,
        default=None,
        metavar="S",
        help="instead: SIGTERM the worker S seconds into the cut; print how long it takes to exit",
    )
    args = parser.parse_args()

    target = free_loopback_port()
    with TcpProxy(target) as proxy, tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(port=target, advertised_port=proxy.port).start()
        try:
            return measure(args, proxy, broker, Path(tmp))
        finally:
            broker.stop()


def measure(args: argparse.Namespace, proxy: TcpProxy, broker: EmbeddedBroker, tmp: Path) -> int:
    config = WorkerConfig(bootstrap_servers=broker.bootstrap_servers, app_id="bench-outage")
    ensure_topics(config)
    http_port = free_loopback_port()
    log_path = tmp / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGE_CAPTURE_")}
    env["PYTHONPATH"] = str(args.source)
    with log_path.open("wb") as out:
        worker = subprocess.Popen(
            worker_argv(config, http_port, args.worker_arg),
            cwd=args.source,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    feeder = Feeder(config, args.events_per_s)
    try:
        feeder.start()
        deadline = time.monotonic() + 120
        while not readyz(http_port).startswith("200") or not committed_total(config):
            if time.monotonic() > deadline or worker.poll() is not None:
                print("worker never became ready and committed", file=sys.stderr)
                return 1
            time.sleep(0.5)
        time.sleep(3)  # a few batches in flight when the cut lands
        print(f"before the cut: /readyz {readyz(http_port)}")
        cut_at = time.time()
        proxy.cut()
        if args.stop_in_cut is not None:
            time.sleep(args.stop_in_cut)
            signalled = time.monotonic()
            worker.terminate()
            code = worker.wait(timeout=120)
            print(
                f"SIGTERM {args.stop_in_cut:.0f} s into the cut -> exit {code} after "
                f"{time.monotonic() - signalled:.1f} s"
            )
            proxy.restore()
            return 0
        during: Counter[str] = Counter()
        cpu_at_cut = cpu_seconds(worker.pid)
        while time.time() - cut_at < args.cut_seconds:
            during[readyz(http_port).split(":")[0]] += 1
            time.sleep(1)
        cpu = cpu_seconds(worker.pid) - cpu_at_cut if worker.poll() is None else float("nan")
        before = committed_total_after_restore(proxy, config)
        back_at = time.time()
        print(f"/readyz during the cut (one probe a second): {dict(during)}")
        print(f"worker CPU during the cut: {cpu:.1f} s in {args.cut_seconds:.0f} s")
        report_recovery(config, worker, http_port, before, back_at)
        feeder.stop.set()
        time.sleep(max(0.0, back_at + AFTER_S - time.time()))
    finally:
        feeder.stop.set()
        feeder.join(timeout=60)
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=60)
    entries = log_lines(log_path)
    report_logs(entries, cut_at, back_at, worker.returncode)
    return 0


def committed_total_after_restore(proxy: TcpProxy, config: WorkerConfig) -> int:
    proxy.restore()
    deadline = time.monotonic() + 30
    while (total := committed_total(config)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return total or 0


def report_recovery(
    config: WorkerConfig, worker: subprocess.Popen[bytes], http_port: int, before: int, back: float
) -> None:
    ready_s = commit_s = None
    while time.time() - back < AFTER_S and (ready_s is None or commit_s is None):
        if ready_s is None and readyz(http_port).startswith("200"):
            ready_s = time.time() - back
        if commit_s is None and (committed_total(config) or 0) > before:
            commit_s = time.time() - back
        if worker.poll() is not None:
            break
        time.sleep(0.2)
    print(f"worker exit code: {worker.poll()} (None: still running)")
    print(f"reconnect -> /readyz 200: {_seconds(ready_s)}")
    print(f"reconnect -> first new commit of the group: {_seconds(commit_s)}")


def _seconds(value: float | None) -> str:
    return "not within 30 s" if value is None else f"{value:.1f} s"


def report_logs(entries: list[dict[str, Any]], cut: float, back: float, code: int | None) -> None:
    during = count_loud(entries, cut, back)
    after = count_loud(entries, back, back + AFTER_S)
    raw = sum(1 for e in entries if e["level"] == "RAW")
    print(f"worker exit code at the end: {code}; lines that are not JSON (whole run): {raw}")
    print(f"WARNING+ lines during the {back - cut:.0f} s cut: {sum(during.values())}")
    for kind, n in during.most_common(12):
        print(f"  {n:5d}  {kind}")
    print(f"WARNING+ lines in the {AFTER_S:.0f} s after it: {sum(after.values())}")
    for kind, n in after.most_common(12):
        print(f"  {n:5d}  {kind}")


if __name__ == "__main__":
    sys.exit(main())
