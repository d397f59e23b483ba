"""Prometheus metrics, health state and the worker's one HTTP port.

Naming follows Prometheus practice: one prefix (``charge_capture_``), base units (seconds,
records), ``_total`` on counters. Labels are only ever bounded, non-PHI values (topic, partition,
decision status, rule id, error kind, ...): never a patient, charge, encounter or diagnosis value,
which would be both PHI and unbounded cardinality.

Every ``Metrics`` instance owns a private ``CollectorRegistry`` so tests and several workers in
one process never collide on the global default registry.

HTTP (``start_http_server``) serves on one port:

* ``/metrics``  Prometheus text (or OpenMetrics when the scraper asks for it);
* ``/healthz``  200 while the poll loop has called ``Health.mark_loop_alive`` within the deadline,
  else 503 — a stuck loop (e.g. a transactional call hanging) gets the pod restarted;
* ``/readyz``   200/503 following ``Health.set_ready`` (assigned partitions restored, consuming).

Port 0 is "HTTP off" in the CLI, so ``start_http_server(0, ...)`` raises unless the caller also
passes ``ephemeral=True`` (tests), which binds a free port reported by ``HttpServer.port``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder

PREFIX = "charge_capture"

# Bounded label values, pre-created at 0 so rate()/increase() see a series from the first scrape
# (a counter that first appears at 1 looks like "no increase" to PromQL).
DECISION_STATUSES = ("ACCEPTED", "CORRECTED", "HELD", "RETRACTED", "VOIDED")
DLQ_ERROR_KINDS = ("DECODE", "SCHEMA", "VALIDATION", "REPARTITION")
TRANSACTION_OUTCOMES = ("committed", "aborted")
REBALANCE_KINDS = ("assigned", "revoked", "lost")

# Per-batch wall time: a healthy batch takes milliseconds, a slow broker or a big restore seconds.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event time -> decision: sub-second when live, but late events and replays legitimately reach
# hours or a day, and those must land in a bucket rather than all in +Inf.
EVENT_TO_DECISION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    86400.0,
)
# Restoring a partition's visit state from the changelog: sub-second for small partitions, minutes
# for a large or never-compacted changelog.
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _package_version() -> str:
    try:
        return metadata.version("charge-capture")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """All worker metrics, registered on one private registry (``self.registry``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX

        self.events_consumed = Counter(
            f"{p}_events_consumed_total", "Input records consumed.", ["topic"], registry=r
        )
        self.decisions = Counter(
            f"{p}_decisions_total", "Charge decisions emitted, by status.", ["status"], registry=r
        )
        self.holds = Counter(
            f"{p}_holds_total",
            "Holds raised on emitted decisions, by rule.",
            ["rule_id"],
            registry=r,
        )
        self.corrections = Counter(
            f"{p}_corrections_total",
            "Corrections applied on emitted decisions, by rule.",
            ["rule_id"],
            registry=r,
        )
        self.dlq_records = Counter(
            f"{p}_dlq_records_total",
            "Records sent to the dead-letter topic, by error kind.",
            ["error_kind"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_processing_seconds",
            "Wall time to decide one polled batch and commit its transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.event_to_decision_seconds = Histogram(
            f"{p}_event_to_decision_seconds",
            "Event time (occurred_at) to decision emitted.",
            buckets=EVENT_TO_DECISION_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            f"{p}_transactions_total", "Kafka transactions, by outcome.", ["outcome"], registry=r
        )
        self.rebalances = Counter(
            f"{p}_rebalances_total", "Consumer-group rebalance callbacks.", ["kind"], registry=r
        )
        self.partitions_assigned = Gauge(
            f"{p}_partitions_assigned", "Input partitions currently assigned.", registry=r
        )
        self.state_visits = Gauge(
            f"{p}_state_visits", "Visits (patient and date of service) held in state.", registry=r
        )
        self.restore_seconds = Histogram(
            f"{p}_restore_seconds",
            "Time to restore one partition's state from the changelog.",
            buckets=RESTORE_BUCKETS,
            registry=r,
        )
        self.restore_records = Counter(
            f"{p}_restore_records_total", "Changelog records read while restoring.", registry=r
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag_records",
            "Input records not yet committed (highwater minus committed offset).",
            ["topic", "partition"],
            registry=r,
        )
        self.oldest_held_age = Gauge(
            f"{p}_oldest_held_charge_age_seconds",
            "Event-time age of the oldest charge currently HELD.",
            registry=r,
        )
        self.last_progress = Gauge(
            f"{p}_last_progress_timestamp_seconds",
            "Unix time of the last processed batch or idle poll.",
            registry=r,
        )
        self.ready = Gauge(f"{p}_ready", "1 when /readyz answers OK.", registry=r)
        # Info exposes charge_capture_build_info{version="..."} 1.
        self.build_info = Info(f"{p}_build", "Build information.", registry=r)
        self.build_info.info({"version": _package_version()})

        for status in DECISION_STATUSES:
            self.decisions.labels(status=status)
        for kind in DLQ_ERROR_KINDS:
            self.dlq_records.labels(error_kind=kind)
        for outcome in TRANSACTION_OUTCOMES:
            self.transactions.labels(outcome=outcome)
        for rkind in REBALANCE_KINDS:
            self.rebalances.labels(kind=rkind)

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop lag series of revoked/lost partitions.

        Otherwise a partition that moved to another instance would keep reporting its last lag
        here forever, double-counting it and tripping the lag alerts.
        """
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(topic, str(partition))

    def bind_health(self, health: Health) -> None:
        """Make ``charge_capture_ready`` always agree with ``/readyz``."""
        self.ready.set_function(lambda: 1.0 if health.readiness()[0] else 0.0)


class Health:
    """Liveness and readiness state shared by the poll loop and the HTTP threads.

    Times are ``time.monotonic()`` (injectable for tests) so a wall-clock step never flips
    liveness. Before the first ``mark_loop_alive`` the start time counts as the last beat, so a
    worker that hangs during start-up also goes unhealthy after the deadline. Long work inside
    one loop iteration (restoring a partition in the assignment callback) must call
    ``mark_loop_alive`` as it goes, or liveness kills a pod that is merely busy.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._ready = False
        self._reason = "starting"

    def mark_loop_alive(self) -> None:
        t = self._clock()
        with self._lock:
            self._last_beat = t

    def set_ready(self, ready: bool, reason: str) -> None:
        with self._lock:
            self._ready = ready
            self._reason = reason

    def seconds_since_beat(self, now: float | None = None) -> float:
        t = self._clock() if now is None else now
        with self._lock:
            return t - self._last_beat

    def is_alive(self, now: float | None = None, deadline_s: float = 60.0) -> bool:
        return self.seconds_since_beat(now) <= deadline_s

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._reason


class HttpServer:
    """A running metrics/health server; ``close()`` stops it and frees the port."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_handler(
    metrics: Metrics, health: Health, loop_deadline_s: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "charge-capture"
        sys_version = ""

        def do_GET(self) -> None:
            self._dispatch(send_body=True)

        def do_HEAD(self) -> None:
            self._dispatch(send_body=False)

        def _dispatch(self, *, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._reply(200, encoder(metrics.registry), content_type, send_body)
            elif path == "/healthz":
                since = health.seconds_since_beat()
                if since <= loop_deadline_s:
                    self._reply(200, b"ok\n", "text/plain; charset=utf-8", send_body)
                else:
                    msg = f"poll loop stalled: no iteration for {since:.1f}s > {loop_deadline_s}s\n"
                    self._reply(503, msg.encode(), "text/plain; charset=utf-8", send_body)
            elif path == "/readyz":
                ok, reason = health.readiness()
                body = f"{'ok' if ok else 'not ready'}: {reason}\n".encode()
                self._reply(200 if ok else 503, body, "text/plain; charset=utf-8", send_body)
            else:
                self._reply(404, b"not found\n", "text/plain; charset=utf-8", send_body)

        def _reply(self, code: int, body: bytes, content_type: str, send_body: bool) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes hit these endpoints every few seconds; access logs would only be noise.
            return

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scrape must never keep the process from exiting


def start_http_server(
    port: int,
    metrics: Metrics,
    health: Health,
    *,
    host: str = "0.0.0.0",
    loop_deadline_s: float = 60.0,
    ephemeral: bool = False,
) -> HttpServer:
    """Serve /metrics, /healthz and /readyz on ``host:port`` from a daemon thread.

    ``port=0`` means "off" to the CLI, so it is only accepted with ``ephemeral=True`` (bind any
    free port; read it back from ``HttpServer.port``).
    """
    if port == 0 and not ephemeral:
        raise ValueError("port 0 means HTTP is off; pass ephemeral=True to bind a free port")
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid HTTP port {port}")
    metrics.bind_health(health)
    server = _Server((host, port), _make_handler(metrics, health, loop_deadline_s))
    thread = threading.Thread(target=server.serve_forever, name="charge-capture-http", daemon=True)
    thread.start()
    return HttpServer(server, thread)
