"""Schemas, events and codecs shared by the schema registry tests."""

from __future__ import annotations

import copy
import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.serialization import MessageField, SerializationContext

from rules.charge import Decision, DecisionSource
from rules.model import ChargeEvent
from rules.pack import load_packs
from tests.factories import lean
from tests.schema_registry_server import SchemaRegistryServer
from worker.config import WorkerConfig
from worker.offline.sample import generate_events
from worker.serde.codec import Codec
from worker.serde.registry_source import RegistrySource
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


def a_decision() -> Decision:
    """A real decision: the worker's own output for a sample event."""
    state = new_state(WorkerConfig(), 0, 1)
    event = lean(events(1)[0])
    source = DecisionSource(topic=INPUT, partition=0, offset=0, event_id=event.event_id)
    publication = state.decide(event, source, load_packs(), record_time=None, rekeyed=False)[0]
    return publication.decision
