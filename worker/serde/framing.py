"""Confluent-framed Avro (magic 0, 4-byte big-endian schema id, Avro body) over schemas/.

Schema ids resolve through `schemas/registry.json` (a JSON object: schema id as a string ->
file name in schemas/). Reading uses the writer schema the id names and the reader schema of the
same record in schemas/ (the newest registered file of that name), so producers on an older
compatible schema keep working.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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


@dataclass(frozen=True)
class RegisteredSchema:
    schema_id: int
    name: str  # full name, e.g. chargecapture.v1.ChargeEvent
    parsed: Any  # fastavro's parsed form
    document: dict[str, Any]  # the schema as written


class LocalRegistry:
    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or default_schemas_dir()
        mapping: dict[str, str] = json.loads((directory / "registry.json").read_text())
        self.by_id: dict[int, RegisteredSchema] = {}
        latest: dict[str, RegisteredSchema] = {}
        for key, filename in sorted(mapping.items(), key=lambda kv: int(kv[0])):
            raw = json.loads((directory / filename).read_text())
            name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
            entry = RegisteredSchema(int(key), name, fastavro.parse_schema(raw), raw)
            self.by_id[entry.schema_id] = entry
            latest[name] = entry  # ids ascend: the last one of a name is its current version
        self.current = latest

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        entry = self.current[name]
        out = io.BytesIO()
        out.write(HEADER.pack(MAGIC, entry.schema_id))
        fastavro.schemaless_writer(out, entry.parsed, record)
        return out.getvalue()

    def decode(self, data: bytes | None, expected: str) -> dict[str, Any]:
        if data is None or len(data) < HEADER.size:
            raise UndecidableRecord(ErrorKind.DECODE, "value missing or shorter than the header")
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise UndecidableRecord(ErrorKind.DECODE, f"unknown magic byte {magic}")
        writer = self.by_id.get(schema_id)
        if writer is None:
            raise UndecidableRecord(ErrorKind.SCHEMA, f"unknown schema id {schema_id}")
        if writer.name != expected:
            raise UndecidableRecord(
                ErrorKind.SCHEMA, f"schema id {schema_id} is {writer.name}, expected {expected}"
            )
        body = io.BytesIO(data[HEADER.size :])
        try:
            record = cast(
                dict[str, Any],
                fastavro.schemaless_reader(body, writer.parsed, self.current[expected].parsed),
            )
        except Exception as error:  # fastavro raises many types for corrupt bytes
            raise UndecidableRecord(
                ErrorKind.DECODE, f"Avro body does not decode: {type(error).__name__}"
            ) from error
        if body.tell() != len(data) - HEADER.size:
            raise UndecidableRecord(ErrorKind.DECODE, "trailing bytes after the Avro record")
        return record
