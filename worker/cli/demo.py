"""`charge-capture demo`: a generated day of charges decided end to end.

It stops on Enter, Ctrl-C or SIGTERM at any point, and stops the worker's clients before
the embedded broker under them, so nothing logs an error on the way out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import select
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

from rules.model import ChargeEvent
from rules.pack import load_packs
from worker.cli import values
from worker.cli.cluster import RegistryUnreachable, produce_events
from worker.cli.options import add_options
from worker.cli.stream import broker_for, stop_on_signals
from worker.config import WorkerConfig
from worker.errors import SchemaUnavailable
from worker.kafka.admin import ensure_topics
from worker.kafka.probe import probe
from worker.kafka.reading import read_to_end
from worker.observability import logs
from worker.observability.health import Health
from worker.observability.http import start_http_server
from worker.observability.metrics import Metrics
from worker.processing.outputs import OutputTopics
from worker.processing.table import latest_decisions
from worker.runtime.worker import Worker
from worker.serde.codec import Codec
from worker.serde.framing import EVENT
from worker.serde.registry_source import codec_for

DEMO_EPILOG = """\
Starts an embedded broker (or uses --bootstrap-servers), produces --visits generated visits
dated today with occurred_at just before now (so the event-to-decision latency metric shows
the pipeline's own latency), runs the worker until it has caught up and prints a summary. On
a terminal it then serves /metrics until Enter, Ctrl-C or SIGTERM; otherwise for
--serve-seconds (default 0). Exit codes: 0 done or stopped; 2 usage; 69 no broker answers or
the embedded one did not start; 78 a broken rule pack.
"""


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="embedded broker + a generated day decided end to end",
        description="A generated day of charges decided end to end by the worker.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    own = demo.add_argument_group("demo")
    own.add_argument(
        "--visits", type=values.integer(1), default=1000, help="visits (default: 1000)"
    )
    own.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    own.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="keep serving /metrics after the summary (default: until Enter, Ctrl-C or "
        "SIGTERM on a terminal, 0 otherwise)",
    )
    add_options(demo, "demo")
    demo.set_defaults(func=cmd_demo)


def demo_events(visits: int, seed: int, now: dt.datetime) -> list[ChargeEvent]:
    """The generated day on `now`'s date, occurred_at just before `now` in the day's order."""
    from worker.offline.sample import generate_events, stamp_near

    day = generate_events(visits, seed, day=now.date())
    return [ChargeEvent.model_validate(e) for e in stamp_near(day, now)]


def cmd_demo(args: argparse.Namespace) -> int:
    config: WorkerConfig = args.config
    config.log_level = "WARNING" if args.log_level is None else config.log_level
    logs.configure(config.log_level, kafka_level=config.kafka_log_level)
    packs = load_packs(config.rules_dir)
    config.session_timeout_ms = min(config.session_timeout_ms, 6000)
    config.heartbeat_interval_ms = min(config.heartbeat_interval_ms, 1000)
    if config.bootstrap_servers:
        probe(config)
    metrics, health = Metrics(), Health()
    metrics.bind_health(health)
    stop = threading.Event()
    stop_on_signals(stop)
    with broker_for(config) as config:
        assert config.bootstrap_servers
        ensure_topics(config)  # a configured cluster too: the demo owns its topics
        print(f"broker: {config.bootstrap_servers}", flush=True)
        events = demo_events(args.visits, args.seed, dt.datetime.now(dt.UTC))
        started = time.monotonic()
        # One codec for the events, the worker and the summary (a registry's ids, once).
        writes = {config.input_topic: EVENT, **OutputTopics.live(config).schemas()}
        codec = codec_for(config, writes=writes, checks=[config.input_topic])
        try:
            produce_events(config, events, codec)
        except SchemaUnavailable as silent:  # the demo waits for no registry
            raise RegistryUnreachable(str(silent)) from silent
        server = start_http_server(config.http_port, metrics, health) if config.http_port else None
        worker = Worker(config, metrics=metrics, health=health, packs=packs, codec=codec)
        failed: list[BaseException] = []
        thread = threading.Thread(
            target=_run_worker, args=(worker, stop, failed), name="worker", daemon=True
        )
        thread.start()
        try:
            done = _wait_until(
                lambda: worker.caught_up() or not thread.is_alive(), stop, timeout_s=600
            )
            if done and not failed:
                seconds = time.monotonic() - started
                print(format_demo_summary(config, len(events), seconds, codec), flush=True)
                if server is not None:
                    print(f"metrics: http://localhost:{server.port}/metrics", flush=True)
                    _serve(args.serve_seconds, stop)
            elif not done:
                print("demo stopped before the worker caught up", flush=True)
        finally:
            stop.set()
            thread.join(timeout=30)  # the worker's clients close before the broker stops
            if server is not None:
                server.close()
            codec.close()
    if failed:
        raise failed[0]  # a FatalError: one line and its exit code (worker.cli.main)
    return 0


def _run_worker(worker: Worker, stop: threading.Event, failed: list[BaseException]) -> None:
    """The worker thread: what stops it is handed to the main thread, not printed here."""
    try:
        worker.run(stop)
    except BaseException as error:
        failed.append(error)


def _wait_until(done: Callable[[], bool], stop: threading.Event, timeout_s: float) -> bool:
    """True once `done`; False when stopped first (a signal)."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if done():
            return True
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not catch up in time")
        stop.wait(0.1)
    return False


def _serve(seconds: float | None, stop: threading.Event) -> None:
    """Serve until `seconds` pass, or (on a terminal, by default) until Enter; a signal ends
    either wait. stdin is polled with select, not read in a thread: a thread blocked in a
    read holds stdin's lock and can abort the interpreter's shutdown."""
    if seconds is not None:
        stop.wait(seconds)
        return
    if not sys.stdin.isatty():
        return
    print("serving metrics; press Enter or Ctrl-C to stop", flush=True)
    while not stop.is_set():
        readable, _, _ = select.select([sys.stdin], [], [], 0.2)
        if readable:
            sys.stdin.readline()
            return


def format_demo_summary(
    config: WorkerConfig, events: int, seconds: float, codec: Codec | None = None
) -> str:
    topics = [config.corrected_topic, config.held_topic]
    latest, published = latest_decisions(config, topics, codec)
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
