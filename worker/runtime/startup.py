"""What a session waits for before it opens its clients: a broker that answers, and its topics.

Both waits are in-process and bounded only by what they wait for: an unreachable cluster by
`--max-broker-outage` (the outage clock, worker.runtime.outage), missing topics by nobody (the
worker is not ready meanwhile and says why). Neither ever creates a topic: `charge-capture
topics` creates them with their partition counts and settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kafka.errors import KafkaError

from worker.config import WorkerConfig
from worker.errors import TopicLayoutError
from worker.kafka import reach
from worker.kafka.admin import partition_counts
from worker.observability.health import Health
from worker.observability.logs import fields
from worker.runtime.outage import Outage

log = logging.getLogger("charge_capture.worker")

Wait = Callable[[float], None]  # sleeps, beating liveness; raises Stopping on a stop request


def await_brokers(config: WorkerConfig, outage: Outage, wait: Wait) -> None:
    """Until a bootstrap server accepts connections; the ones that do not are named early
    (within the outage grace period when none answers)."""
    servers = config.bootstrap_servers or ""
    while reach.addresses(servers):
        silent = reach.silent(servers, timeout_s=1.0)
        if len(silent) < len(reach.addresses(servers)):
            if silent:
                log.warning("bootstrap servers not answering", extra=fields(servers=silent))
            return
        outage.observe(False, silent)
        wait(1.0)


def await_topics(
    config: WorkerConfig, topics: list[str], health: Health, outage: Outage, wait: Wait
) -> int:
    """The partition count of the co-partitioned topics, once every one of `topics` exists.

    Input, repartition and changelog topics with different counts are a TopicLayoutError (no
    wait fixes them)."""
    copartitioned = (config.input_topic, config.repartition_topic, config.changelog_topic)
    announced = False
    while True:
        try:
            counts = partition_counts(config, topics, timeout_s=5.0)
        except KafkaError:
            outage.observe(False)
            wait(1.0)
            continue
        present = {name: counts[name] for name in copartitioned if name in counts}
        missing = [name for name in topics if name not in counts]
        if len(set(present.values())) > 1 or (not missing and 0 in present.values()):
            raise TopicLayoutError(
                "topics must exist with one partition count (run `charge-capture topics`): "
                + ", ".join(f"{name}={counts.get(name, 0)}" for name in copartitioned)
            )
        if not missing:
            return present[config.input_topic]
        health.set_ready(False, f"waiting for topics {', '.join(missing)}")
        if not announced:
            announced = True
            log.warning(
                "topics missing; waiting for them (run `charge-capture topics`)",
                extra=fields(missing=missing),
            )
        wait(2.0)
