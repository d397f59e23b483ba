"""Confluent-framed Avro (magic 0, 4-byte big-endian schema id, Avro body) over schemas/.

Schema ids resolve through `schemas/registry.json`. Reading uses the writer schema the id names
and the reader schema of the same record in schemas/ (the newest registered file of that name),
so producers on an older compatible schema keep working.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import fastavro
from pydantic import ValidationError

from rules.model import ChargeDecision, ChargeEvent, DeadLetter, ErrorKind

MAGIC = 0
_HEADER = struct.Struct(">bI")


def default_schemas_dir() -> Path:
    """CHARGE_CAPTURE_SCHEMAS_DIR, else the checkout's schemas/, else the installed copy."""
    configured = os.environ.get("CHARGE_CAPTURE_SCHEMAS_DIR")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parent.parent / "schemas"
    if (checkout / "registry.json").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "charge-capture" / "schemas"


class UndecidableRecord(Exception):
    """An input record that can never be decided: it goes to the DLQ with its kind."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class RegisteredSchema:
    schema_id: int
    name: str  # full name, e.g. chargecapture.v1.ChargeEvent
    parsed: Any


class LocalRegistry:
    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or default_schemas_dir()
        mapping: dict[str, str] = json.loads((directory / "registry.json").read_text())
        self.by_id: dict[int, RegisteredSchema] = {}
        latest: dict[str, RegisteredSchema] = {}
        for key, filename in sorted(mapping.items(), key=lambda kv: int(kv[0])):
            raw = json.loads((directory / filename).read_text())
            name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
            entry = RegisteredSchema(int(key), name, fastavro.parse_schema(raw))
            self.by_id[entry.schema_id] = entry
            latest[name] = entry  # ids ascend: the last one of a name is its current version
        self.current = latest

    def writer_id(self, name: str) -> int:
        return self.current[name].schema_id

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        entry = self.current[name]
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC, entry.schema_id))
        fastavro.schemaless_writer(out, entry.parsed, record)
        return out.getvalue()

    def decode(self, data: bytes | None, expected: str) -> dict[str, Any]:
        if data is None or len(data) < _HEADER.size:
            raise UndecidableRecord(ErrorKind.DECODE, "value missing or shorter than the header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise UndecidableRecord(ErrorKind.DECODE, f"unknown magic byte {magic}")
        writer = self.by_id.get(schema_id)
        if writer is None:
            raise UndecidableRecord(ErrorKind.SCHEMA, f"unknown schema id {schema_id}")
        if writer.name != expected:
            raise UndecidableRecord(
                ErrorKind.SCHEMA, f"schema id {schema_id} is {writer.name}, expected {expected}"
            )
        body = io.BytesIO(data[_HEADER.size :])
        try:
            record = cast(
                dict[str, Any],
                fastavro.schemaless_reader(body, writer.parsed, self.current[expected].parsed),
            )
        except Exception as error:  # fastavro raises many types for corrupt bytes
            raise UndecidableRecord(
                ErrorKind.DECODE, f"Avro body does not decode: {type(error).__name__}"
            ) from error
        if body.tell() != len(data) - _HEADER.size:
            raise UndecidableRecord(ErrorKind.DECODE, "trailing bytes after the Avro record")
        return record


EVENT = "chargecapture.v1.ChargeEvent"
DECISION = "chargecapture.v1.ChargeDecision"
DEAD_LETTER = "chargecapture.v1.DeadLetter"


class Codec:
    """The three records of the data flow, framed."""

    def __init__(self, registry: LocalRegistry | None = None) -> None:
        self.registry = registry or LocalRegistry()

    def decode_event(self, value: bytes | None) -> ChargeEvent:
        record = self.registry.decode(value, EVENT)
        try:
            return ChargeEvent.model_validate(record)
        except ValidationError as error:
            raise UndecidableRecord(ErrorKind.VALIDATION, describe(error)) from error

    def encode_event(self, event: ChargeEvent) -> bytes:
        return self.registry.encode(EVENT, event.model_dump())

    def encode_decision(self, decision: ChargeDecision) -> bytes:
        return self.registry.encode(DECISION, decision.model_dump())

    def decode_decision(self, value: bytes) -> ChargeDecision:
        return ChargeDecision.model_validate(self.registry.decode(value, DECISION))

    def encode_dead_letter(self, letter: DeadLetter) -> bytes:
        return self.registry.encode(DEAD_LETTER, letter.model_dump())

    def decode_dead_letter(self, value: bytes) -> DeadLetter:
        return DeadLetter.model_validate(self.registry.decode(value, DEAD_LETTER))


def kafka_time(millis: int | None) -> dt.datetime | None:
    """A Kafka record timestamp as a UTC datetime; None when absent or outside the calendar."""
    if millis is None or millis < 0:
        return None
    try:
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):  # past year 9999: a broken producer clock
        return None


def dead_letter_for(record: Any, kind: ErrorKind, message: str) -> DeadLetter:
    """The DLQ record (DESIGN §3) for a consumed Kafka record that cannot be decided."""
    timestamp = kafka_time(record.timestamp) if record.timestamp else None
    return DeadLetter(
        key=record.key,
        value=record.value,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=timestamp,
        error_kind=kind,
        error_message=message,
    )


def describe(error: ValidationError) -> str:
    """Field path and problem for each error, never the offending value (it may be PHI)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
