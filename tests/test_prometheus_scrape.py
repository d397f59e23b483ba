"""A real Prometheus server scrapes a running worker: the values it stores match a known input.

The worker runs in-process (its own thread) with its HTTP port on loopback; Prometheus (Debian's
`prometheus` package, installed by deploy/install-prometheus.sh) scrapes it every second and the
assertions go through Prometheus's HTTP API, so exposition format, metric names, label values and
the `up` series are all checked the way the dashboard and the alert rules will see them.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from rules.model import ChargeEvent
from tests.brokers import BrokerInfo
from tests.factories import avro_fields, charge, other_line
from tests.helpers import wait_until
from tests.worker_harness import isolated_config
from worker.cli.cluster import produce_events
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.kafka.reading import read_to_end
from worker.observability.health import Health
from worker.observability.http import HttpServer, start_http_server
from worker.observability.metrics import Metrics
from worker.runtime.worker import Worker
from worker.serde.codec import Codec
from worker.serde.framing import EVENT

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "charge-capture.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
)
JOB = "charge-capture"
pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the prometheus server binary is not installed (deploy/install-prometheus.sh)",
    ),
]
METRIC_RE = re.compile(r"\bcharge_capture_[a-zA-Z0-9_]*")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
TIMEOUT_S = 60.0


# --- the known input ------------------------------------------------------------------------
# One charge line per visit (distinct patients), so every event yields exactly one decision
# record and the expected counters can be read straight off this list.


def known_events() -> list[ChargeEvent]:
    return [
        # clean traction line: ACCEPTED, later VOIDED by its own VOID event
        charge(charge_id="K-ACC", patient_id="P90000001", encounter_id="ENC-K1"),
        # 3 units of 97012: CORRECTED (TRACTION_UNITS cuts it to 1)
        charge(charge_id="K-COR", patient_id="P90000002", encounter_id="ENC-K2", units=3),
        # progress note missing: HELD by DOCUMENTATION_INCOMPLETE
        charge(
            charge_id="K-DOC",
            patient_id="P90000003",
            encounter_id="ENC-K3",
            documentation={"progress_note": False},
        ),
        # no supporting diagnosis: HELD by DIAGNOSIS_NOT_SUPPORTING
        charge(
            charge_id="K-DX",
            patient_id="P90000004",
            encounter_id="ENC-K4",
            diagnosis_codes=["S13.4XXA", "R51.9"],
        ),
        # a lone non-traction line: ACCEPTED
        other_line("97110", "K-EX", patient_id="P90000005", encounter_id="ENC-K5", units=2),
        # the VOID of the first line: VOIDED
        charge(
            charge_id="K-ACC",
            event_id="E-K-ACC-void",
            event_type="VOID",
            occurred_at="2026-03-02T16:00:00Z",
            patient_id="P90000001",
            encounter_id="ENC-K1",
        ),
    ]


# Sent with a key that is not its patient id: re-keyed through the repartition topic, ACCEPTED.
MISKEYED = other_line("97140", "K-MIS", patient_id="P90000006", encounter_id="ENC-K6")

EXPECTED_DECISIONS = {"ACCEPTED": 3, "CORRECTED": 1, "HELD": 2, "VOIDED": 1, "RETRACTED": 0}
EXPECTED_HOLDS = {"DOCUMENTATION_INCOMPLETE": 1, "DIAGNOSIS_NOT_SUPPORTING": 1}
EXPECTED_CORRECTIONS = {"TRACTION_UNITS": 1}
EXPECTED_DLQ = {
    "DECODE": 1,
    "VALIDATION": 1,
    "SCHEMA": 0,
    "REPARTITION": 0,
    "TOO_LARGE": 0,
    "UNPRODUCIBLE": 0,
}


def produce_known_input(config: WorkerConfig) -> dict[str, int]:
    """Publish the known input; return the records expected per consumed topic."""
    events = known_events()
    produce_events(config, events)
    codec = Codec()
    bad_event = avro_fields(charge_id="K-BAD", patient_id="P90000007")
    bad_event["patient_id"] = ""  # schema-valid Avro, fails model validation
    assert config.bootstrap_servers
    producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all")
    try:
        producer.send(config.input_topic, key=b"P90000008", value=b"\x07not an avro record")
        producer.send(
            config.input_topic,
            key=b"P90000007",
            value=codec.encode(EVENT, bad_event),
        )
        producer.send(
            config.input_topic, key=b"not-the-patient", value=codec.encode_event(MISKEYED)
        )
        producer.flush(timeout=TIMEOUT_S)
    finally:
        producer.close(timeout=5)
    return {config.input_topic: len(events) + 3, config.repartition_topic: 1}


# --- processes ------------------------------------------------------------------------------


@dataclass
class RunningWorker:
    worker: Worker
    server: HttpServer
    config: WorkerConfig
    consumed: dict[str, int]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body: bytes = resp.read()
        return body.decode()


@pytest.fixture
def running_worker(broker: BrokerInfo, topic_prefix: str) -> Iterator[RunningWorker]:
    config = isolated_config(broker, topic_prefix)
    ensure_topics(config)
    consumed = produce_known_input(config)
    metrics, health = Metrics(), Health()
    server = start_http_server(0, metrics, health, host="127.0.0.1", ephemeral=True)
    worker = Worker(config, metrics=metrics, health=health)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: worker.caught_up() or not thread.is_alive(),
            timeout_s=TIMEOUT_S,
            interval_s=0.1,
            message="the worker did not catch up with the known input",
        )
        assert thread.is_alive(), "the worker thread died"
        # The re-keyed copy is decided from the repartition topic, which caught_up() ignores.
        wait_until(
            lambda: all(
                metrics.registry.get_sample_value(
                    "charge_capture_events_consumed_total", {"topic": topic}
                )
                == count
                for topic, count in consumed.items()
            ),
            timeout_s=TIMEOUT_S,
            interval_s=0.1,
            message="the worker did not consume every input and re-keyed record",
        )
        yield RunningWorker(worker, server, config, consumed)
    finally:
        stop.set()
        thread.join(timeout=30)
        server.close()


@dataclass
class PrometheusServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def query(self, promql: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"query": promql})
        body = json.loads(http_get(f"{self.url}/api/v1/query?{qs}"))
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values_by(self, promql: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(promql)}

    def scalar(self, promql: str) -> float:
        (sample,) = self.query(promql)
        return float(sample["value"][1])


def _ready(prom: PrometheusServer) -> bool:
    assert prom.proc.poll() is None, f"prometheus exited early:\n{prom.log()}"
    try:
        return http_get(f"{prom.url}/-/ready", timeout_s=2).strip() != ""
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def prometheus(running_worker: RunningWorker, tmp_path: Path) -> Iterator[PrometheusServer]:
    assert PROMETHEUS is not None
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{running_worker.server.port}"]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    prom = PrometheusServer(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_until(lambda: _ready(prom), TIMEOUT_S, 0.2, "prometheus did not become ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --- tests ----------------------------------------------------------------------------------


def test_prometheus_scrapes_the_workers_counts(
    running_worker: RunningWorker, prometheus: PrometheusServer
) -> None:
    prom, config = prometheus, running_worker.config
    job = f'job="{JOB}"'
    wait_until(
        lambda: prom.query(f"charge_capture_decisions_total{{{job}}}"),
        TIMEOUT_S,
        0.2,
        f"no charge_capture_decisions_total in prometheus:\n{prom.log()}",
    )

    assert prom.scalar(f"up{{{job}}}") == 1.0
    # The worker emits only a charge's latest decision per batch: K-ACC's ACCEPTED is
    # published unless its VOID was decided in the same batch. The counter counts what the
    # topics hold, record for record.
    published = Counter(
        Codec().decode_decision(r.value).status.value
        for r in read_to_end(config, [config.corrected_topic, config.held_topic])
    )
    assert published["ACCEPTED"] in (2, 3)
    assert {k: v for k, v in published.items() if k != "ACCEPTED"} == {
        k: v for k, v in EXPECTED_DECISIONS.items() if k != "ACCEPTED" and v
    }
    assert prom.values_by(f"charge_capture_decisions_total{{{job}}}", "status") == {
        status: float(published.get(status, 0)) for status in EXPECTED_DECISIONS
    }
    assert prom.values_by(f"charge_capture_holds_total{{{job}}}", "rule_id") == {
        k: float(v) for k, v in EXPECTED_HOLDS.items()
    }
    assert prom.values_by(f"charge_capture_corrections_total{{{job}}}", "rule_id") == {
        k: float(v) for k, v in EXPECTED_CORRECTIONS.items()
    }
    assert prom.values_by(f"charge_capture_dlq_records_total{{{job}}}", "error_kind") == {
        k: float(v) for k, v in EXPECTED_DLQ.items()
    }
    assert prom.values_by(f"charge_capture_events_consumed_total{{{job}}}", "topic") == {
        k: float(v) for k, v in running_worker.consumed.items()
    }
    assert prom.scalar(f"charge_capture_partitions_assigned{{{job}}}") == config.partitions
    assert prom.scalar(f"charge_capture_ready{{{job}}}") == 1.0
    assert prom.values_by(f"charge_capture_transactions_total{{{job}}}", "outcome")["aborted"] == 0
    # Every committed input record is off the lag gauge, also on the repartition topic, whose
    # transactional writes end in a commit marker the committed offset stops short of.
    for topic in (config.input_topic, config.repartition_topic):
        lag = prom.values_by(
            f'charge_capture_consumer_lag_records{{{job},topic="{topic}"}}', "partition"
        )
        assert set(lag) == {str(p) for p in range(config.partitions)}
        assert set(lag.values()) == {0.0}, (topic, lag)
    version = prom.query(f"charge_capture_build_info{{{job}}}")
    assert len(version) == 1 and version[0]["metric"]["version"]


def _base(name: str) -> str:
    for suffix in SERIES_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _names_in_dashboard_and_alerts() -> set[str]:
    # The whole files, not only the query fields: any charge_capture_ identifier counts.
    text = DASHBOARD.read_text() + "\n" + ALERTS.read_text()
    return {_base(m) for m in METRIC_RE.findall(text)}


def _names_in_exposition(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(_base(re.split(r"[{ ]", line, maxsplit=1)[0]))
    return names


def test_dashboard_and_alert_metrics_are_all_in_the_real_scrape(
    running_worker: RunningWorker, prometheus: PrometheusServer
) -> None:
    used = _names_in_dashboard_and_alerts()
    assert len(used) >= 10, sorted(used)

    # What the worker's HTTP port actually serves, Prometheus text format ...
    text = http_get(f"http://127.0.0.1:{running_worker.server.port}/metrics")
    served = _names_in_exposition(text)
    assert used <= served, f"not on /metrics: {sorted(used - served)}"

    # ... and what Prometheus actually ingested from it (series names under the job).
    wait_until(
        lambda: prometheus.query(f'up{{job="{JOB}"}}'),
        TIMEOUT_S,
        0.2,
        "prometheus never scraped the worker",
    )
    ingested = {
        _base(s["metric"]["__name__"])
        for s in prometheus.query(f'count by (__name__) ({{job="{JOB}"}})')
    }
    assert used <= ingested, f"not ingested by prometheus: {sorted(used - ingested)}"
