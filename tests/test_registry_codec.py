"""The Codec over a Confluent Schema Registry (worker.serde.registry_source), the waits for a
silent registry (worker.processing.schema_wait) and the registry options; no Kafka broker."""

from __future__ import annotations

import copy
import io
import json
import logging
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from rules.model import ChargeDecision, ChargeEvent, DeadLetter, DecisionSource, ErrorKind
from rules.pack import load_packs
from tests.helpers import wait_until
from tests.schema_registry_server import SchemaRegistryServer
from worker.cli import build_parser
from worker.cli.options import from_args
from worker.config import WorkerConfig
from worker.errors import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    SchemaRegistryOutage,
    SchemaRegistrySetupError,
    SchemaUnavailable,
    UndecidableRecord,
)
from worker.observability.health import Health
from worker.offline.sample import generate_events
from worker.processing.schema_wait import READINESS_REASON, SchemaWait
from worker.serde.codec import Codec
from worker.serde.framing import DEAD_LETTER, DECISION, EVENT, SchemaRefused
from worker.serde.registry_source import RegistrySource, codec_for
from worker.serde.schema_registry import RegistrySettings, SchemaRegistry
from worker.state.store import new_state

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
OURS: dict[str, Any] = json.loads((SCHEMAS / "charge_event.avsc").read_text())
INPUT = "charges.captured"
ID_BASE = 100001


def evolved() -> dict[str, Any]:
    """Ours plus one optional field with a default, as a newer producer writes."""
    schema = copy.deepcopy(OURS)
    schema["fields"].append({"name": "source_system", "type": ["null", "string"], "default": None})
    return schema


def without(field: str) -> dict[str, Any]:
    """Ours without a field that has a default, as an older producer writes."""
    schema = copy.deepcopy(OURS)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
    return schema


def incompatible() -> dict[str, Any]:
    """units as a string: our reader (int) cannot read it."""
    schema = copy.deepcopy(OURS)
    for f in schema["fields"]:
        if f["name"] == "units":
            f["type"] = "string"
    return schema


def as_avro(value: Any) -> Any:
    """A model dump as the dict Avro writes and reads (tuples as lists)."""
    if isinstance(value, dict):
        return {k: as_avro(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_avro(v) for v in value]
    return value


def events(count: int) -> list[ChargeEvent]:
    return [ChargeEvent.model_validate(e) for e in generate_events(count, seed=11)[:count]]


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def ctx(topic: str = INPUT) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


@pytest.fixture
def server() -> Iterator[SchemaRegistryServer]:
    with SchemaRegistryServer(id_base=ID_BASE) as running:
        yield running


def registry_codec(
    server: SchemaRegistryServer,
    writes: dict[str, str] | None = None,
    checks: tuple[str, ...] = (),
    auto_register: bool = True,
    **settings: Any,
) -> Codec:
    registry = SchemaRegistry(RegistrySettings(server.url, **settings))
    source = RegistrySource(
        registry, writes=writes or {}, checks=checks, auto_register=auto_register
    )
    return Codec(source)


def register(server: SchemaRegistryServer, subject: str, schema: dict[str, Any]) -> int:
    return server.registry.register(subject, {"schema": json.dumps(schema)})


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
    assert [codec.decode_event(v) for v in values] == sent
    assert [codec.decode_event(v) for v in values] == sent  # again: from the cache
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
    assert decoded == event.model_copy(update={"encounter_id": None})


def test_our_own_schema_from_the_registry_is_read_without_resolution(
    server: SchemaRegistryServer,
) -> None:
    ours_id = register(server, f"{INPUT}-value", OURS)
    evolved_id = register(server, f"{INPUT}-value", evolved())
    codec = registry_codec(server)
    event = as_avro(events(1)[0].model_dump())
    codec.decode_event(framed(ours_id, OURS, event))
    codec.decode_event(framed(evolved_id, evolved(), {**event, "source_system": None}))
    reader = codec.source.reader(EVENT)
    assert codec._events[ours_id] == (reader, None)  # fastavro reads it as ours
    writer, resolved_to = codec._events[evolved_id]
    assert resolved_to is reader and writer is not reader


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
    assert codec.decode_event(value) == events(1)[0]
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


def test_codec_for_reads_the_config_and_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert codec_for(WorkerConfig(), writes={}).source.remote is False  # no URL: local ids
    with SchemaRegistryServer(auth=("billing", "s3cret")) as server:
        config = WorkerConfig(schema_registry_url=server.url, schema_registry_user="billing")
        monkeypatch.setenv("CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD", "s3cret")
        codec = codec_for(config, writes={"t": DECISION})
        codec.open()
        assert codec.source.writer_id(DECISION, "t") >= 100001
        codec.close()
    missing_ca = WorkerConfig(
        schema_registry_url="https://registry:8081", schema_registry_ca_file=str(tmp_path / "x")
    )
    with pytest.raises(SchemaRegistrySetupError):
        codec_for(missing_ca, writes={})


# --- waiting for a silent registry ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waits_are_bounded_and_readiness_says_why() -> None:
    clock, health, answered = Clock(), Health(), threading.Event()
    wait = SchemaWait(30.0, health, answered.set, clock=clock)
    wait.stop.set()  # the backoff returns at once
    unreachable = SchemaUnavailable("schema registry http://r:8081 unavailable: HTTP 503")
    wait.wait(unreachable)
    assert health.readiness() == (False, READINESS_REASON)
    clock.now += 29.0
    wait.wait(unreachable)  # still within the limit
    wait.answered()
    assert answered.is_set() and wait.since is None
    wait.wait(unreachable)  # a new outage counts from its own start
    clock.now += 30.0
    with pytest.raises(SchemaRegistryOutage) as outage:
        wait.wait(unreachable)
    assert outage.value.exit_code == EXIT_UNAVAILABLE
    assert "30 s" in str(outage.value) and "http://r:8081" in str(outage.value)


def test_open_waits_for_the_registry_then_resolves(server: SchemaRegistryServer) -> None:
    codec = registry_codec(server, {"charges.corrected": DECISION})
    server.go_down("503")
    wait = SchemaWait(60.0)
    opened = threading.Event()

    def open_it() -> None:
        if wait.open(codec):
            opened.set()

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    wait_until(lambda: wait.waits >= 2, 10, message="no retry while the registry was down")
    assert not opened.is_set()
    server.come_back()
    thread.join(timeout=20)
    assert opened.is_set() and wait.since is None
    assert codec.source.writer_id(DECISION, "charges.corrected") >= ID_BASE


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["run", "demo", "produce", "replay"])
def test_registry_flags_on_every_avro_verb(verb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "USER", "CA_FILE", "OUTAGE_S"):
        monkeypatch.delenv(f"CHARGE_CAPTURE_SCHEMA_REGISTRY_{name}", raising=False)
    monkeypatch.delenv("CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS", raising=False)
    extra = ["day.jsonl"] if verb == "produce" else []
    flags = [
        "--schema-registry-url",
        "https://sr:8081",
        "--schema-registry-user",
        "billing",
        "--schema-registry-ca-file",
        "/etc/ca.pem",
        "--schema-registry-outage-s",
        "45",
        "--no-auto-register-schemas",
    ]
    config = from_args(build_parser().parse_args([verb, *extra, *flags]))
    assert (config.schema_registry_url, config.schema_registry_user) == (
        "https://sr:8081",
        "billing",
    )
    assert config.schema_registry_ca_file == "/etc/ca.pem"
    assert config.schema_registry_outage_s == 45.0 and config.auto_register_schemas is False
    default = from_args(build_parser().parse_args([verb, *extra]))
    assert default.schema_registry_url is None and default.auto_register_schemas is True
    with pytest.raises(SystemExit):  # the password is never a flag
        build_parser().parse_args([verb, *extra, "--schema-registry-password", "x"])


def test_registry_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHARGE_CAPTURE_SCHEMA_REGISTRY_URL", "http://sr:8081")
    monkeypatch.setenv("CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS", "false")
    config = from_args(build_parser().parse_args(["run"]))
    assert config.schema_registry_url == "http://sr:8081" and not config.auto_register_schemas
    flagged = from_args(build_parser().parse_args(["run", "--auto-register-schemas"]))
    assert flagged.auto_register_schemas is True  # the flag wins over the variable
    monkeypatch.setenv("CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS", "maybe")
    with pytest.raises(SystemExit) as bad:
        from_args(build_parser().parse_args(["run"]))
    assert bad.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "CHARGE_CAPTURE_AUTO_REGISTER_SCHEMAS='maybe'" in err and len(err.splitlines()) == 1


def test_decisions_round_trip_through_the_registry(server: SchemaRegistryServer) -> None:
    client = SchemaRegistryClient({"url": server.url})
    client.register_schema(
        "x-value", Schema((SCHEMAS / "charge_decision.avsc").read_text(), "AVRO")
    )
    codec = registry_codec(server, {"charges.held": DECISION})
    codec.open()
    local = Codec()
    decision = _a_decision(local)
    value = codec.encode_decision(decision, "charges.held")
    assert codec.decode_decision(value) == decision
    assert value[5:] == local.encode_decision(decision)[5:]  # the same Avro body, another id
    client.close()


def _a_decision(local: Codec) -> ChargeDecision:
    """A real decision: the worker's own output for a sample event, read back."""
    state = new_state(WorkerConfig(), 0, 1)
    event = events(1)[0]
    source = DecisionSource(topic=INPUT, partition=0, offset=0, event_id=event.event_id)
    publication = state.decide(event, source, load_packs(), record_time=None, rekeyed=False)[0]
    return local.decode_decision(local.encode_decision(publication.decision))
