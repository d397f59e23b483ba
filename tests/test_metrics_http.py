"""The worker's HTTP port: /metrics exposition with the contract names, /healthz, /readyz."""

from __future__ import annotations

import json
import logging
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until
from worker.observability import logs
from worker.observability.health import Health
from worker.observability.http import HttpServer, start_http_server
from worker.observability.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    return Health(clock=clock)


@pytest.fixture
def server(metrics: Metrics, health: Health) -> Iterator[HttpServer]:
    srv = start_http_server(
        0, metrics, health, host="127.0.0.1", loop_deadline_s=30.0, ephemeral=True
    )
    try:
        yield srv
    finally:
        srv.close()


def get(server: HttpServer, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def test_metrics_endpoint_exposes_contract_names(server: HttpServer, metrics: Metrics) -> None:
    metrics.events_consumed.labels(topic="charges.captured").inc(3)
    metrics.decisions.labels(status="HELD").inc()
    metrics.decisions.labels(status="ACCEPTED").inc(2)
    metrics.holds.labels(rule_id="TRACTION_DUPLICATE").inc()
    metrics.corrections.labels(rule_id="TRACTION_UNITS").inc()
    metrics.dlq_records.labels(error_kind="DECODE").inc()
    metrics.transactions.labels(outcome="committed").inc()
    metrics.rebalances.labels(kind="assigned").inc()
    metrics.partitions_assigned.set(6)
    metrics.state_visits.set(42)
    metrics.restore_records.inc(10)
    metrics.restore_seconds.observe(0.5)
    metrics.batch_seconds.observe(0.02)
    metrics.event_to_decision_seconds.observe(7200.0)
    metrics.consumer_lag.labels(topic="charges.captured", partition="0").set(17)
    metrics.oldest_held_age.set(3600)
    metrics.last_progress.set(1_700_000_000)

    status, body = get(server, "/metrics")
    assert status == 200
    assert value(body, "charge_capture_events_consumed_total", topic="charges.captured") == 3
    assert value(body, "charge_capture_decisions_total", status="HELD") == 1
    assert value(body, "charge_capture_decisions_total", status="ACCEPTED") == 2
    # pre-created at zero so rate() sees the first increment
    assert value(body, "charge_capture_decisions_total", status="VOIDED") == 0
    assert value(body, "charge_capture_dlq_records_total", error_kind="SCHEMA") == 0
    assert value(body, "charge_capture_transactions_total", outcome="aborted") == 0
    assert value(body, "charge_capture_holds_total", rule_id="TRACTION_DUPLICATE") == 1
    assert value(body, "charge_capture_corrections_total", rule_id="TRACTION_UNITS") == 1
    assert value(body, "charge_capture_dlq_records_total", error_kind="DECODE") == 1
    assert value(body, "charge_capture_transactions_total", outcome="committed") == 1
    assert value(body, "charge_capture_rebalances_total", kind="assigned") == 1
    assert value(body, "charge_capture_partitions_assigned") == 6
    assert value(body, "charge_capture_state_visits") == 42
    assert value(body, "charge_capture_restore_records_total") == 10
    assert value(body, "charge_capture_restore_seconds_count") == 1
    assert value(body, "charge_capture_batch_processing_seconds_bucket", le="0.025") == 1
    # a two-hour-late event lands in a finite bucket, not only +Inf
    assert value(body, "charge_capture_event_to_decision_seconds_bucket", le="3600.0") == 0
    assert value(body, "charge_capture_event_to_decision_seconds_bucket", le="14400.0") == 1
    assert (
        value(body, "charge_capture_consumer_lag_records", topic="charges.captured", partition="0")
        == 17
    )
    assert value(body, "charge_capture_oldest_held_charge_age_seconds") == 3600
    assert value(body, "charge_capture_last_progress_timestamp_seconds") == 1_700_000_000
    assert value(body, "charge_capture_ready") == 0
    build = [k for k in samples(body) if k[0] == "charge_capture_build_info"]
    assert len(build) == 1 and dict(build[0][1]).keys() == {"version"}


def test_forget_partitions_drops_lag_series(metrics: Metrics) -> None:
    metrics.consumer_lag.labels(topic="t", partition="0").set(5)
    metrics.consumer_lag.labels(topic="t", partition="1").set(7)
    metrics.forget_partitions([("t", 0), ("t", 9)])  # unknown partitions are ignored
    names = {
        (s.labels["partition"])
        for fam in metrics.registry.collect()
        if fam.name == "charge_capture_consumer_lag_records"
        for s in fam.samples
    }
    assert names == {"1"}


def test_openmetrics_negotiation(server: HttpServer) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.read().decode().rstrip().endswith("# EOF")


def test_healthz_goes_503_when_loop_is_stale(
    server: HttpServer, health: Health, clock: FakeClock
) -> None:
    health.mark_loop_alive()
    assert get(server, "/healthz") == (200, "ok\n")
    clock.t += 29
    assert get(server, "/healthz")[0] == 200
    clock.t += 2  # 31 s since the last iteration > 30 s deadline
    status, body = get(server, "/healthz")
    assert status == 503
    assert "stalled" in body
    assert not health.is_alive(clock.t, 30.0)
    health.mark_loop_alive()
    assert get(server, "/healthz")[0] == 200
    assert health.is_alive(clock.t, 30.0)


def test_healthz_fails_when_startup_never_reaches_the_loop(
    server: HttpServer, clock: FakeClock
) -> None:
    assert get(server, "/healthz")[0] == 200  # within the deadline after start
    clock.t += 31
    assert get(server, "/healthz")[0] == 503


def test_readyz_follows_set_ready(server: HttpServer, health: Health, metrics: Metrics) -> None:
    status, body = get(server, "/readyz")
    assert status == 503 and "starting" in body
    health.set_ready(True, "6 partitions restored, consuming")
    status, body = get(server, "/readyz")
    assert status == 200 and "consuming" in body
    assert health.readiness() == (True, "6 partitions restored, consuming")
    assert value(get(server, "/metrics")[1], "charge_capture_ready") == 1
    health.set_ready(False, "rebalance in progress")
    status, body = get(server, "/readyz")
    assert status == 503 and "rebalance" in body
    assert value(get(server, "/metrics")[1], "charge_capture_ready") == 0


def test_unknown_path_is_404(server: HttpServer) -> None:
    assert get(server, "/nope")[0] == 404


def test_port_zero_means_off_unless_ephemeral(metrics: Metrics, health: Health) -> None:
    with pytest.raises(ValueError, match="off"):
        start_http_server(0, metrics, health, host="127.0.0.1")


def test_close_frees_the_port(metrics: Metrics, health: Health) -> None:
    srv = start_http_server(0, metrics, health, host="127.0.0.1", ephemeral=True)
    port = srv.port
    srv.close()
    # the same port can be bound again once closed
    again = start_http_server(port, metrics, health, host="127.0.0.1")
    try:
        assert again.port == port
    finally:
        again.close()


def test_private_registries_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a.decisions.labels(status="HELD").inc()
    assert b.decisions.labels(status="HELD")._value.get() == 0


def test_a_scraper_that_hangs_up_leaves_only_json_log_lines(
    server: HttpServer, metrics: Metrics, capfd: pytest.CaptureFixture[str]
) -> None:
    """socketserver prints a raw traceback to stderr when a client resets mid-request; the
    worker's server logs one JSON line at DEBUG instead."""
    for n in range(200):  # a body of some kilobytes, still being written when the RST lands
        metrics.holds.labels(rule_id=f"RULE_{n}").inc()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("kafka").level
    logs.configure("DEBUG")
    out: list[str] = []
    err: list[str] = []
    try:
        capfd.readouterr()
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            sock.close()  # SO_LINGER 0: a reset, not a clean close

        def logged() -> bool:
            captured = capfd.readouterr()
            out.append(captured.out)
            err.append(captured.err)
            return "HTTP client went away" in "".join(out)

        wait_until(logged, 10, message="no line for a client that went away")
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        logging.getLogger("kafka").setLevel(saved[2])
    assert "".join(err) == "", "".join(err)
    lines = [line for line in "".join(out).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    gone = [e for e in entries if e["msg"] == "HTTP client went away"]
    assert gone and all(e["level"] == "DEBUG" and "error" in e for e in gone)
