"""Visit values of earlier versions, read only: each restores, and the visit is written anew in
the current format (worker.state.visit_format) the next time it changes.

- JSON (charge-capture 0.1), a value that starts with `{`: charges, seen event ids, published.
- Format 1: `0x01 | varint charge schema id | Avro VisitState1`, where VisitState1 is `lines`
  (per charge its id, winning event id and time, last publication) then `charges` (each
  ChargeEvent in full). It stored each charge id and event id twice; format 2 stores them once.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import fastavro
import msgspec

from rules.charge import Charge, charge_from_avro, charge_from_dict, interned
from rules.model import DecisionStatus
from rules.visit import Ledger, Published, Visit, VisitKey
from worker.serde.avro_fast import compile_reader
from worker.serde.framing import EVENT, LocalRegistry, RegisteredSchema
from worker.state.lines import NAMESPACE, TYPES, LineRecord, lines_of, published_schema
from worker.varints import read_long

FORMAT_1 = 1


def charge_writer(registry: LocalRegistry, schema_id: int) -> RegisteredSchema:
    """The charge event schema a value's prefix names (ValueError when it is none of ours)."""
    writer = registry.by_id.get(schema_id)
    if writer is None or writer.name != EVENT:
        raise ValueError(f"visit written with unknown charge schema id {schema_id}")
    return writer


class _Lines(msgspec.Struct, frozen=True, gc=False):
    lines: tuple[LineRecord, ...]


def _lines_schema() -> dict[str, Any]:
    line = {
        "type": "record",
        "name": "Line",
        "fields": [
            {"name": "charge_id", "type": "string"},
            {"name": "event_id", "type": "string"},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "published", "type": ["null", published_schema()]},
        ],
    }
    return {"name": "lines", "type": {"type": "array", "items": line}}


def _state_schema(charge_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "VisitState",
        "namespace": NAMESPACE,
        "fields": [
            _lines_schema(),
            {"name": "charges", "type": {"type": "array", "items": charge_schema}},
        ],
    }


class Format1:
    """Format 1 values, under a registry's charge event schemas."""

    def __init__(self, registry: LocalRegistry) -> None:
        self.registry = registry
        lines: dict[str, Any] = {"type": "record", "name": "VisitLines", "namespace": NAMESPACE}
        lines["fields"] = [_lines_schema()]
        self._read_lines = compile_reader(lines, {**TYPES, f"{NAMESPACE}.VisitLines": _Lines})
        # (writer, reader) state schemas, parsed once per charge schema id a value names.
        self._schemas: dict[int, tuple[Any, Any]] = {}

    def _writer(self, raw: bytes) -> tuple[int, int]:
        schema_id, start = read_long(raw, 1)
        charge_writer(self.registry, schema_id)
        return schema_id, start

    def read_lines(self, raw: bytes) -> tuple[LineRecord, ...]:
        _, start = self._writer(raw)
        try:
            record, _ = self._read_lines(raw, start)
        except (IndexError, UnicodeDecodeError, OverflowError) as error:
            raise ValueError(f"visit lines do not read: {type(error).__name__}") from error
        lines: tuple[LineRecord, ...] = record.lines
        return lines

    def decode(
        self, key: VisitKey, raw: bytes, remember: Callable[[Charge, bytes], None] | None = None
    ) -> Visit:
        """The whole visit, resolved to the current charge schema by fastavro (`remember` is
        told nothing: the bodies are the writer's, not the current schema's)."""
        schema_id, start = self._writer(raw)
        record = fastavro.schemaless_reader(io.BytesIO(raw[start:]), *self._parsed(schema_id))
        assert isinstance(record, dict)
        charges = [charge_from_avro(c) for c in record["charges"]]
        published = {}
        for line in record["lines"]:
            p = line["published"]
            if p is not None:
                published[line["charge_id"]] = Published(
                    p["version"], DecisionStatus(p["status"]), Ledger[p["ledger"]], p["fingerprint"]
                )
        return Visit(key, {c.charge_id: c for c in charges}, published)

    def _parsed(self, schema_id: int) -> tuple[Any, Any]:
        parsed = self._schemas.get(schema_id)
        if parsed is None:
            writer = self.registry.by_id[schema_id].document
            reader = self.registry.current[EVENT].document
            parsed = self._schemas[schema_id] = (
                fastavro.parse_schema(_state_schema(writer)),
                fastavro.parse_schema(_state_schema(reader)),
            )
        return parsed


class Json01:
    """JSON values of charge-capture 0.1 (small: read in full)."""

    def read_lines(self, raw: bytes) -> tuple[LineRecord, ...]:
        return lines_of(decode_json(VisitKey("", dt.date.min), raw))

    def decode(
        self, key: VisitKey, raw: bytes, remember: Callable[[Charge, bytes], None] | None = None
    ) -> Visit:
        return decode_json(key, raw)


def decode_json(key: VisitKey, raw: bytes) -> Visit:
    """A JSON visit of charge-capture 0.1."""
    try:
        data = json.loads(raw)
        charges = [interned(charge_from_dict(c)) for c in data["charges"]]
        # 0.1's fingerprints were hex digests of another encoding: kept as 64-bit numbers
        # they match no fingerprint computed now, so each line's next decision is published
        # as a new version even where it says the same (never a version reused).
        published = {
            cid: Published(
                version,
                DecisionStatus(status),
                Ledger(ledger),
                int.from_bytes(bytes.fromhex(digest)[:8], "big", signed=True),
            )
            for cid, (version, status, ledger, digest) in data["published"].items()
        }
    except (KeyError, TypeError, ValueError, msgspec.ValidationError) as error:
        raise ValueError(f"JSON visit does not read: {type(error).__name__}") from error
    return Visit(key, {c.charge_id: c for c in charges}, published)
