"""Worker pieces that need no broker: transactional waits, the outage clock, gauges."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from pathlib import Path

import kafka.errors as kafka_errors
import pytest

from rules.charge import Decision, DecisionSource
from rules.model import ErrorKind
from rules.pack import load_packs
from tests.factories import charge, other_line
from worker.config import WorkerConfig
from worker.errors import BrokerUnavailable, CallDeadlineExceeded, OutputsFailed, Stopping
from worker.kafka.transactions import Waits
from worker.observability.health import Health
from worker.observability.metrics import Metrics
from worker.runtime.checkpoint import raise_refusals
from worker.runtime.gauges import oldest_held_age
from worker.runtime.outage import GRACE_S, Outage
from worker.state.store import PartitionState


class _Result:
    """Stands in for kafka-python's TransactionalRequestResult: done when `latch` is set."""

    def __init__(self, error: Exception | None = None) -> None:
        self.latch = threading.Event()
        self.error = error

    def wait(self, timeout_ms: float) -> bool:
        done = self.latch.wait(timeout_ms / 1000)
        if done and self.error is not None:
            raise self.error
        return done


def _waits(deadline_s: float, **overrides: object) -> tuple[Waits, list[float]]:
    ticks: list[float] = []
    waits = Waits(deadline_s, lambda: ticks.append(time.monotonic()), threading.Event())
    for name, value in overrides.items():
        setattr(waits, name, value)
    return waits, ticks


def test_a_wait_returns_when_the_result_is_done_and_raises_its_error() -> None:
    waits, _ = _waits(5.0)
    done = _Result()
    done.latch.set()
    waits.wait(done, "commit_transaction")
    failed = _Result(ZeroDivisionError("x"))
    failed.latch.set()
    with pytest.raises(ZeroDivisionError):
        waits.wait(failed, "commit_transaction")


def test_a_call_that_never_returns_fails_at_its_deadline_ticking_meanwhile() -> None:
    waits, ticks = _waits(0.5)
    started = time.monotonic()
    with pytest.raises(CallDeadlineExceeded, match="commit_transaction did not return"):
        waits.wait(_Result(), "commit_transaction")
    assert 0.5 <= time.monotonic() - started < 2
    assert len(ticks) >= 3  # liveness and the outage clock kept running while it waited


def test_a_transaction_older_than_its_timeout_is_given_up_before_the_deadline() -> None:
    waits, _ = _waits(30.0, transaction_timeout_s=1.0, transaction_began=time.monotonic() - 0.8)
    started = time.monotonic()
    with pytest.raises(CallDeadlineExceeded, match=r"older than transaction\.timeout\.ms"):
        waits.wait(_Result(), "send_offsets_to_transaction")
    assert time.monotonic() - started < 1.5


def test_a_stop_request_abandons_a_waiting_call_within_a_second() -> None:
    waits, _ = _waits(30.0)
    waits.stop.set()
    started = time.monotonic()
    with pytest.raises(Stopping):
        waits.wait(_Result(), "init_transactions")
    assert time.monotonic() - started < 2


def test_a_tick_that_raises_ends_the_wait() -> None:
    def give_up() -> None:
        raise BrokerUnavailable("gone")

    waits = Waits(30.0, give_up, threading.Event())
    with pytest.raises(BrokerUnavailable):
        waits.wait(_Result(), "commit_transaction")


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_outage_readiness_logs_and_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="charge_capture")
    clock, health, metrics = _Clock(), Health(), Metrics()
    health.set_ready(True, "consuming 6 partition(s)")
    outage = Outage(
        WorkerConfig(bootstrap_servers="b:9092", max_broker_outage_s=60), health, metrics, clock
    )
    outage.observe(False)
    clock.t += GRACE_S / 2
    outage.observe(False)  # a reconnect, not an outage yet
    assert health.readiness() == (True, "consuming 6 partition(s)") and not outage.ongoing
    clock.t += GRACE_S
    for _ in range(5):
        outage.observe(False, ["b:9092"])
        clock.t += 1
    assert health.readiness()[0] is False
    assert health.readiness()[1].startswith("broker unreachable for ")
    warned = [r for r in caplog.records if r.getMessage().startswith("broker unreachable")]
    assert len(warned) == 1 and warned[0].fields["not_answering"] == ["b:9092"]  # type: ignore[attr-defined]
    outage.observe(True)
    assert health.readiness() == (True, "consuming 6 partition(s)")
    back = [r for r in caplog.records if r.getMessage() == "broker reachable again"]
    assert len(back) == 1 and back[0].fields["unreachable_s"] > GRACE_S  # type: ignore[attr-defined]
    outage.observe(False)
    clock.t += 61
    with pytest.raises(BrokerUnavailable, match="no broker answered for 61 s"):
        outage.observe(False)


def test_oldest_held_age_is_event_time_since_the_held_line() -> None:
    state = PartitionState(0, dt.timedelta(days=30))
    packs = load_packs()
    held = charge(event_id="E1", charge_id="H1", units=0, occurred_at="2026-03-02T10:00:00Z")
    later = charge(
        event_id="E2", charge_id="A1", patient_id="P2", occurred_at="2026-03-02T12:30:00Z"
    )
    for offset, event in enumerate([held, later]):
        source = DecisionSource(topic="t", partition=0, offset=offset, event_id=event.event_id)
        state.decide(event, source, packs)
    assert oldest_held_age({0: state}) == pytest.approx(2.5 * 3600)
    assert oldest_held_age({}) == 0.0


def test_refused_outputs_name_their_input_record_and_kind() -> None:
    big, bad = ("in", 0, 7), ("in", 1, 3)
    with pytest.raises(OutputsFailed) as failed:
        raise_refusals(
            [
                (big, False, kafka_errors.MessageSizeTooLargeError("2 MB")),
                (big, False, kafka_errors.MessageSizeTooLargeError("2 MB again")),
                (bad, True, kafka_errors.InvalidTimestampError("too old")),
            ]
        )
    found = {f.where: (f.kind, f.bare) for f in failed.value.failures}
    assert found == {big: (ErrorKind.TOO_LARGE, False), bad: (ErrorKind.UNPRODUCIBLE, True)}
    # Not the record's fault: the error itself, so the batch is handled as a broker failure.
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        raise_refusals([(big, False, kafka_errors.KafkaTimeoutError("delivery timeout"))])
    raise_refusals([])


def test_a_blocker_keeps_readiness_false_whatever_a_rebalance_callback_says() -> None:
    """Closing the consumer runs the revocation callback, which reports "consuming 0
    partition(s)"; while the instance stops, /readyz must stay false."""
    health = Health()
    health.set_ready(True, "consuming 6 partition(s)")
    health.block("lifecycle", "stopping")
    health.set_ready(True, "consuming 0 partition(s)")  # the callback, mid-close
    assert health.readiness() == (False, "stopping")
    health.block("broker", "broker unreachable for 3 s")
    health.block("lifecycle", None)
    assert health.readiness() == (False, "broker unreachable for 3 s")
    health.block("broker", None)
    assert health.readiness() == (True, "consuming 0 partition(s)")


@dataclasses.dataclass
class _Consumed:
    """A consumed Kafka record, as the processing path reads one."""

    value: bytes | None
    key: bytes | None = b"P00000001"
    topic: str = "charges.captured"
    partition: int = 0
    offset: int = 0
    timestamp: int = 1772463600000  # 2026-03-02T15:00:00Z
    headers: list[tuple[str, bytes]] | None = None


class _Counting:
    def __init__(self) -> None:
        self.dead: list[tuple[ErrorKind, str]] = []
        self.decisions = 0

    def consumed(self, topic: str, records: int) -> None:
        return None

    def decided(self, decision: object, occurred_at: dt.datetime) -> None:
        self.decisions += 1

    def emitted(self) -> None:
        return None

    def dead_lettered(self, record: object, kind: ErrorKind, message: str) -> None:
        self.dead.append((kind, message))


def test_replay_dead_letters_an_oversized_input_as_the_live_worker_does(tmp_path: Path) -> None:
    """The input cap is in the one processing path, so replay (here: to a file, where no size
    limit would ever bite) dead-letters what the live worker dead-letters."""
    from worker.processing.batch import Batch
    from worker.processing.outputs import FileOutputs
    from worker.processing.pipeline import MAX_INPUT_BYTES, Processor
    from worker.serde.codec import Codec

    codec, sensor = Codec(), _Counting()
    states = {n: PartitionState(n, dt.timedelta(days=30)) for n in range(6)}
    processor = Processor(
        load_packs(), codec, states, partitioner="murmur2", repartition_topic=None,
        rekey_in_process=True, sensor=sensor,
    )  # fmt: skip
    outputs = FileOutputs(tmp_path / "decisions.jsonl")
    big = codec.encode_event(charge(event_id="X", charge_id="X", modifiers=["GP"] * 100_000))
    assert len(big) > MAX_INPUT_BYTES
    batch = Batch()
    processor.process(_Consumed(big), 6, batch)
    processor.process(_Consumed(codec.encode_event(charge()), offset=1), 6, batch)
    processor.emit(batch, outputs)
    outputs.close()
    assert sensor.dead == [
        (ErrorKind.TOO_LARGE, f"value of {len(big)} bytes is over the 262144-byte input limit")
    ]
    assert sensor.decisions == 1 and (tmp_path / "decisions.jsonl").read_text().count("\n") == 1


class _Origins:
    """Outputs that note which input record each decision answers for."""

    def __init__(self) -> None:
        self.origin: tuple[str, int, int] | None = None
        self.decided: list[tuple[str, int, tuple[str, int, int] | None]] = []

    def decision(self, ledger: object, decision: Decision, charge_body: bytes | None) -> None:
        self.decided.append((decision.charge_id, decision.source.offset, self.origin))

    def dead_letter(
        self, record: object, kind: ErrorKind, message: str, *, bare: bool = False
    ) -> None:
        raise AssertionError("nothing here is dead-lettered")

    def rekey(self, record: object, patient: bytes, home: int) -> None:
        raise AssertionError("nothing here is re-keyed")


def test_a_refused_decision_is_laid_at_its_own_line_not_at_the_line_that_changed_it() -> None:
    """A 97140 line of the visit (no distinct modifier) changes the 97012's decision in the
    same batch: that decision is sourced at the second record, but what it carries is the
    first line, so a refusal of it (too large, say) must dead-letter the first record."""
    from worker.processing.batch import Batch
    from worker.processing.pipeline import Processor
    from worker.serde.codec import Codec

    codec = Codec()
    states = {n: PartitionState(n, dt.timedelta(days=30)) for n in range(6)}
    processor = Processor(
        load_packs(), codec, states, partitioner="murmur2", repartition_topic=None,
        rekey_in_process=True,
    )  # fmt: skip
    batch, outputs = Batch(), _Origins()
    first = charge(event_id="E1", charge_id="C1")
    second = other_line("97140", "C2", event_id="E2")
    processor.process(_Consumed(codec.encode_event(first), offset=0), 6, batch)
    processor.process(_Consumed(codec.encode_event(second), offset=1), 6, batch)
    processor.emit(batch, outputs)
    origins = {charge_id: (source, origin) for charge_id, source, origin in outputs.decided}
    topic = _Consumed.topic
    assert origins["C1"] == (1, (topic, 0, 0))  # changed by offset 1, carries offset 0's line
    assert origins["C2"] == (1, (topic, 0, 1))
