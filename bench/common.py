"""What the benchmarks share: the broker they measure against."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import rules
from worker.kafka.embedded import EmbeddedBroker

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def rules_core() -> str:
    """Which build of the rules core the figures are of (`make bench-compiled`: compiled)."""
    return "compiled (mypyc)" if rules.compiled() else "python"


@contextlib.contextmanager
def bench_broker() -> Iterator[tuple[str, str]]:
    """(bootstrap servers, description): KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external, f"external broker at {external}; rules core {rules_core()}"
        return
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        started = f"up in {broker.startup_s:.2f} s"
        yield servers, f"embedded Tansu at {servers} ({started}); rules core {rules_core()}"
