"""Confluent framing (magic 0, 4-byte big-endian schema id, Avro body) and where schema ids come
from: the `SchemaSource` protocol, and `LocalRegistry`, its offline implementation over
schemas/.

A schema source maps a record's schema id to its writer schema, and one of our records (on a
topic) to the id it is framed with. The Codec (worker.serde.codec) frames and unframes; it asks
its source once per id, never per record. Two sources exist:

- `LocalRegistry` (the default): `schemas/registry.json`, a JSON object: schema id as a string
  -> file name in schemas/. Reading uses the writer schema the id names and the reader schema of
  the same record in schemas/ (the newest registered file of that name), so producers on an older
  compatible schema keep working. Its ids are the same on every topic.
- `RegistrySource` (worker.serde.registry_source): a Confluent Schema Registry.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fastavro

from rules.model import ErrorKind
from worker.errors import UndecidableRecord

MAGIC = 0
# Full names of the data flow's records (namespace chargecapture.v1).
EVENT = "chargecapture.v1.ChargeEvent"
DECISION = "chargecapture.v1.ChargeDecision"
DEAD_LETTER = "chargecapture.v1.DeadLetter"
HEADER = struct.Struct(">bI")


def default_schemas_dir() -> Path:
    """CHARGE_CAPTURE_SCHEMAS_DIR, else the checkout's schemas/, else the installed copy."""
    configured = os.environ.get("CHARGE_CAPTURE_SCHEMAS_DIR")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    if (checkout / "registry.json").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "charge-capture" / "schemas"


class SchemaRefused(UndecidableRecord):
    """A record's schema id cannot be read as the record it should be (kind SCHEMA).

    `retry_after_s`: the id may become known later (a registry that has not seen it yet), so it
    is asked for again after this long; None: never (a schema of an id does not change).
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(ErrorKind.SCHEMA, message)
        self.retry_after_s = retry_after_s


class SchemaSource(Protocol):
    """Schema id <-> schema, for the Codec."""

    # True when answers come over the network: the Codec then fetches a batch's new ids before
    # the batch is decided (Codec.prefetch), and `open` has work to do.
    remote: bool

    def open(self) -> None:
        """Resolve the ids of what will be written and check what will be read, once, at start.

        Raises worker.errors.ConfigError (unusable as set up) or SchemaUnavailable (no answer).
        """

    def close(self) -> None: ...

    def reader(self, name: str) -> Any:
        """Our fastavro-parsed schema of the record `name` (the reader, and what we write)."""

    def document(self, name: str) -> Any:
        """Our schema of the record `name` as its file says it (for generated code)."""

    def writer(self, schema_id: int, expected: str) -> Any:
        """The parsed writer schema of `schema_id`, known to resolve to our `expected` record.

        Raises SchemaRefused (the record's fault) or SchemaUnavailable (nobody's: wait).
        """

    def writer_id(self, name: str, topic: str | None) -> int:
        """The id our record `name` is framed with on `topic` (None: the one id it has)."""


@dataclass(frozen=True)
class RegisteredSchema:
    schema_id: int
    name: str  # full name, e.g. chargecapture.v1.ChargeEvent
    parsed: Any
    document: Any  # the schema's JSON, as in its file
    file: str  # its file name in schemas/


class LocalRegistry:
    """schemas/registry.json as a SchemaSource: the offline default."""

    remote = False

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or default_schemas_dir()
        mapping: dict[str, str] = json.loads((directory / "registry.json").read_text())
        self.by_id: dict[int, RegisteredSchema] = {}
        latest: dict[str, RegisteredSchema] = {}
        for key, filename in sorted(mapping.items(), key=lambda kv: int(kv[0])):
            raw = json.loads((directory / filename).read_text())
            name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
            entry = RegisteredSchema(int(key), name, fastavro.parse_schema(raw), raw, filename)
            self.by_id[entry.schema_id] = entry
            latest[name] = entry  # ids ascend: the last one of a name is its current version
        self.current = latest

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def reader(self, name: str) -> Any:
        return self.current[name].parsed

    def document(self, name: str) -> Any:
        return self.current[name].document

    def writer(self, schema_id: int, expected: str) -> Any:
        writer = self.by_id.get(schema_id)
        if writer is None:
            raise SchemaRefused(f"unknown schema id {schema_id}")
        if writer.name != expected:
            raise SchemaRefused(f"schema id {schema_id} is {writer.name}, expected {expected}")
        return writer.parsed

    def writer_id(self, name: str, topic: str | None) -> int:
        return self.current[name].schema_id
