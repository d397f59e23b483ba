"""Broker outages: every connection cut and refused, then back; the worker stays up through it.

The cluster is a dedicated embedded Tansu behind a loopback TCP proxy (tests/outage_harness.py):
cutting the proxy takes the whole cluster away from the worker, its feeder and the test's own
probes, as a network partition or a broker host going down would.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rules.model import ChargeEvent
from rules.pack import PackSet, RulePack, load_packs
from tests.helpers import wait_until
from tests.outage_harness import (
    Committed,
    Feeder,
    ProxiedBroker,
    check_outputs,
    proxied_broker,
    readyz,
)
from tests.worker_harness import running_worker
from tests.worker_process import (
    GroupProgress,
    WorkerProcess,
    charge_capture_bin,
    free_port,
    worker_config,
)
from worker.cli.cluster import produce_events
from worker.kafka.admin import ensure_topics
from worker.offline.sample import generate_events
from worker.runtime.outage import GRACE_S

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TXN_TIMEOUT_MS = 10_000
CUTS_S = (30.0, 2 * TXN_TIMEOUT_MS / 1000)  # a 30 s cut, then one past the transaction timeout
BACK_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[ProxiedBroker]:
    with proxied_broker() as proxied:
        yield proxied


@pytest.fixture(autouse=True)
def _reconnected(cluster: ProxiedBroker) -> Iterator[None]:
    yield
    cluster.proxy.restore()  # a failed test must not leave the next one without a broker


COMMITTED = 'charge_capture_transactions_total{outcome="committed"}'


def _committed(worker: WorkerProcess) -> float:
    return worker.metrics()[COMMITTED]


def _cut(cluster: ProxiedBroker, worker: WorkerProcess, seconds: float) -> dict[str, float]:
    """Cut for `seconds`: /readyz must turn 503 and stay so; after it, 200 and a commit soon."""
    port = worker.http_port
    cluster.proxy.cut()
    cut_at = time.monotonic()
    late: list[tuple[float, object]] = []  # /readyz past the grace period not 503, ...
    seen: dict[str, float] = {}

    def cut_over() -> bool:
        """One look at the worker during the cut; True once the cut has lasted `seconds`."""
        elapsed = time.monotonic() - cut_at
        if elapsed >= seconds:
            return True
        assert worker.alive, f"the worker exited during the cut:\n{worker.log_tail()}"
        code = readyz(port)
        if elapsed > GRACE_S + 1.5 and code != 503:
            late.append((round(elapsed, 1), code))
        if readyz(port, "/healthz") != 200:  # alive: its loop runs, only the broker is gone
            late.append((round(elapsed, 1), "healthz"))
        if "committed" not in seen and elapsed > GRACE_S:  # a commit in flight has failed
            seen["committed"] = _committed(worker)
        return False

    wait_until(cut_over, seconds + 30, 0.25, "the cut did not end")
    committed_before = seen.get("committed")
    assert not late, f"/readyz not 503 (or /healthz not 200) during the cut: {late}"
    cluster.proxy.restore()
    back_at = time.monotonic()
    figures: dict[str, float] = {}

    def recovered() -> bool:
        assert worker.alive, f"the worker exited after the cut:\n{worker.log_tail()}"
        now = time.monotonic() - back_at
        if "ready_s" not in figures and readyz(port) == 200:
            figures["ready_s"] = now
        committed = _committed(worker)
        if "commit_s" not in figures and committed > committed_before:
            figures["commit_s"] = now
        return len(figures) == 2

    wait_until(recovered, 30, interval_s=0.1, message=f"no recovery after a {seconds:.0f} s cut")
    return figures


def test_the_worker_rides_out_two_broker_outages_in_process(
    cluster: ProxiedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = worker_config(
        cluster.bootstrap_servers, topic_prefix, transaction_timeout_ms=TXN_TIMEOUT_MS
    )
    ensure_topics(config)
    events = [ChargeEvent.model_validate(e) for e in generate_events(800, seed=13)]
    worker = WorkerProcess(
        config,
        "outage-1",
        tmp_path,
        "--transaction-timeout-ms",
        str(TXN_TIMEOUT_MS),
        "--max-broker-outage",
        "120",
        http_port=free_port(),
    )
    feeder = Feeder(config, events, per_s=25)  # ~90 s of events: before, during and after
    worker.start()
    committed = Committed(config)
    try:
        wait_until(lambda: readyz(worker.http_port) == 200, 60, message="worker never ready")
        feeder.start()
        wait_until(lambda: (committed.total() or 0) > 0, 30, message="no first commit")
        figures = [_cut(cluster, worker, seconds) for seconds in CUTS_S]
        for seconds, got in zip(CUTS_S, figures, strict=True):
            print(
                f"{seconds:.0f} s cut: reconnect -> /readyz 200 {got['ready_s']:.1f} s, "
                f"-> first committed transaction {got['commit_s']:.1f} s"
            )
            assert got["ready_s"] <= BACK_WITHIN_S and got["commit_s"] <= BACK_WITHIN_S, got
        feeder.join(timeout=180)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        progress = GroupProgress(cluster.bootstrap_servers, config.group, [config.input_topic])
        try:
            progress.wait_drained(60, worker)
        finally:
            progress.close()
        assert worker.incarnation == 1 and worker.alive  # the same process, never restarted
        started = time.monotonic()
        assert worker.stop(timeout_s=15) == 0, worker.log_tail()
        stop_s = time.monotonic() - started
    finally:
        feeder.halt.set()
        committed.close()
        worker.stop()
    repeats = check_outputs(config, events)
    messages = [entry["msg"] for entry in worker.log_entries()]
    assert messages.count("broker unreachable; waiting for it") == len(CUTS_S)
    assert messages.count("broker reachable again") == len(CUTS_S)
    print(f"{len(events)} events decided once each ({repeats} exact repeats); stop {stop_s:.1f} s")
    assert stop_s < 5  # SIGTERM is honoured promptly (bench/rejoin.py measures it closely)


class _GatedPacks(PackSet):
    """The real packs; deciding an event of `day` waits until `release` is set, once: holds the
    worker inside a batch (its transaction open, outputs sent) while the test cuts the broker."""

    def __init__(self, day: dt.date) -> None:
        super().__init__(load_packs().packs)
        self.day = day
        self.reached = threading.Event()
        self.release = threading.Event()

    def for_date(self, date_of_service: dt.date) -> RulePack:
        if date_of_service == self.day and not self.release.is_set():
            self.reached.set()
            self.release.wait(60)
        return super().for_date(date_of_service)


def test_a_cut_mid_transaction_replaces_the_producer_and_loses_nothing(
    cluster: ProxiedBroker, topic_prefix: str
) -> None:
    config = worker_config(cluster.bootstrap_servers, topic_prefix, transaction_timeout_ms=4000)
    ensure_topics(config)
    events = [ChargeEvent.model_validate(e) for e in generate_events(40, seed=3)]
    day = events[len(events) // 2].date_of_service
    gated = [e.model_copy(update={"date_of_service": day}) for e in events[:1]]
    gate = _GatedPacks(day)
    stream = [*events, *gated]
    with running_worker(config, packs=gate) as worker:
        produce_events(config, stream)
        assert gate.reached.wait(60), "the worker never reached the gated event"
        cluster.proxy.cut()
        gate.release.set()  # the batch finishes and tries to commit into the cut
        # Past the transaction timeout: the coordinator has aborted it; the producer must go.
        wait_until(
            lambda: worker.restarts >= 1 and worker.transactor.producer is None,
            30,
            message="the producer was not abandoned during the cut",
        )
        cluster.proxy.restore()
        wait_until(lambda: worker.caught_up(), 60, message="not caught up after the cut")
        assert worker.transactor.producer is not None
        restarts = {
            s.labels["reason"]: s.value
            for family in worker.metrics.registry.collect()
            for s in family.samples
            if s.name == "charge_capture_instance_restarts_total"
        }
    assert restarts["call_deadline"] == 1 and sum(restarts.values()) == 1, restarts
    check_outputs(config, stream)


def test_an_outage_longer_than_the_limit_exits_69_with_one_line(
    cluster: ProxiedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = worker_config(cluster.bootstrap_servers, topic_prefix)
    ensure_topics(config)
    worker = WorkerProcess(
        config, "outage-2", tmp_path, "--max-broker-outage", "6", http_port=free_port()
    )
    worker.start()
    try:
        wait_until(lambda: readyz(worker.http_port) == 200, 60, message="worker never ready")
        cluster.proxy.cut()
        cut_at = time.monotonic()
        assert worker.proc is not None
        code = worker.proc.wait(timeout=30)
        waited = time.monotonic() - cut_at
    finally:
        worker.stop()
    assert code == 69, worker.log_tail()
    assert 6 <= waited < 20, waited
    (last,) = [e for e in worker.log_entries() if e["level"] == "CRITICAL"]
    assert last["msg"] == "broker unreachable for too long; exiting" and last["exit_code"] == 69
    assert "no broker answered for" in last["error"] and "--max-broker-outage 6 s" in last["error"]


def test_a_worker_started_against_no_broker_names_it_then_gives_up(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "run.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [charge_capture_bin(), "run", "--bootstrap-servers", address, "--http-port", "0",
             "--max-broker-outage", "8"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    started = time.monotonic()

    def named() -> bool:
        return address in out.read_text() and "broker unreachable" in out.read_text()

    try:
        wait_until(named, 10, message="the unreachable bootstrap address was not named")
        named_s = time.monotonic() - started
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    print(f"unreachable bootstrap server named after {named_s:.1f} s")
    assert named_s < 5, named_s
    assert code == 69, text
    assert all(line.startswith("{") for line in text.splitlines() if line.strip()), text
