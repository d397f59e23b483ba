"""worker.serde.schema_registry and confluent-kafka's own clients against a test schema registry."""

from __future__ import annotations

import copy
import datetime as dt
import io
import ipaddress
import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from rules.model import ChargeEvent
from tests.registry_helpers import ID_BASE, as_avro, evolved
from tests.schema_registry_server import SchemaRegistryServer, Stored
from worker.offline.sample import generate_events
from worker.serde.schema_registry import (
    RecordSchemaError,
    RegistryAuthError,
    RegistryConfigError,
    RegistrySettings,
    RegistryUnavailable,
    SchemaNotRegistered,
    SchemaRegistry,
    SchemaRejected,
    UnknownSchema,
    UnusableSchema,
)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EVENT_TEXT = (SCHEMAS / "charge_event.avsc").read_text()
EVENT: dict[str, Any] = json.loads(EVENT_TEXT)
DECISION: dict[str, Any] = json.loads((SCHEMAS / "charge_decision.avsc").read_text())
DEAD_LETTER: dict[str, Any] = json.loads((SCHEMAS / "dead_letter.avsc").read_text())
INPUT = "charges.captured-value"


def avro_events(count: int = 5) -> list[dict[str, Any]]:
    """Realistic ChargeEvents as our Avro dicts (what worker/serde.py writes), as decoded."""
    events = generate_events(max(1, count // 2), seed=7)[:count]
    return [as_avro(ChargeEvent.model_validate(e).model_dump()) for e in events]


def frame_id(value: bytes) -> int:
    magic, schema_id = struct.unpack(">bI", value[:5])
    assert magic == 0
    return int(schema_id)


def decode(registry: SchemaRegistry, value: bytes, reader: Any = EVENT) -> Any:
    body = io.BytesIO(value[5:])
    record = fastavro.schemaless_reader(
        body, registry.writer_schema(frame_id(value)), fastavro.parse_schema(reader)
    )
    assert body.tell() == len(value) - 5
    return record


def settings_for(server: SchemaRegistryServer, **overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {"url": server.url}
    if server.auth:
        values["user"], values["password"] = server.auth
    values.update(overrides)
    return RegistrySettings(**values)


@pytest.fixture
def registry(server: SchemaRegistryServer) -> Iterator[SchemaRegistry]:
    with SchemaRegistry(settings_for(server)) as client:
        yield client


def ctx(topic: str = "charges.captured") -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


# --- (a) confluent-kafka's own client and serializers ------------------------------------------


def test_confluent_client_registers_looks_up_and_fetches(server: SchemaRegistryServer) -> None:
    client = SchemaRegistryClient({"url": server.url})
    schema_id = client.register_schema(INPUT, Schema(EVENT_TEXT, "AVRO"))
    assert schema_id >= ID_BASE
    # the same schema: the same id, under this subject (no new version) or any other
    assert client.register_schema(INPUT, Schema(json.dumps(EVENT), "AVRO")) == schema_id
    assert client.register_schema("other-value", Schema(EVENT_TEXT, "AVRO")) == schema_id
    assert client.get_versions(INPUT) == [1]
    assert json.loads(client.get_schema(schema_id).schema_str or "") == EVENT
    latest = client.get_latest_version(INPUT)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, INPUT)
    assert client.lookup_schema(INPUT, Schema(EVENT_TEXT, "AVRO")).schema_id == schema_id
    assert sorted(client.get_subjects()) == ["charges.captured-value", "other-value"]
    assert client.get_schema_types() == ["AVRO"]
    versions = client.get_schema_versions(schema_id)
    assert sorted((v.subject, v.version) for v in versions) == [(INPUT, 1), ("other-value", 1)]
    # compatibility: BACKWARD by default; an added optional field is fine
    assert client.get_compatibility() == "BACKWARD"
    new = Schema(json.dumps(evolved()), "AVRO")
    assert client.test_compatibility(INPUT, new) is True
    assert client.register_schema(INPUT, new) == schema_id + 1
    assert client.get_versions(INPUT) == [1, 2]
    # a required field without a default cannot read the old data: refused, 409
    broken = evolved()
    broken["fields"].append({"name": "batch", "type": "long"})
    assert client.test_compatibility(INPUT, Schema(json.dumps(broken), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(INPUT, Schema(json.dumps(broken), "AVRO"))
    assert refused.value.http_status_code == 409
    assert "ChargeEvent.batch" in refused.value.error_message
    assert client.set_compatibility(INPUT, "NONE") == {"compatibility": "NONE"}
    assert client.register_schema(INPUT, Schema(json.dumps(broken), "AVRO")) == schema_id + 2
    # an invalid schema: 42201
    with pytest.raises(SchemaRegistryError) as invalid:
        client.register_schema("bad-value", Schema('{"type": "record"}', "AVRO"))
    assert (invalid.value.http_status_code, invalid.value.error_code) == (422, 42201)
    # look-ups that miss
    with pytest.raises(SchemaRegistryError) as missing:
        client.lookup_schema("nobody-value", Schema(EVENT_TEXT, "AVRO"))
    assert missing.value.error_code == 40401
    with pytest.raises(SchemaRegistryError) as not_there:
        client.lookup_schema("other-value", Schema(json.dumps(broken), "AVRO"))
    assert not_there.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as unknown:
        client.get_schema(7)
    assert (unknown.value.http_status_code, unknown.value.error_code) == (404, 40403)
    assert client.delete_subject("other-value") == [1]
    assert client.get_subjects() == [INPUT]
    assert json.loads(client.get_schema(schema_id).schema_str or "") == EVENT  # ids stay
    client.close()


def test_avro_serializer_auto_registers_and_deserializer_reads(
    server: SchemaRegistryServer,
) -> None:
    client = SchemaRegistryClient({"url": server.url})
    serializer = AvroSerializer(client, EVENT_TEXT)  # auto.register.schemas: on by default
    records = avro_events(3)
    values = [serializer(record, ctx()) for record in records]
    assert values[0] is not None
    schema_id = frame_id(values[0])
    assert schema_id >= ID_BASE
    assert client.get_latest_version(INPUT).schema_id == schema_id  # TopicNameStrategy
    assert server.count("POST", f"/subjects/{INPUT}/versions") == 1
    deserializer = AvroDeserializer(client)  # the writer's schema, from the registry
    assert [deserializer(v, ctx()) for v in values] == records
    # and a lookup-only serializer finds it
    lookup_only = AvroSerializer(
        SchemaRegistryClient({"url": server.url}), EVENT_TEXT, conf={"auto.register.schemas": False}
    )
    assert lookup_only(records[0], ctx()) == values[0]
    with pytest.raises(SchemaRegistryError) as missing:
        lookup_only(records[0], ctx("charges.unregistered"))
    assert missing.value.error_code == 40401
    client.close()


# --- (b) interoperability: a confluent-kafka producer on an evolved schema -----------------------


def test_records_of_an_evolved_producer_decode_with_our_reader(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    producer_client = SchemaRegistryClient({"url": server.url})
    # the subject already has our schema (say, the previous producer release)
    producer_client.register_schema(INPUT, Schema(EVENT_TEXT, "AVRO"))
    serializer = AvroSerializer(producer_client, json.dumps(evolved()))
    records = avro_events(6)
    values = []
    for number, record in enumerate(records):
        written = {**record, "source_system": None if number % 2 else "EPIC"}
        value = serializer(written, ctx())
        assert value is not None
        values.append(value)
    schema_id = frame_id(values[0])
    assert schema_id == ID_BASE + 1  # the registry's id of the evolved schema, not ours
    assert registry.writer(schema_id).name == "chargecapture.v1.ChargeEvent"
    assert registry.problems_reading(schema_id, EVENT) == []
    decoded = [decode(registry, value) for value in values]
    assert decoded == records  # the same records, less the field we do not know
    assert [ChargeEvent.model_validate(d) for d in decoded] == [
        ChargeEvent.model_validate(r) for r in records
    ]
    assert server.count("GET", f"/schemas/ids/{schema_id}") == 1  # fetched once


def fullnames(document: Any, namespace: str = "") -> Any:
    """A registry's normalised form: full names, no namespace attributes, no docs."""
    if isinstance(document, list):
        return [fullnames(d, namespace) for d in document]
    if not isinstance(document, dict):
        return document
    out = {k: v for k, v in document.items() if k not in ("doc", "namespace")}
    if document.get("type") in ("record", "enum", "fixed"):
        name = document["name"]
        namespace = document.get("namespace", namespace) if "." not in name else ""
        out["name"] = f"{namespace}.{name}" if namespace and "." not in name else name
        namespace = out["name"].rpartition(".")[0]
    if "fields" in out:
        out["fields"] = [
            {k: fullnames(v, namespace) if k == "type" else v for k, v in f.items() if k != "doc"}
            for f in out["fields"]
        ]
    for key in ("items", "values"):
        if key in out:
            out[key] = fullnames(out[key], namespace)
    if isinstance(out.get("type"), dict | list):
        out["type"] = fullnames(out["type"], namespace)
    return out


def test_a_normalised_writer_schema_still_decodes() -> None:
    with (
        SchemaRegistryServer(id_base=ID_BASE, rewrite=fullnames) as server,
        SchemaRegistry(settings_for(server)) as registry,
    ):
        serializer = AvroSerializer(
            SchemaRegistryClient({"url": server.url}), json.dumps(evolved())
        )
        record = avro_events(1)[0]
        value = serializer({**record, "source_system": "EPIC"}, ctx())
        assert value is not None
        writer = registry.writer(frame_id(value))
        assert writer.document["name"] == "chargecapture.v1.ChargeEvent"
        assert "namespace" not in writer.document and "doc" not in writer.document
        assert writer.name == "chargecapture.v1.ChargeEvent"
        assert registry.problems_reading(writer.schema_id, EVENT) == []
        assert decode(registry, value) == record


def test_schema_references_are_resolved(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    client = SchemaRegistryClient({"url": server.url})
    payer = next(f["type"] for f in EVENT["fields"] if f["name"] == "payer")
    payer_doc = {**payer, "namespace": "chargecapture.v1"}
    client.register_schema("payer-value", Schema(json.dumps(payer_doc), "AVRO"))
    event = copy.deepcopy(EVENT)
    next(f for f in event["fields"] if f["name"] == "payer")["type"] = "chargecapture.v1.Payer"
    reference = SchemaReference("chargecapture.v1.Payer", "payer-value", 1)
    schema_id = client.register_schema(INPUT, Schema(json.dumps(event), "AVRO", [reference]))
    record = avro_events(1)[0]
    body = io.BytesIO()
    body.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(body, fastavro.parse_schema(EVENT), record)
    assert decode(registry, body.getvalue()) == record
    assert registry.writer(schema_id).references == (payer_doc,)
    assert registry.problems_reading(schema_id, EVENT) == []
    assert registry.check_reader(INPUT, EVENT) == []
    narrower = copy.deepcopy(EVENT)
    plan = next(f for f in narrower["fields"] if f["name"] == "payer")["type"]["fields"][2]
    plan["type"]["symbols"].remove("AUTO")
    assert registry.check_reader(INPUT, narrower) == [
        f"{INPUT} version 1 (schema id {schema_id}): ChargeEvent.payer.plan_type: writer symbol "
        "AUTO unknown to reader (reader enum PlanType has no default)"
    ]


# --- (c) the failures, classified --------------------------------------------------------------


def test_an_unknown_id_is_the_records_fault_and_is_not_asked_again_at_once(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    with pytest.raises(UnknownSchema) as unknown:
        registry.writer_schema(100017)
    assert unknown.value.schema_id == 100017
    assert "schema id 100017" in str(unknown.value) and server.url in str(unknown.value)
    assert isinstance(unknown.value, RecordSchemaError)
    assert not isinstance(unknown.value, RegistryUnavailable)
    with pytest.raises(UnknownSchema):
        registry.writer_schema(100017)
    assert server.count("GET", "/schemas/ids/100017") == 1


def test_an_unknown_id_is_asked_again_after_a_while(server: SchemaRegistryServer) -> None:
    with SchemaRegistry(settings_for(server, unknown_id_retry_s=0.0)) as registry:
        with pytest.raises(UnknownSchema):
            registry.writer_schema(ID_BASE)
        schema_id = SchemaRegistryClient({"url": server.url}).register_schema(
            INPUT, Schema(EVENT_TEXT, "AVRO")
        )
        assert schema_id == ID_BASE
        assert registry.writer(ID_BASE).name == "chargecapture.v1.ChargeEvent"


def test_a_cached_writer_schema_costs_no_request_and_little_time(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    schema_id = SchemaRegistryClient({"url": server.url}).register_schema(
        INPUT, Schema(EVENT_TEXT, "AVRO")
    )
    first = registry.writer_schema(schema_id)
    calls = 100_000
    started = time.perf_counter()
    for _ in range(calls):
        registry.writer_schema(schema_id)
    per_call_us = (time.perf_counter() - started) / calls * 1e6
    assert registry.writer_schema(schema_id) is first
    assert server.count("GET", "/schemas/ids/") == 1
    assert per_call_us < 20, per_call_us  # a dict look-up: well under a microsecond


def test_a_non_avro_schema_is_unusable(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    text = 'syntax = "proto3"; message Charge { string id = 1; }'
    server.registry.schemas[ID_BASE + 50] = Stored(ID_BASE + 50, text, None, "PROTOBUF", [], [])
    with pytest.raises(UnusableSchema, match=f"schema id {ID_BASE + 50} is a PROTOBUF schema"):
        registry.writer_schema(ID_BASE + 50)
    server.registry.schemas[ID_BASE + 51] = Stored(
        ID_BASE + 51, '{"type": "nope"}', None, "AVRO", [], []
    )
    with pytest.raises(UnusableSchema, match="not an Avro schema fastavro can parse"):
        registry.writer_schema(ID_BASE + 51)


@pytest.mark.parametrize("mode", ["refuse", "503", "hang"])
def test_an_unavailable_registry_is_not_the_records_fault(
    server: SchemaRegistryServer, mode: str
) -> None:
    client = SchemaRegistryClient({"url": server.url})
    first = client.register_schema(INPUT, Schema(EVENT_TEXT, "AVRO"))
    second = client.register_schema("other-value", Schema(json.dumps(evolved()), "AVRO"))
    # production settings, but for the hang a shorter timeout (the default 5 s gives ~10 s)
    settings = settings_for(server, timeout_s=0.5) if mode == "hang" else settings_for(server)
    with SchemaRegistry(settings) as registry:
        registry.writer_schema(first)  # cached before the outage
        server.go_down(mode)
        assert registry.writer_schema(first) is not None  # the cache needs no registry
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as down:
            registry.writer_schema(second)
        took = time.monotonic() - started
        assert not isinstance(down.value, RecordSchemaError | RegistryAuthError)
        assert down.value.url == server.url and server.url in str(down.value)
        assert took < settings.max_wait_s + 1.0, took
        if mode != "hang":
            assert took < 1.0, took  # refused or 503: the retry's short wait, no timeout
        server.come_back()
        assert registry.writer(second).schema_id == second  # recovers by itself


def test_default_settings_bound_the_wait() -> None:
    settings = RegistrySettings("http://registry:8081")
    assert settings.client_config()["timeout"] == 5.0
    assert settings.max_wait_s == pytest.approx(10.1)
    two = RegistrySettings("http://a:8081,http://b:8081", timeout_s=1, retries=0)
    assert two.max_wait_s == pytest.approx(2.0)


def test_a_404_that_is_not_the_registrys_is_not_an_unknown_schema(
    server: SchemaRegistryServer,
) -> None:
    settings = RegistrySettings(server.url + "/not-the-registry")
    with (
        SchemaRegistry(settings) as registry,
        pytest.raises(RegistryUnavailable, match="is the URL the registry's"),
    ):
        registry.writer_schema(ID_BASE)


class _ProxyPage(BaseHTTPRequestHandler):
    """Not a registry: an HTML page with the status the path's last number says."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<html>gateway</html>"
        self.send_response(int(self.path.rsplit("/", 1)[-1]) - ID_BASE)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("status", [200, 302, 404, 502])
def test_an_answer_that_is_not_the_registrys_is_unavailable(status: int) -> None:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyPage)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        with (
            SchemaRegistry(RegistrySettings(url, retries=0)) as registry,
            pytest.raises(RegistryUnavailable) as down,
        ):
            registry.writer_schema(ID_BASE + status)
        assert not isinstance(down.value, RecordSchemaError)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def test_basic_auth() -> None:
    with SchemaRegistryServer(id_base=ID_BASE, auth=("worker", "s3cret")) as server:
        with SchemaRegistry(settings_for(server)) as registry:
            schema_id = registry.id_for("charges.dlq-value", DEAD_LETTER)
            assert registry.writer(schema_id).name == "chargecapture.v1.DeadLetter"
        for user, password in (("worker", "wrong"), (None, None)):
            settings = settings_for(server, user=user, password=password)
            with SchemaRegistry(settings) as registry, pytest.raises(RegistryAuthError) as refused:
                registry.writer_schema(schema_id)
            assert isinstance(refused.value, RegistryUnavailable)  # not the record's fault
            assert "HTTP 401" in str(refused.value) and "wrong" not in str(refused.value)
        # credentials in the URL work too, and stay out of messages
        port = server.port
        with SchemaRegistry(RegistrySettings(f"http://worker:s3cret@127.0.0.1:{port}")) as registry:
            assert registry.url == f"http://127.0.0.1:{port}"
            assert registry.writer_schema(schema_id) is not None
            server.go_down("503")
            with pytest.raises(RegistryUnavailable) as down:
                registry.writer_schema(schema_id + 1)
            assert "s3cret" not in str(down.value)


def test_id_for_auto_registers_under_topic_subjects(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    corrected = registry.id_for("charges.corrected-value", DECISION)
    held = registry.id_for("charges.held-value", DECISION)
    dlq = registry.id_for("charges.dlq-value", json.dumps(DEAD_LETTER))
    assert corrected == held >= ID_BASE and dlq not in (corrected, 1, 2, 3)
    client = SchemaRegistryClient({"url": server.url})
    assert client.get_latest_version("charges.held-value").schema_id == held
    assert client.get_latest_version("charges.dlq-value").schema_id == dlq
    posts = server.count("POST", "/subjects/")
    assert registry.id_for("charges.corrected-value", DECISION) == corrected
    assert server.count("POST", "/subjects/") == posts  # cached


def test_id_for_lookup_only(server: SchemaRegistryServer, registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaNotRegistered) as missing:
        registry.id_for("charges.held-value", DECISION, auto_register=False)
    message = str(missing.value)
    assert missing.value.error_code == 40401
    assert "chargecapture.v1.ChargeDecision is not registered" in message
    assert "subject charges.held-value does not exist" in message
    assert "auto-register is off" in message
    client = SchemaRegistryClient({"url": server.url})
    registered = client.register_schema("charges.held-value", Schema(json.dumps(DECISION)))
    assert registry.id_for("charges.held-value", DECISION, auto_register=False) == registered
    with pytest.raises(SchemaNotRegistered) as other:
        registry.id_for("charges.held-value", DEAD_LETTER, auto_register=False)
    assert other.value.error_code == 40403
    assert "exists but has no version equal to this schema" in str(other.value)


def test_id_for_refused_registration(
    server: SchemaRegistryServer, registry: SchemaRegistry
) -> None:
    registry.id_for("charges.corrected-value", DECISION)
    changed = copy.deepcopy(DECISION)
    changed["fields"].append({"name": "reviewer", "type": "string"})
    with pytest.raises(SchemaRejected) as refused:
        registry.id_for("charges.corrected-value", changed)
    assert refused.value.status == 409
    assert "refused to register chargecapture.v1.ChargeDecision under charges.corrected-value" in (
        str(refused.value)
    )
    assert "ChargeDecision.reviewer" in str(refused.value)


def test_check_reader(
    server: SchemaRegistryServer, registry: SchemaRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="worker.serde.schema_registry"):
        assert registry.check_reader(INPUT, EVENT) == []
    assert "nothing to check" in caplog.text
    client = SchemaRegistryClient({"url": server.url})
    client.set_compatibility(INPUT, "NONE")  # let producers register anything
    client.register_schema(INPUT, Schema(json.dumps(evolved())))
    assert registry.check_reader(INPUT, EVENT) == []
    # an extra required field in the writer is readable: we skip it
    extra = evolved()
    extra["fields"].append({"name": "batch", "type": "long"})
    client.register_schema(INPUT, Schema(json.dumps(extra)))
    assert registry.check_reader(INPUT, EVENT) == []
    # a changed enum and a renamed required field are not
    changed = copy.deepcopy(EVENT)
    performed = next(f for f in changed["fields"] if f["name"] == "performed_by")
    performed["type"]["symbols"] = ["PROVIDER", "ASSISTANT", "STUDENT"]
    next(f for f in changed["fields"] if f["name"] == "cpt_code")["name"] = "procedure_code"
    schema_id = client.register_schema(INPUT, Schema(json.dumps(changed)))
    assert registry.check_reader(INPUT, EVENT) == [
        f"{INPUT} version 3 (schema id {schema_id}): ChargeEvent.cpt_code: reader field (string) "
        "is missing from the writer and has no default",
        f"{INPUT} version 3 (schema id {schema_id}): ChargeEvent.performed_by: writer symbol "
        "STUDENT unknown to reader (reader enum PerformedBy has no default)",
    ]
    assert registry.problems_reading(schema_id, EVENT) == [
        f"schema id {schema_id}: ChargeEvent.cpt_code: reader field (string) is missing from the "
        "writer and has no default",
        f"schema id {schema_id}: ChargeEvent.performed_by: writer symbol STUDENT unknown to "
        "reader (reader enum PerformedBy has no default)",
    ]
    server.go_down("refuse")
    with pytest.raises(RegistryUnavailable):
        registry.check_reader(INPUT, EVENT)


# --- settings ----------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    env = {
        "CHARGE_CAPTURE_SCHEMA_REGISTRY_USER": "svc",
        "CHARGE_CAPTURE_SCHEMA_REGISTRY_PASSWORD": "pw",
        "CHARGE_CAPTURE_SCHEMA_REGISTRY_CA_FILE": "/etc/ca.pem",
    }
    settings = RegistrySettings.from_env("https://sr:8081", env, timeout_s=2.0)
    assert (settings.user, settings.password, settings.ca_file) == ("svc", "pw", "/etc/ca.pem")
    conf = settings.client_config()
    assert conf["basic.auth.user.info"] == "svc:pw"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["timeout"] == 2.0 and conf["max.retries"] == 1
    assert "basic.auth.user.info" not in RegistrySettings.from_env("http://sr", {}).client_config()
    assert "pw" not in repr(settings.safe_url)


def test_bad_settings_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryConfigError, match="Invalid url"):
        SchemaRegistry(RegistrySettings("registry:8081"))
    with pytest.raises(RegistryConfigError):
        SchemaRegistry(RegistrySettings("https://127.0.0.1:1", ca_file=str(tmp_path / "none.pem")))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test schema registry")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "registry.pem", directory / "registry.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def test_tls_with_a_ca_file(certificate: tuple[str, str]) -> None:
    with SchemaRegistryServer(id_base=ID_BASE, tls=certificate) as server:
        assert server.url.startswith("https://")
        with SchemaRegistry(settings_for(server, ca_file=certificate[0])) as registry:
            schema_id = registry.id_for("charges.dlq-value", DEAD_LETTER)
            assert registry.writer(schema_id).name == "chargecapture.v1.DeadLetter"
        # without our CA the certificate is not trusted: no usable answer
        with (
            SchemaRegistry(settings_for(server)) as registry,
            pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            registry.writer_schema(schema_id)
