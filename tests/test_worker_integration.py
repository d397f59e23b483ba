"""The worker over a real broker: decisions, RETRACTED/VOIDED, DLQ, re-keying."""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
import threading
import time

import pytest
from kafka.structs import TopicPartition
from msgspec.structs import replace

from rules.model import ChargeDecision, ChargeEvent, ErrorKind, EventType
from rules.pack import PackSet, RulePack, load_packs
from tests.brokers import BrokerInfo
from tests.factories import charge, other_line
from tests.helpers import wait_until
from tests.worker_harness import isolated_config, running_worker, send_raw, worker_config
from worker.cli.cluster import produce_events
from worker.config import Guarantee, WorkerConfig
from worker.errors import StateCorrupt, TopicLayoutError
from worker.kafka.admin import TopicSpec, create_topics, ensure_topics
from worker.kafka.partitioner import home_partition
from worker.kafka.reading import read_to_end
from worker.observability.health import Health
from worker.observability.metrics import Metrics
from worker.runtime.worker import Worker
from worker.serde.codec import Codec

pytestmark = pytest.mark.broker
CODEC = Codec()


def decisions(broker: BrokerInfo, topic: str) -> list[ChargeDecision]:
    return [CODEC.decode_decision(r.value) for r in read_to_end(broker.bootstrap_servers, [topic])]


def caught_up_after(worker, produced: int) -> bool:  # type: ignore[no-untyped-def]
    consumed = sum(
        v for (name, _), v in _sample(worker, "charge_capture_events_consumed_total").items()
    )
    return consumed >= produced and worker.caught_up()


def _sample(worker, name):  # type: ignore[no-untyped-def]
    found = {}
    for family in worker.metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_late_cmt_line_holds_traction_and_retracts_it_from_corrected(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix)
    traction = charge(event_id="E1", charge_id="T1", occurred_at="2026-03-02T15:00:00Z")
    cmt = other_line("98941", "M1", event_id="E2", occurred_at="2026-03-02T15:05:00Z")
    void = replace(
        cmt,
        event_id="E3",
        event_type=EventType.VOID,
        occurred_at=cmt.occurred_at.replace(minute=30),
    )
    with running_worker(config) as worker:
        produce_events(config, [traction])
        wait_until(lambda: caught_up_after(worker, 1), 60, message="first event not decided")
        produce_events(config, [cmt])
        wait_until(lambda: caught_up_after(worker, 2), 60, message="CMT line not decided")
        produce_events(config, [void])
        wait_until(lambda: caught_up_after(worker, 3), 60, message="VOID not decided")

    corrected = [
        (d.charge_id, d.status, d.decision_version)
        for d in decisions(broker, config.corrected_topic)
    ]
    held = [
        (d.charge_id, d.status, d.decision_version) for d in decisions(broker, config.held_topic)
    ]
    # The traction line was billable, then the CMT line arrived: HELD, and RETRACTED where it was.
    assert ("T1", "ACCEPTED", 1) in corrected and ("T1", "RETRACTED", 2) in corrected
    assert ("T1", "HELD", 2) in held
    # Voiding the CMT line releases the traction line back to billable, version 3.
    assert ("M1", "VOIDED", 2) in corrected
    assert ("T1", "RETRACTED", 3) in held and ("T1", "ACCEPTED", 3) in corrected
    # No batch aborted here, so even on Tansu every record appears exactly once.
    assert len(set(corrected)) == len(corrected) and len(set(held)) == len(held)
    hold = next(d for d in decisions(broker, config.held_topic) if d.status == "HELD")
    assert hold.holds[0].rule_id == "DISTINCT_MODIFIER_MISSING"
    assert hold.holds[0].related_charge_ids == ("M1",) and hold.source.event_id == "E2"


def test_bad_records_are_dead_lettered_and_good_ones_around_them_decided(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix)
    good_before = charge(event_id="G1", charge_id="G1", units=2)
    good_after = charge(event_id="G2", charge_id="G2", patient_id="P2")
    framed = CODEC.encode_event(good_before)
    unknown_schema = struct.pack(">bI", 0, 999) + framed[5:]
    empty_patient = replace(charge(event_id="V1", charge_id="V1"), patient_id="")
    with running_worker(config) as worker:
        produce_events(config, [good_before])
        send_raw(
            config,
            [
                (b"P00000001", b"\x07not avro at all"),  # DECODE: bad magic byte
                (b"P00000001", framed[:12]),  # DECODE: truncated body
                (b"P00000001", unknown_schema),  # SCHEMA: unknown schema id
                (b"", CODEC.encode_event(empty_patient)),  # VALIDATION: empty patient_id
            ],
        )
        send_raw(config, [(b"someone-else", framed)], topic=config.repartition_topic)
        produce_events(config, [good_after])
        wait_until(lambda: caught_up_after(worker, 6), 60, message="stream not drained")
        wait_until(
            lambda: sum(_sample(worker, "charge_capture_dlq_records_total").values()) >= 5,
            30,
            message="not every bad record was dead-lettered",
        )

    letters = [
        CODEC.decode_dead_letter(r.value)
        for r in read_to_end(broker.bootstrap_servers, [config.dlq_topic])
    ]
    kinds = sorted(letter.error_kind.value for letter in letters)
    assert kinds == ["DECODE", "DECODE", "REPARTITION", "SCHEMA", "VALIDATION"]
    validation = next(x for x in letters if x.error_kind == ErrorKind.VALIDATION)
    assert "patient_id" in validation.error_message
    assert validation.source_topic == config.input_topic and validation.value is not None
    schema = next(x for x in letters if x.error_kind == ErrorKind.SCHEMA)
    assert "999" in schema.error_message
    billable = {d.charge_id: d for d in decisions(broker, config.corrected_topic)}
    assert billable["G1"].status == "CORRECTED" and billable["G1"].charge.units == 1
    assert billable["G2"].status == "ACCEPTED"


@pytest.mark.parametrize("misplaced", ["keyed by another id", "on another partition"])
def test_mis_keyed_event_is_rekeyed_and_decided_with_its_visit(
    broker: BrokerInfo, topic_prefix: str, misplaced: str
) -> None:
    config = worker_config(broker, topic_prefix)
    traction = charge(event_id="E1", charge_id="T1")
    cmt = other_line("98940", "M1", event_id="E2")
    if misplaced == "keyed by another id":
        key, partition = b"encounter-123", None
    else:  # keyed by the patient, placed by another partitioner
        key, partition = (
            b"P00000001",
            (home_partition(b"P00000001", config.partitions) + 1) % config.partitions,
        )
    with running_worker(config) as worker:
        produce_events(config, [traction])
        send_raw(config, [(key, CODEC.encode_event(cmt))], partition=partition)
        # 2 input records + 1 re-keyed copy on the repartition topic
        wait_until(lambda: caught_up_after(worker, 3), 60, message="re-keyed event not decided")
        wait_until(
            lambda: any(d.charge_id == "T1" for d in decisions(broker, config.held_topic)),
            30,
            message="traction line not held after the re-keyed CMT line",
        )
    repartitioned = list(read_to_end(broker.bootstrap_servers, [config.repartition_topic]))
    assert [r.key for r in repartitioned] == [b"P00000001"]
    assert (
        ChargeEvent.model_validate(
            CODEC.decode(repartitioned[0].value, "chargecapture.v1.ChargeEvent")
        ).charge_id
        == "M1"
    )
    held = [d for d in decisions(broker, config.held_topic) if d.charge_id == "T1"]
    assert held[-1].holds[0].related_charge_ids == ("M1",)


def test_a_repartition_topic_with_another_partition_count_stops_the_worker(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = WorkerConfig(
        bootstrap_servers=broker.bootstrap_servers,
        app_id=f"{topic_prefix}-app",
        instance_id="test",
        input_topic=f"{topic_prefix}.charges.captured",
        http_port=0,
    )
    create_topics(
        broker.bootstrap_servers,
        [
            TopicSpec(config.input_topic, 6),
            TopicSpec(config.repartition_topic, 3),
            TopicSpec(config.changelog_topic, 6),
        ],
    )
    worker = Worker(config, metrics=Metrics(), health=Health())
    with pytest.raises(TopicLayoutError, match=r"repartition=3"):
        worker.run(threading.Event())
    assert worker.restarts == 0  # not a restart loop: no restart can fix it


def test_a_changelog_record_that_does_not_restore_stops_the_worker_without_phi(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix)
    corrupt = b'{"charges":[{"patient_id":"P99999999","diagnosis_codes":["M54.16"'  # cut short
    send_raw(config, [(b"P99999999\x1f2026-03-02", corrupt)], config.changelog_topic, partition=0)
    worker = Worker(config, metrics=Metrics(), health=Health())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(threading.Event())
        except BaseException as error:  # the outcome under test
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=90)
    assert not thread.is_alive(), "the worker kept running on state it could not restore"
    assert len(failure) == 1 and isinstance(failure[0], StateCorrupt), failure
    message = str(failure[0])
    assert f"{config.changelog_topic}[0] offset 0" in message
    assert "P99999999" not in message and "M54.16" not in message
    assert worker.health.readiness()[0] is False


class _PacksFailingOn(PackSet):
    """The real packs, except that one date of service makes the lookup raise: stands in for
    a bug or for data no check foresaw."""

    def __init__(self, day: dt.date) -> None:
        super().__init__(load_packs().packs)
        self.day = day

    def for_date(self, date_of_service: dt.date) -> RulePack:
        if date_of_service == self.day:
            raise RuntimeError("unforeseen")
        return super().for_date(date_of_service)


class _SlowPacks(PackSet):
    """The real packs, 2 ms per lookup: deciding a record takes longer than a 1 ms budget."""

    def __init__(self) -> None:
        super().__init__(load_packs().packs)

    def for_date(self, date_of_service: dt.date) -> RulePack:
        busy_until = time.perf_counter() + 0.002  # slow work (CPU), not a wait for an event
        while time.perf_counter() < busy_until:
            pass
        return super().for_date(date_of_service)


def test_a_record_whose_decision_raises_is_dead_lettered_once_redelivered(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    config = worker_config(broker, topic_prefix)
    before = charge(event_id="G1", charge_id="G1")
    poison = charge(event_id="X1", charge_id="X1", date_of_service="2026-03-01")
    after = charge(event_id="G2", charge_id="G2", patient_id="P2")
    with running_worker(config, packs=_PacksFailingOn(dt.date(2026, 3, 1))) as worker:
        produce_events(config, [before, poison, after])
        wait_until(lambda: caught_up_after(worker, 3), 60, message="stream not drained")
        # The batch redone in place (no restart), the record dead-lettered. Deciding writes
        # nothing to Kafka, so no transaction was open to abort.
        assert worker.restarts == 0
        outcomes = _sample(worker, "charge_capture_transactions_total")
        assert outcomes[("charge_capture_transactions_total", (("outcome", "aborted"),))] == 0
        assert outcomes[("charge_capture_transactions_total", (("outcome", "committed"),))] >= 1
    (letter,) = [
        CODEC.decode_dead_letter(r.value)
        for r in read_to_end(broker.bootstrap_servers, [config.dlq_topic])
    ]
    assert letter.error_kind == ErrorKind.VALIDATION
    assert letter.error_message == "deciding it failed: RuntimeError (details at DEBUG)"
    assert CODEC.decode_event(letter.value).charge_id == "X1"
    billable = {d.charge_id for d in decisions(broker, config.corrected_topic)}
    assert billable == {"G1", "G2"}


def test_a_worker_started_without_its_topics_creates_none_and_waits(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    """Its clients never auto-create a topic (which would get the broker's default partition
    count); it waits, not ready, until `charge-capture topics` has created them."""
    config = isolated_config(broker, topic_prefix)
    worker = Worker(config, metrics=Metrics(), health=Health())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: worker.health.readiness()[1].startswith("waiting for topics"),
            30,
            message="the worker did not say it waits for its topics",
        )
        ready, reason = worker.health.readiness()
        assert not ready and config.changelog_topic in reason
        # Well past its first metadata requests: still nothing of its own exists.
        wait_until(lambda: worker.health.seconds_since_beat() < 1, 10)
        assert not set(worker.topics) & set(_topic_names(broker))
        ensure_topics(config)  # the operator runs `charge-capture topics`
        wait_until(lambda: worker.health.readiness()[0], 60, message="never ready after topics")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert worker.restarts == 0


def _topic_names(broker: BrokerInfo) -> list[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        return list(admin.list_topics())
    finally:
        admin.close()


def test_the_workers_clients_never_create_a_topic(broker: BrokerInfo, topic_prefix: str) -> None:
    """Sending to, subscribing to and reading a missing topic leaves it missing (kafka-python
    asks for auto-creation in every metadata request unless told otherwise)."""
    from kafka.errors import KafkaTimeoutError

    from worker.kafka import clients

    config = isolated_config(broker, topic_prefix)
    names = [f"{topic_prefix}.sent", f"{topic_prefix}.subscribed", f"{topic_prefix}.read"]
    idempotent = dataclasses.replace(config, processing_guarantee=Guarantee.AT_LEAST_ONCE)
    producer = clients.worker_producer(idempotent)
    consumer = clients.group_consumer(config)
    reader = clients.reader(config, "reader")
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(names[0], b"x").get(timeout=10)
        consumer.subscribe([names[1]])
        consumer.poll(timeout_ms=1500)
        reader.assign([TopicPartition(names[2], 0)])
        reader.poll(timeout_ms=1500)
    finally:
        producer.close(timeout=1)
        consumer.close(autocommit=False, timeout_ms=500)
        reader.close(autocommit=False, timeout_ms=500)
    assert not set(names) & set(_topic_names(broker))


def test_batches_cut_short_by_their_time_budget_lose_nothing(
    broker: BrokerInfo, topic_prefix: str
) -> None:
    """Each record's pack lookup takes 2 ms, over the 1 ms budget: every poll decides one
    record per partition and seeks the rest back, and with a 1 ms commit interval every poll
    is its own checkpoint. The stream still drains, every charge decided once per change."""
    from worker.offline.sample import generate_events

    config = worker_config(broker, topic_prefix, max_batch_ms=1, commit_interval_ms=1)
    events = [ChargeEvent.model_validate(e) for e in generate_events(40, seed=9)]
    with running_worker(config, packs=_SlowPacks()) as worker:
        produce_events(config, events)
        wait_until(lambda: caught_up_after(worker, len(events)), 120, message="not drained")
        commits = _sample(worker, "charge_capture_transactions_total")
    committed = commits[("charge_capture_transactions_total", (("outcome", "committed"),))]
    assert committed >= len(events) / config.partitions  # polls really were cut short
    latest = {d.charge_id for d in decisions(broker, config.corrected_topic)} | {
        d.charge_id for d in decisions(broker, config.held_topic)
    }
    assert latest == {e.charge_id for e in events}
    consumed = sum(
        v for (_, _), v in _sample(worker, "charge_capture_events_consumed_total").items()
    )
    assert consumed == len(events)  # none decided twice, none skipped
