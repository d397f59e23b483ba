"""`charge-capture run` and `demo`: the stream worker, on a cluster or the embedded broker."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from rules.model import ChargeEvent
from worker.cli.cluster import produce_events
from worker.cli.options import add_arguments, from_args
from worker.config import WorkerConfig
from worker.errors import FatalError
from worker.kafka.admin import ensure_topics
from worker.kafka.embedded import EmbeddedBroker
from worker.kafka.reading import read_to_end
from worker.observability import logs
from worker.observability.health import Health
from worker.observability.http import start_http_server
from worker.observability.metrics import Metrics
from worker.processing.table import latest_decisions
from worker.runtime.worker import Worker

log = logging.getLogger("charge_capture")


def add_stream_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="the stream worker")
    add_arguments(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="embedded broker + a generated day decided end to end")
    add_arguments(demo)
    demo.add_argument("--visits", type=int, default=1000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="keep serving /metrics after the summary (default: until Enter on a terminal, "
        "0 otherwise)",
    )
    demo.set_defaults(func=cmd_demo)


@contextlib.contextmanager
def broker_for(config: WorkerConfig) -> Iterator[WorkerConfig]:
    """The configured cluster, or the embedded broker when none is configured."""
    if config.bootstrap_servers:
        yield config
        return
    with EmbeddedBroker() as broker:
        config.bootstrap_servers = broker.bootstrap_servers
        log.info(
            "no bootstrap servers configured: started the embedded Tansu broker",
            extra=logs.fields(bootstrap_servers=broker.bootstrap_servers),
        )
        created = ensure_topics(config)
        log.info("topics created", extra=logs.fields(topics=created))
        yield config


def _stop_on_signals(stop: threading.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def cmd_run(args: argparse.Namespace) -> int:
    config = from_args(args)
    logs.configure(config.log_level, config.kafka_log_level)
    stop = threading.Event()
    _stop_on_signals(stop)
    metrics, health = Metrics(), Health()
    metrics.bind_health(health)
    with broker_for(config) as config:
        server = start_http_server(config.http_port, metrics, health) if config.http_port else None
        try:
            Worker(config, metrics=metrics, health=health).run(stop)
        except FatalError as fatal:
            # No restart can fix it (a hung transactional call leaves a client in an unknown
            # state, a bad layout or corrupt state stays so): exit with its code.
            log.critical(
                fatal.summary, extra=logs.fields(error=str(fatal), exit_code=fatal.exit_code)
            )
            return fatal.exit_code
        finally:
            if server is not None:
                server.close()
    log.info("worker stopped")
    return 0


# -- demo ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.offline.sample import generate_events

    config = from_args(args)
    config.log_level = "WARNING" if args.log_level is None else config.log_level
    logs.configure(config.log_level, config.kafka_log_level)
    config.session_timeout_ms = min(config.session_timeout_ms, 6000)
    config.heartbeat_interval_ms = min(config.heartbeat_interval_ms, 1000)
    metrics, health = Metrics(), Health()
    metrics.bind_health(health)
    stop = threading.Event()
    _stop_on_signals(stop)
    with broker_for(config) as config:
        assert config.bootstrap_servers
        ensure_topics(config)  # a configured cluster too: the demo owns its topics
        print(f"broker: {config.bootstrap_servers}", flush=True)
        events = [ChargeEvent.model_validate(e) for e in generate_events(args.visits, args.seed)]
        started = time.monotonic()
        produce_events(config, events)
        server = start_http_server(config.http_port, metrics, health) if config.http_port else None
        worker = Worker(config, metrics=metrics, health=health)
        thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
        thread.start()
        try:
            _wait_until(lambda: worker.caught_up() or not thread.is_alive(), timeout_s=600)
            seconds = time.monotonic() - started
            print(format_demo_summary(config, len(events), seconds), flush=True)
            if server is not None:
                print(f"metrics: http://localhost:{server.port}/metrics", flush=True)
                _serve(args.serve_seconds, stop)
        finally:
            stop.set()
            thread.join(timeout=30)
            if server is not None:
                server.close()
    return 0


def _wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not catch up in time")
        time.sleep(0.1)


def _serve(seconds: float | None, stop: threading.Event) -> None:
    if seconds is None:
        if not sys.stdin.isatty():
            return
        print("serving metrics; press Enter to stop", flush=True)
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input()
        return
    stop.wait(seconds)


def format_demo_summary(config: WorkerConfig, events: int, seconds: float) -> str:
    latest, published = latest_decisions(config, [config.corrected_topic, config.held_topic])
    dlq = sum(1 for _ in read_to_end(config, [config.dlq_topic]))
    final = Counter(d.status.value for d in latest.values())
    holds: Counter[str] = Counter()
    fixes: Counter[str] = Counter()
    for decision in latest.values():
        holds.update(h.rule_id for h in decision.holds)
        fixes.update(c.rule_id for c in decision.corrections)
    rows = [
        f"{events} events decided in {seconds:.1f} s; dead-lettered {dlq}",
        "",
        f"{'status':<34}{'charges (final)':>16}{'records published':>19}",
    ]
    for status in ("ACCEPTED", "CORRECTED", "HELD", "VOIDED", "RETRACTED"):
        rows.append(f"{status:<34}{final.get(status, 0):>16}{published.get(status, 0):>19}")
    rows += ["", f"{'rule_id (final decisions)':<34}{'holds':>8}{'corrections':>13}"]
    for rule in sorted(set(holds) | set(fixes)):
        rows.append(f"{rule:<34}{holds.get(rule, 0):>8}{fixes.get(rule, 0):>13}")
    rows += [
        "",
        "records published = charge_capture_decisions_total{status} on /metrics",
    ]
    return "\n".join(rows)
