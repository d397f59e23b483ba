"""Log plumbing: third-party lines rate-limited per message kind, at their own level, as JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker.observability import logs
from worker.observability.logs import RateLimit


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_one_line_per_kind_per_window_then_the_count_of_the_suppressed() -> None:
    clock = _Clock()
    limit = RateLimit(window_s=60, clock=clock)
    refused = "Connection failed: KafkaConnectionError: %s ECONNREFUSED"
    passed = []
    for second in range(150):
        clock.t = float(second)
        for node in ("111", "coordinator-111"):  # same kind: the numbers are blanked
            record = _record("kafka.net.manager", refused, node)
            if limit.filter(record):
                passed.append((second, getattr(record, "fields", {})))
    assert [second for second, _ in passed] == [0, 60, 120]
    assert passed[0][1] == {}
    assert passed[1][1] == {"suppressed": 119, "suppressed_window_s": 60}
    # Another kind, or another level, has its own window; the worker's own lines are never cut.
    assert limit.filter(_record("kafka.cluster", "No node available for metadata refresh"))
    assert limit.filter(_record("kafka.net.manager", refused, "7", level=logging.WARNING))
    for _ in range(5):
        assert limit.filter(_record("charge_capture.worker", "broker unreachable"))


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    saved = root.handlers[:], root.level, kafka.level
    stream = io.StringIO()
    logs.configure("INFO", kafka_level="ERROR")
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        kafka.setLevel(saved[2])


def test_kafka_lines_have_their_own_level_and_go_out_as_json(configured: io.StringIO) -> None:
    kafka = logging.getLogger("kafka.net.connection")
    kafka.warning("Task %r ran for %.3fs (>%.3fs threshold)", "t", 1.9, 0.1)  # below ERROR
    for _ in range(3):
        kafka.error("Connection lost: %s", "socket disconnected")
    logging.getLogger("charge_capture.worker").info("worker started")
    entries = [json.loads(line) for line in configured.getvalue().splitlines()]
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("kafka.net.connection", "ERROR"),
        ("charge_capture.worker", "INFO"),
    ]
    assert entries[0]["msg"] == "Connection lost: socket disconnected"


@pytest.mark.parametrize("closing", [True, False], ids=["closing", "open"])
def test_a_read_failing_on_a_transport_being_closed_is_no_error(
    configured: io.StringIO, closing: bool
) -> None:
    """kafka-python's own read of a transport whose socket its close just dropped (the race
    a client's close runs with its I/O thread) logs its traceback at DEBUG only; the same
    failure on an open transport stays an ERROR."""
    from kafka.net.transport import KafkaTCPTransport

    transport = KafkaTCPTransport(None, None)  # no socket: recv fails as after the close
    transport._closed = closing
    transport._sock_recv()
    entries = [json.loads(line) for line in configured.getvalue().splitlines()]
    errors = [e for e in entries if e["level"] == "ERROR"]
    assert len(errors) == (0 if closing else 1)
    if not closing:
        assert "Error receiving network data" in errors[0]["msg"]
