"""Two workers started with one --instance-id share a transactional.id: each new producer fences
the other's. The fenced one says so in one clear line and restarts (reason "fenced")."""

from __future__ import annotations

import logging

import pytest

from rules.model import ChargeEvent
from tests.brokers import BrokerInfo
from tests.helpers import metric_total, wait_until
from tests.outage_harness import Feeder
from tests.worker_harness import running_worker, worker_config
from worker.offline.sample import generate_events
from worker.runtime.worker import Worker

pytestmark = pytest.mark.broker


def _restarts(worker: Worker, reason: str) -> float:
    return metric_total(
        worker.metrics.registry, "charge_capture_instance_restarts_total", reason=reason
    )


def test_a_shared_instance_id_is_named_when_fenced(
    broker: BrokerInfo, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="charge_capture")
    config = worker_config(broker, topic_prefix)
    events = [ChargeEvent.model_validate(e) for e in generate_events(400, seed=5)]
    feeder = Feeder(config, events, per_s=40)  # transactions open all the time
    with running_worker(config) as first:
        wait_until(lambda: first.health.readiness()[0], 60, message="first worker not ready")
        feeder.start()
        try:
            with running_worker(config) as second:  # same instance id, same transactional.id
                wait_until(
                    lambda: _restarts(first, "fenced") + _restarts(second, "fenced") >= 1,
                    60,
                    message="neither worker noticed it was fenced",
                )
        finally:
            feeder.halt.set()
            feeder.join(timeout=30)
    lines = [r for r in caplog.records if r.getMessage().startswith("producer fenced")]
    assert lines, "no line says the producer was fenced"
    line = lines[0]
    assert line.getMessage() == "producer fenced: another instance uses the same --instance-id"
    assert line.fields["transactional_id"] == config.transactional_id  # type: ignore[attr-defined]
    assert line.levelno == logging.ERROR
