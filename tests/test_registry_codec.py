"""The Codec over a Confluent Schema Registry (worker.serde.registry_source): reading by the
registry's ids, writing with the ids of our subjects, the start-up checks; no Kafka broker."""

from __future__ import annotations

import json
import logging
import struct

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer

from rules.model import DeadLetter, ErrorKind
from tests.factories import lean
from tests.registry_helpers import (
    ID_BASE,
    INPUT,
    OURS,
    SCHEMAS,
    a_decision,
    as_avro,
    ctx,
    events,
    evolved,
    framed,
    incompatible,
    register,
    registry_codec,
    without,
)
from tests.schema_registry_server import SchemaRegistryServer
from worker.errors import (
    EXIT_CONFIG,
    SchemaRegistrySetupError,
    SchemaUnavailable,
    UndecidableRecord,
)
from worker.serde.codec import Codec
from worker.serde.framing import DEAD_LETTER, DECISION, EVENT, SchemaRefused

# --- reading -------------------------------------------------------------------------------


def test_an_evolved_writer_decodes_to_our_events_and_is_fetched_once(
    server: SchemaRegistryServer,
) -> None:
    client = SchemaRegistryClient({"url": server.url})
    serializer = AvroSerializer(client, json.dumps(evolved()))  # confluent-kafka's own
    sent = events(8)
    values = [serializer({**as_avro(e.model_dump()), "source_system": "EHR"}, ctx()) for e in sent]
    codec = registry_codec(server)
    schema_id = struct.unpack(">I", values[0][1:5])[0]
    assert schema_id >= ID_BASE
    assert [codec.decode_event(v) for v in values] == [lean(e) for e in sent]
    assert [codec.decode_event(v) for v in values] == [lean(e) for e in sent]  # from the cache
    assert server.count("GET", f"/schemas/ids/{schema_id}") == 1
    client.close()
    codec.close()


def test_a_writer_missing_a_field_with_a_default_decodes(server: SchemaRegistryServer) -> None:
    older = without("encounter_id")
    schema_id = register(server, f"{INPUT}-value", older)
    event = events(1)[0]
    record = {k: v for k, v in as_avro(event.model_dump()).items() if k != "encounter_id"}
    decoded = registry_codec(server).decode_event(framed(schema_id, older, record))
    assert decoded.encounter_id is None
    assert decoded == lean(event.model_copy(update={"encounter_id": None}))


def test_our_schema_is_read_as_ours_and_an_evolved_one_projected(
    server: SchemaRegistryServer,
) -> None:
    ours_id = register(server, f"{INPUT}-value", OURS)
    evolved_id = register(server, f"{INPUT}-value", evolved())
    codec = registry_codec(server)
    event = as_avro(events(1)[0].model_dump())
    codec.decode_event(framed(ours_id, OURS, event))
    codec.decode_event(framed(evolved_id, evolved(), {**event, "source_system": None}))
    reader = codec.source.reader(EVENT)
    assert codec._events[ours_id] == (reader, None, None)  # fastavro reads it as ours
    writer, resolved_to, projected = codec._events[evolved_id]
    assert writer is not reader and resolved_to is None  # read as written, then projected
    assert projected is not None and projected.drop == ("source_system",)


def test_an_unknown_id_is_refused_with_the_id_and_asked_again_only_by_prefetch(
    server: SchemaRegistryServer,
) -> None:
    codec = registry_codec(server, unknown_id_retry_s=0.0)
    value = framed(424242, OURS, as_avro(events(1)[0].model_dump()))
    for _ in range(3):
        with pytest.raises(UndecidableRecord) as refused:
            codec.decode_event(value)
        assert refused.value.kind is ErrorKind.SCHEMA
        assert "schema id 424242" in refused.value.message
        assert server.url in refused.value.message
    assert server.count("GET", "/schemas/ids/424242") == 1  # decoding never asks again
    codec.prefetch([value])  # its retry time (0 s) has come: asked again, still unknown
    assert server.count("GET", "/schemas/ids/424242") == 2
    with pytest.raises(SchemaRefused):
        codec.decode_event(value)


def test_a_writer_our_reader_cannot_read_is_refused_naming_the_problem(
    server: SchemaRegistryServer,
) -> None:
    schema_id = register(server, "elsewhere-value", incompatible())
    record = {**as_avro(events(1)[0].model_dump()), "units": "two"}
    with pytest.raises(UndecidableRecord) as refused:
        registry_codec(server).decode_event(framed(schema_id, incompatible(), record))
    assert refused.value.kind is ErrorKind.SCHEMA
    message = refused.value.message
    assert f"schema id {schema_id}" in message and "units" in message, message
    assert "schemas/charge_event.avsc" in message


@pytest.mark.parametrize("mode", ["refuse", "503"])
def test_a_silent_registry_is_unavailable_not_refused_and_known_ids_need_none(
    server: SchemaRegistryServer, mode: str
) -> None:
    known = register(server, f"{INPUT}-value", OURS)
    new = register(server, f"{INPUT}-value", evolved())
    codec = registry_codec(server)
    event = as_avro(events(1)[0].model_dump())
    old_value = framed(known, OURS, event)
    new_value = framed(new, evolved(), {**event, "source_system": "X"})
    codec.prefetch([old_value])
    server.go_down(mode)
    assert codec.decode_event(old_value).charge_id == event["charge_id"]  # no request needed
    with pytest.raises(SchemaUnavailable):
        codec.prefetch([old_value, new_value])
    with pytest.raises(SchemaUnavailable):  # decoding it unfetched: the same, not a DLQ kind
        codec.decode_event(new_value)
    server.come_back()
    codec.prefetch([old_value, new_value])
    assert codec.decode_event(new_value).charge_id == event["charge_id"]


def test_the_local_registry_needs_no_prefetch() -> None:
    codec = Codec()
    value = codec.encode_event(events(1)[0])
    codec.prefetch([value, b"\x00\x00\x00\x00\x07garbage"])  # asks nothing, raises nothing
    assert codec.decode_event(value) == lean(events(1)[0])
    assert value[1:5] == b"\x00\x00\x00\x01"  # schemas/registry.json's id


# --- writing and the start-up checks -------------------------------------------------------


def test_outputs_are_framed_with_the_ids_of_their_topic_subjects(
    server: SchemaRegistryServer,
) -> None:
    writes = {"charges.corrected": DECISION, "charges.held": DECISION, "charges.dlq": DEAD_LETTER}
    codec = registry_codec(server, writes)
    codec.open()
    client = SchemaRegistryClient({"url": server.url})
    subjects = {s: client.get_latest_version(s).schema_id for s in client.get_subjects()}
    assert set(subjects) == {f"{t}-value" for t in writes}
    decision_id = subjects["charges.corrected-value"]
    assert subjects["charges.held-value"] == decision_id  # one schema: one id
    assert decision_id >= ID_BASE and subjects["charges.dlq-value"] >= ID_BASE
    letter = DeadLetter(
        key=b"k",
        value=b"\x00\x00\x01\x86\xa3",
        source_topic=INPUT,
        source_partition=0,
        source_offset=7,
        source_timestamp=None,
        error_kind=ErrorKind.SCHEMA,
        error_message="schema id 99999 is not in the schema registry",
    )
    value = codec.encode_dead_letter(letter, "charges.dlq")
    assert struct.unpack(">I", value[1:5])[0] == subjects["charges.dlq-value"]
    assert codec.decode_dead_letter(value) == letter
    assert codec.encode_dead_letter(letter) == value  # no topic: the one id it has
    with pytest.raises(LookupError, match=r"charges\.elsewhere"):
        codec.encode_dead_letter(letter, "charges.elsewhere")
    registrations = server.count("POST", "/subjects/")
    codec.open()  # once: a second open asks nothing
    assert server.count("POST", "/subjects/") == registrations
    client.close()


def test_lookup_only_with_a_missing_subject_is_a_setup_error(
    server: SchemaRegistryServer,
) -> None:
    codec = registry_codec(server, {"charges.corrected": DECISION}, auto_register=False)
    with pytest.raises(SchemaRegistrySetupError) as missing:
        codec.open()
    assert missing.value.exit_code == EXIT_CONFIG
    assert "charges.corrected-value does not exist" in str(missing.value)
    assert "auto-register is off" in str(missing.value)
    server.registry.register(
        "charges.corrected-value", {"schema": (SCHEMAS / "charge_decision.avsc").read_text()}
    )
    codec.open()  # registered by someone else: found
    assert codec.source.writer_id(DECISION, "charges.corrected") >= ID_BASE


def test_an_unreadable_latest_input_schema_is_a_setup_error_line_by_line(
    server: SchemaRegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.registry.subject_levels[f"{INPUT}-value"] = "NONE"
    register(server, f"{INPUT}-value", OURS)
    register(server, f"{INPUT}-value", incompatible())
    codec = registry_codec(server, {}, checks=(INPUT,))
    with caplog.at_level(logging.ERROR), pytest.raises(SchemaRegistrySetupError) as refused:
        codec.open()
    assert f"{INPUT}-value" in str(refused.value) and "units" in str(refused.value)
    lines = [r for r in caplog.records if r.getMessage() == "input schema cannot be read with ours"]
    assert len(lines) == 1 and "units" in lines[0].fields["problem"]  # type: ignore[attr-defined]


def test_credentials_refused_at_start_are_a_setup_error() -> None:
    with SchemaRegistryServer(auth=("user", "secret")) as server:
        codec = registry_codec(
            server, {"charges.corrected": DECISION}, user="user", password="wrong"
        )
        with pytest.raises(
            SchemaRegistrySetupError, match="CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD"
        ):
            codec.open()
        codec.close()


def test_a_silent_registry_at_start_is_unavailable(server: SchemaRegistryServer) -> None:
    codec = registry_codec(server, {"charges.corrected": DECISION})
    server.go_down("503")
    with pytest.raises(SchemaUnavailable):
        codec.open()
    server.come_back()
    codec.open()


def test_decisions_round_trip_through_the_registry(server: SchemaRegistryServer) -> None:
    client = SchemaRegistryClient({"url": server.url})
    client.register_schema(
        "x-value", Schema((SCHEMAS / "charge_decision.avsc").read_text(), "AVRO")
    )
    codec = registry_codec(server, {"charges.held": DECISION})
    codec.open()
    local = Codec()
    decision = a_decision()
    value = codec.encode_decision(decision, topic="charges.held")
    read_back = codec.decode_decision(value)
    assert read_back == local.decode_decision(local.encode_decision(decision))
    assert read_back.charge_id == decision.charge_id and read_back.decision_version == 1
    assert value[5:] == local.encode_decision(decision)[5:]  # the same Avro body, another id
    client.close()
