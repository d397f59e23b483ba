"""The worker's one HTTP port: /metrics, /healthz and /readyz.

* ``/metrics``  Prometheus text (or OpenMetrics when the scraper asks for it);
* ``/healthz``  200 while the poll loop has called ``Health.mark_loop_alive`` within the deadline,
  else 503 — a stuck loop (e.g. a transactional call hanging) gets the pod restarted;
* ``/readyz``   200/503 following ``Health.set_ready`` (assigned partitions restored, consuming).

Port 0 is "HTTP off" in the CLI, so ``start_http_server(0, ...)`` raises unless the caller also
passes ``ephemeral=True`` (tests), which binds a free port reported by ``HttpServer.port``.
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from worker.observability.health import LIVENESS_DEADLINE_S, Health
from worker.observability.logs import describe_error, fields
from worker.observability.metrics import Metrics

log = logging.getLogger("charge_capture.http")


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

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr, outside the JSON log, whenever a scraper
        # hangs up mid-reply (BrokenPipeError, ConnectionResetError): that is the scraper's
        # business, so one JSON line at DEBUG.
        error = sys.exc_info()[1]
        log.debug(
            "HTTP client went away",
            extra=fields(
                client=f"{client_address[0]}:{client_address[1]}",
                error=describe_error(error) if error else None,
            ),
        )


def start_http_server(
    port: int,
    metrics: Metrics,
    health: Health,
    *,
    host: str = "0.0.0.0",
    loop_deadline_s: float = LIVENESS_DEADLINE_S,
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
