"""`charge-capture run`: the stream worker, on a cluster or the embedded broker."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from rules.pack import load_packs
from worker.cli import supervisor
from worker.cli.options import add_options
from worker.config import WorkerConfig
from worker.errors import FatalError
from worker.kafka.admin import ensure_topics
from worker.kafka.embedded import EmbeddedBroker
from worker.observability import logs
from worker.observability.health import Health
from worker.observability.http import start_http_server
from worker.observability.metrics import Metrics
from worker.runtime.worker import Worker

log = logging.getLogger("charge_capture")

RUN_EPILOG = """\
With no --bootstrap-servers, run starts an embedded Kafka-protocol broker (Tansu, in memory)
and prints its address on stderr with the command to produce into it.
Exit codes: 0 stopped by SIGTERM or Ctrl-C; 2 usage; 65 a changelog record does not restore;
69 no broker answered for longer than --max-broker-outage, a schema registry for longer than
--schema-registry-outage-s, or the embedded broker did not start; 78 a broken rule pack,
settings or an unusable topic layout (docs/operations.md).
With --processes N, the first member to exit stops the others and the unit exits with its
code (128+S for a member killed by signal S; 0 when stopped).
"""


def add_stream_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="the stream worker",
        description="The stream worker: charge events in, versioned decisions out.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(run, "run")
    run.set_defaults(func=cmd_run)


def embedded_broker_line(config: WorkerConfig) -> str:
    """The one plain line `run` prints on stderr about its embedded broker."""
    bootstrap = config.bootstrap_servers
    default = config.input_topic == WorkerConfig.input_topic
    topic = "" if default else f" --input-topic {config.input_topic}"
    return (
        f"charge-capture: embedded Kafka broker at {bootstrap} (in memory: gone when this "
        f"process stops); produce into it with: charge-capture produce FILE.jsonl "
        f"--bootstrap-servers {bootstrap}{topic}"
    )


@contextlib.contextmanager
def broker_for(config: WorkerConfig, *, announce: bool = False) -> Iterator[WorkerConfig]:
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
        if announce:
            print(embedded_broker_line(config), file=sys.stderr, flush=True)
        yield config


def stop_on_signals(stop: threading.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def cmd_run(args: argparse.Namespace) -> int:
    config: WorkerConfig = args.config
    logs.configure(
        config.log_level,
        kafka_level=config.kafka_log_level,
        static={"instance": config.instance_id},
    )
    packs = load_packs(config.rules_dir)  # a broken pack fails before a broker is started
    if config.processes > 1:
        with broker_for(config, announce=True) as config:
            return supervisor.Unit(supervisor.members(args.argv, config)).run()
    stop = threading.Event()
    stop_on_signals(stop)
    metrics, health = Metrics(), Health()
    metrics.bind_health(health)
    with broker_for(config, announce=True) as config:
        server = start_http_server(config.http_port, metrics, health) if config.http_port else None
        try:
            Worker(config, metrics=metrics, health=health, packs=packs).run(stop)
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
