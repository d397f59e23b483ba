"""The worker with a Confluent Schema Registry, over the real test broker and the test registry.

Producers are confluent-kafka's own: its AvroSerializer registers an evolved charge_event schema
(ours plus an optional field) and its librdkafka Producer writes the framed records, keyed by
patient id (CRC32 partitioner, hence `input_partitioner=crc32`). The worker runs in-process.
"""

from __future__ import annotations

import copy
import json
import struct
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from rules.model import ChargeDecision, ChargeEvent, DecisionStatus, ErrorKind
from rules.pack import load_packs
from rules.visit import decide_events
from tests.brokers import BrokerInfo
from tests.factories import findings, lean
from tests.helpers import wait_until
from tests.registry_helpers import as_avro, evolved, framed, incompatible
from tests.schema_registry_server import SchemaRegistryServer
from tests.worker_harness import running_worker, worker_config
from worker.config import WorkerConfig
from worker.kafka.partitioner import Partitioner
from worker.kafka.reading import read_to_end
from worker.observability.http import start_http_server
from worker.offline.sample import generate_events
from worker.processing.schema_wait import READINESS_REASON
from worker.processing.table import latest_decisions
from worker.replay.plan import ReplayOptions, TopicsOutput
from worker.replay.run import run_replay
from worker.runtime.worker import Worker
from worker.serde.codec import Codec
from worker.serde.registry_source import codec_for

pytestmark = pytest.mark.broker
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def registry_config(
    broker: BrokerInfo, prefix: str, server: SchemaRegistryServer, **overrides: Any
) -> WorkerConfig:
    return worker_config(
        broker,
        prefix,
        schema_registry_url=server.url,
        input_partitioner=Partitioner.CRC32,  # librdkafka's default partitioner
        **overrides,
    )


def sample(visits: int, seed: int) -> list[ChargeEvent]:
    return [ChargeEvent.model_validate(e) for e in generate_events(visits, seed)]


def serialize_evolved(
    server: SchemaRegistryServer, topic: str, events: list[ChargeEvent]
) -> list[bytes]:
    """confluent-kafka's AvroSerializer: registers the evolved schema under <topic>-value."""
    client = SchemaRegistryClient({"url": server.url})
    serializer = AvroSerializer(client, json.dumps(evolved()))
    context = SerializationContext(topic, MessageField.VALUE)
    values = []
    for number, event in enumerate(events):
        record = {**as_avro(event.model_dump()), "source_system": f"EHR-{number % 3}"}
        value = serializer(record, context)
        assert value is not None
        values.append(value)
    client.close()
    return values


def produce_librdkafka(
    broker: BrokerInfo, topic: str, items: list[tuple[bytes | None, bytes]]
) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for key, value in items:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def schema_id(value: bytes) -> int:
    magic, found = struct.unpack(">bI", value[:5])
    assert magic == 0
    return int(found)


def outputs(config: WorkerConfig) -> list[str]:
    return [config.corrected_topic, config.held_topic]


def assert_decided_as_offline(latest: dict[str, ChargeDecision], events: list[ChargeEvent]) -> None:
    expected = decide_events([lean(e) for e in events], load_packs())
    assert set(latest) == set(expected)
    for charge_id, (_, verdict) in expected.items():
        decision = latest[charge_id]
        if verdict is None:
            assert decision.status is DecisionStatus.VOIDED, charge_id
            continue
        assert decision.status == verdict.status, charge_id
        assert (
            lean(decision.charge),
            findings(decision.corrections),
            findings(decision.holds),
        ) == (verdict.billed, findings(verdict.corrections), findings(verdict.holds)), charge_id


def assert_no_two_records_differ(config: WorkerConfig, codec: Codec) -> int:
    """Every record of one (charge_id, decision_version, topic) is the same (aborted copies
    included: read uncommitted); the number of records."""
    copies: dict[tuple[str, int, str], set[bytes]] = defaultdict(set)
    records = list(read_to_end(config, outputs(config), isolation_level="read_uncommitted"))
    for record in records:
        assert record.value is not None
        decision = codec.decode_decision(record.value)
        copies[(decision.charge_id, decision.decision_version, record.topic)].add(record.value)
    different = {k: len(v) for k, v in copies.items() if len(v) > 1}
    assert not different, f"different records for one charge version: {different}"
    return len(records)


def caught_up(worker: Worker) -> bool:
    return bool(worker.committed) and worker.caught_up()


# --- interoperability ------------------------------------------------------------------------


def test_confluent_serializer_events_are_decided_and_outputs_use_registry_ids(
    broker: BrokerInfo, topic_prefix: str, server: SchemaRegistryServer
) -> None:
    config = registry_config(broker, topic_prefix, server)
    events = sample(40, seed=5)
    values = serialize_evolved(server, config.input_topic, events)
    input_id = schema_id(values[0])
    produce_librdkafka(
        broker,
        config.input_topic,
        [(e.patient_id.encode(), v) for e, v in zip(events, values, strict=True)],
    )
    codec = codec_for(config, writes={})
    with running_worker(config) as worker:
        wait_until(lambda: caught_up(worker), 90, message="the worker did not catch up")
    latest, _ = latest_decisions(config, outputs(config), codec)
    assert_decided_as_offline(latest, events)
    assert list(read_to_end(config, [config.dlq_topic])) == []
    assert list(read_to_end(config, [config.repartition_topic])) == []  # placed by CRC32

    client = SchemaRegistryClient({"url": server.url})
    ids = {t: client.get_latest_version(f"{t}-value").schema_id for t in outputs(config)}
    assert input_id not in ids.values() and min(ids.values()) >= 100001
    deserializer = AvroDeserializer(client)  # confluent-kafka reads what the worker wrote
    seen = 0
    for record in read_to_end(config, outputs(config)):
        assert record.value is not None
        assert schema_id(record.value) == ids[record.topic]
        theirs = deserializer(record.value, SerializationContext(record.topic, MessageField.VALUE))
        ours = codec.decode_decision(record.value)
        assert theirs is not None and theirs["charge_id"] == ours.charge_id
        assert (theirs["status"], theirs["decision_version"]) == (
            ours.status.value,
            ours.decision_version,
        )
        seen += 1
    assert seen >= len(latest)
    assert server.count("GET", f"/schemas/ids/{input_id}") == 1  # fetched once, then cached

    # replay into shadow topics: their own subjects, the same final decisions
    shadow = TopicsOutput(f"{topic_prefix}.shadow.")
    report = run_replay(ReplayOptions(config=config, output=shadow, diff=True, diff_out=None))
    assert report.diff is not None and report.diff.changes == []
    shadow_topic = shadow.prefix + config.corrected_topic
    shadow_id = client.get_latest_version(f"{shadow_topic}-value").schema_id
    assert shadow_id == ids[config.corrected_topic]  # one schema, one id, its own subject
    assert all(schema_id(r.value or b"") == shadow_id for r in read_to_end(config, [shadow_topic]))
    client.close()
    codec.close()


# --- the record's fault: dead-lettered as SCHEMA with the id -----------------------------------


def test_unknown_ids_and_unreadable_writers_are_dead_lettered_with_the_id(
    broker: BrokerInfo, topic_prefix: str, server: SchemaRegistryServer
) -> None:
    config = registry_config(broker, topic_prefix, server)
    good, other = sample(2, seed=9)[:2]
    values = serialize_evolved(server, config.input_topic, [good])
    # an incompatible schema under another subject (the input subject's check passes)
    bad_id = server.registry.register("elsewhere-value", {"schema": json.dumps(incompatible())})
    unreadable = framed(bad_id, incompatible(), {**as_avro(other.model_dump()), "units": "2"})
    unknown = framed(
        999_999, copy.deepcopy(evolved()), as_avro(other.model_dump()) | {"source_system": None}
    )
    key = other.patient_id.encode()
    produce_librdkafka(
        broker,
        config.input_topic,
        [(key, unknown), (key, unreadable), (good.patient_id.encode(), values[0])],
    )
    codec = codec_for(config, writes={})
    with running_worker(config) as worker:
        wait_until(lambda: caught_up(worker), 90, message="the worker did not catch up")
    letters = [
        codec.decode_dead_letter(r.value or b"") for r in read_to_end(config, [config.dlq_topic])
    ]
    by_value = {letter.value: letter for letter in letters}
    assert set(by_value) == {unknown, unreadable}  # the raw bytes, kept
    assert all(letter.error_kind is ErrorKind.SCHEMA for letter in letters)
    assert "schema id 999999" in by_value[unknown].error_message
    assert f"schema id {bad_id}" in by_value[unreadable].error_message
    assert "units" in by_value[unreadable].error_message
    dlq_id = (
        SchemaRegistryClient({"url": server.url})
        .get_latest_version(f"{config.dlq_topic}-value")
        .schema_id
    )
    assert all(schema_id(r.value or b"") == dlq_id for r in read_to_end(config, [config.dlq_topic]))
    latest, _ = latest_decisions(config, outputs(config), codec)
    assert set(latest) == {good.charge_id}  # the good event is decided beside them
    codec.close()


# --- nobody's fault: a registry outage delays, loses nothing, dead-letters nothing ------------


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize("mode", ["503", "refuse"])
def test_a_registry_outage_delays_decisions_and_loses_or_repeats_none(
    broker: BrokerInfo, topic_prefix: str, server: SchemaRegistryServer, mode: str
) -> None:
    config = registry_config(broker, topic_prefix, server)
    events = sample(30, seed=13)
    values = serialize_evolved(server, config.input_topic, events)  # registered while up
    codec = codec_for(config, writes={})
    with running_worker(config) as worker:
        http = start_http_server(0, worker.metrics, worker.health, host="127.0.0.1", ephemeral=True)
        try:
            wait_until(lambda: worker.health.readiness()[0], 60, message="never ready")
            server.go_down(mode)
            # the worker meets the evolved schema's id for the first time during the outage
            produce_librdkafka(
                broker,
                config.input_topic,
                [(e.patient_id.encode(), v) for e, v in zip(events, values, strict=True)],
            )
            wait_until(
                lambda: (
                    worker.health.readiness() == (False, READINESS_REASON)
                    and worker.schema_wait.waits >= 2
                ),
                60,
                message="the worker did not wait for the registry",
            )
            status, body = readyz(http.port)
            assert status == 503 and READINESS_REASON in body
            sent = list(
                read_to_end(
                    config, [*outputs(config), config.dlq_topic], isolation_level="read_uncommitted"
                )
            )
            assert sent == [], "something was decided or dead-lettered during the outage"
            assert worker.restarts == 0  # waiting in its loop, not restarting
            server.come_back()
            wait_until(lambda: caught_up(worker), 90, message="not decided after the outage")
            wait_until(lambda: readyz(http.port)[0] == 200, 30, message="not ready again")
        finally:
            http.close()
    assert list(read_to_end(config, [config.dlq_topic], isolation_level="read_uncommitted")) == []
    records = assert_no_two_records_differ(config, codec)
    latest, _ = latest_decisions(config, outputs(config), codec)
    assert_decided_as_offline(latest, events)
    assert records >= len(latest)
    codec.close()
