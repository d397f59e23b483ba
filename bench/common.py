"""What the benchmarks share: the broker they measure against."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from worker.kafka.embedded import EmbeddedBroker

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


@contextlib.contextmanager
def bench_broker() -> Iterator[tuple[str, str]]:
    """(bootstrap servers, description): KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external, f"external broker at {external}"
        return
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        yield servers, f"embedded Tansu at {servers} (up in {broker.startup_s:.2f} s)"
