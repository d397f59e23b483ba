"""Broker outages as the worker lives through them: when the brokers stopped answering, what
readiness and the log say meanwhile, and when waiting is over.

The poll loop, every transactional wait and every restore tick report whether a broker answers
(`observe`). A gap shorter than `GRACE_S` is a reconnect, not an outage. Past it /readyz turns
false ("broker unreachable for N s"), one WARNING line says so, and one INFO line says when a
broker answers again and how long it was gone. Past `--max-broker-outage` the worker stops
with BrokerUnavailable (exit 69): the outage clock runs across restarts and producer rebuilds,
so a worker that keeps trying cannot hide an outage from its supervisor forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker.config import WorkerConfig
from worker.errors import BrokerUnavailable
from worker.observability.health import Health
from worker.observability.logs import fields
from worker.observability.metrics import Metrics

log = logging.getLogger("charge_capture.worker")

GRACE_S = 2.0
BLOCKER = "broker"


class Outage:
    def __init__(
        self,
        config: WorkerConfig,
        health: Health,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = config.max_broker_outage_s
        self.servers = config.bootstrap_servers
        self.health, self.metrics, self.clock = health, metrics, clock
        self.since: float | None = None  # when the brokers stopped answering
        self.announced = False

    @property
    def ongoing(self) -> bool:
        """Past the grace period: readiness says so and a line was logged."""
        return self.announced

    def seconds(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since

    def observe(self, reachable: bool, silent: list[str] | None = None) -> None:
        """Record whether a broker answers now; raise BrokerUnavailable past the limit.

        `silent`, when known, lists the bootstrap addresses that did not answer."""
        if reachable:
            self._back()
            return
        now = self.clock()
        if self.since is None:
            self.since = now
        down = now - self.since
        self.metrics.broker_unreachable.set(down)
        if down < GRACE_S:
            return
        self.health.block(BLOCKER, f"broker unreachable for {down:.0f} s")
        if not self.announced:
            self.announced = True
            log.warning(
                "broker unreachable; waiting for it",
                extra=fields(
                    bootstrap_servers=self.servers,
                    not_answering=silent,
                    seconds=round(down, 1),
                    max_broker_outage_s=self.limit_s,
                ),
            )
        self.check()

    def check(self) -> None:
        """Raise BrokerUnavailable when the ongoing outage is past the limit."""
        if self.since is None:
            return
        down = self.clock() - self.since
        if down > self.limit_s:
            raise BrokerUnavailable(
                f"no broker answered for {down:.0f} s (--max-broker-outage "
                f"{self.limit_s:.0f} s); bootstrap servers {self.servers}"
            )

    def _back(self) -> None:
        if self.since is None:
            return
        down = self.clock() - self.since
        if self.announced:
            log.info("broker reachable again", extra=fields(unreachable_s=round(down, 1)))
        self.since, self.announced = None, False
        self.health.block(BLOCKER, None)
        self.metrics.broker_unreachable.set(0)
