"""The changelog: its record format, its headers and which records restoration keeps.

Keys: a visit is `patient_id US date_of_service` (US = \x1f, which a patient id never holds);
a retired charge is `NUL "retired" US charge_id`; the partition's metadata (event time and the
partition layout it was built under) is `NUL "partition-meta"`. A visit's value is Avro
(`VisitCodec`: a format byte, the embedded charge schema's id, a VisitState record); retired
charges and the metadata are small JSON. A tombstone (None) deletes the key.

Headers: every record carries the end offsets of every input partition the writing batch
consumed (`input-offset:<topic>`). Restoration skips a record when any of those offsets is at or
past the committed offset of that input partition: it belongs to a transaction that never
committed, which a broker without aborted-transaction filtering (Tansu) still shows.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro
import msgspec
from pydantic import BaseModel

from rules.charge import Charge, charge_from_avro, interned
from rules.model import DecisionStatus
from rules.visit import Ledger, Published, Visit, VisitKey
from worker.serde.avro_fast import compile_reader, compile_writer, read_long, varint
from worker.serde.framing import EVENT, LocalRegistry
from worker.serde.records import STRUCTS
from worker.state.retired import Retired

META_KEY = b"\x00partition-meta"
RETIRED_PREFIX = b"\x00retired\x1f"
OFFSET_HEADER_PREFIX = "input-offset:"


@dataclass(frozen=True)
class ChangelogWrite:
    key: bytes
    value: bytes | None  # None: tombstone
    # (topic, partition, offset) of the input records that changed this key in the batch: a
    # write the broker refuses (too large) is laid at their door.
    origins: tuple[tuple[str, int, int], ...] = ()


def visit_key_bytes(key: VisitKey) -> bytes:
    return f"{key.patient_id}\x1f{key.date_of_service.isoformat()}".encode()


def visit_key_from_bytes(raw: bytes) -> VisitKey:
    patient, day = raw.decode().split("\x1f")
    return VisitKey(patient, dt.date.fromisoformat(day))


class VisitStateRecord(msgspec.Struct, frozen=True, gc=False):
    """A visit as its changelog record stores it (Avro: `visit_state_schema`)."""

    charges: tuple[Charge, ...]  # by charge_id, so the same visit always writes the same bytes
    published: tuple[PublishedRecord, ...]


class PublishedRecord(msgspec.Struct, frozen=True, gc=False):
    charge_id: str
    version: int
    status: DecisionStatus
    ledger: Ledger
    fingerprint: int


VISIT_FORMAT = 1  # the first byte of a visit's changelog value


def visit_state_schema(charge_schema: dict[str, Any]) -> dict[str, Any]:
    """The changelog's visit record, embedding the charge event schema it was written with."""
    statuses = [s.value for s in DecisionStatus]
    return {
        "type": "record",
        "name": "VisitState",
        "namespace": "chargecapture.v1.state",
        "fields": [
            {"name": "charges", "type": {"type": "array", "items": charge_schema}},
            {
                "name": "published",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Published",
                        "fields": [
                            {"name": "charge_id", "type": "string"},
                            {"name": "version", "type": "int"},
                            {
                                "name": "status",
                                "type": {
                                    "type": "enum",
                                    "name": "DecisionStatus",
                                    "symbols": statuses,
                                },
                            },
                            {
                                "name": "ledger",
                                "type": {
                                    "type": "enum",
                                    "name": "Ledger",
                                    "symbols": [ledger.name for ledger in Ledger],
                                },
                            },
                            {"name": "fingerprint", "type": "long"},
                        ],
                    },
                },
            },
        ],
    }


class VisitCodec:
    """Visits to and from their changelog values: a format byte, the schema id of the
    embedded charge events, then the Avro VisitState (read and written by generated code for
    our current charge schema; by fastavro for one written under another)."""

    def __init__(self, registry: LocalRegistry | None = None) -> None:
        self.registry = registry or LocalRegistry()
        current = self.registry.current[EVENT]
        self._charge_id = current.schema_id
        self._prefix = bytes([VISIT_FORMAT]) + varint(current.schema_id)
        schema = visit_state_schema(current.document)
        types = {
            **STRUCTS,
            "chargecapture.v1.state.VisitState": VisitStateRecord,
            "chargecapture.v1.state.Published": PublishedRecord,
            "chargecapture.v1.state.DecisionStatus": DecisionStatus,
            "chargecapture.v1.state.Ledger": Ledger,
        }
        self._write = compile_writer(schema, types)
        self._read = compile_reader(schema, types)

    def encode(self, visit: Visit) -> bytes:
        record = VisitStateRecord(
            charges=tuple(visit.charges[cid] for cid in sorted(visit.charges)),
            published=tuple(
                PublishedRecord(
                    charge_id=cid,
                    version=p.version,
                    status=p.status,
                    ledger=p.ledger,
                    fingerprint=p.fingerprint,
                )
                for cid, p in sorted(visit.published.items())
            ),
        )
        return bytes(self._write(record, bytearray(self._prefix)))

    def decode(self, key: VisitKey, raw: bytes) -> Visit:
        if not raw or raw[0] != VISIT_FORMAT:
            raise ValueError(f"unknown visit format {raw[:1]!r}")
        charge_schema_id, start = read_long(raw, 1)
        if charge_schema_id != self._charge_id:
            return self._resolved(key, charge_schema_id, raw[start:])
        record, end = self._read(raw, start)
        if end != len(raw):
            raise ValueError("the visit record ends before or after the value does")
        return Visit(
            key,
            {c.charge_id: interned(c) for c in record.charges},
            {
                p.charge_id: Published(p.version, p.status, p.ledger, p.fingerprint)
                for p in record.published
            },
        )

    def _resolved(self, key: VisitKey, schema_id: int, body: bytes) -> Visit:
        """A visit written under an older charge schema, resolved to ours by fastavro."""
        writer = self.registry.by_id.get(schema_id)
        if writer is None or writer.name != EVENT:
            raise ValueError(f"visit written with unknown charge schema id {schema_id}")
        current = self.registry.current[EVENT]
        record = fastavro.schemaless_reader(
            io.BytesIO(body),
            fastavro.parse_schema(visit_state_schema(writer.document)),
            fastavro.parse_schema(visit_state_schema(current.document)),
        )
        assert isinstance(record, dict)
        charges = [charge_from_avro(c) for c in record["charges"]]
        return Visit(
            key,
            {c.charge_id: c for c in charges},
            {
                p["charge_id"]: Published(
                    p["version"], DecisionStatus(p["status"]), Ledger[p["ledger"]], p["fingerprint"]
                )
                for p in record["published"]
            },
        )


class RetiredRecord(BaseModel):
    """A `Retired` charge as its changelog record stores it."""

    published: tuple[int, DecisionStatus, Ledger, int]
    date_of_service: dt.date
    won_by: tuple[dt.datetime, str]


def encode_retired(retired: Retired) -> bytes:
    p = retired.published
    record = RetiredRecord.model_construct(
        published=(p.version, p.status, p.ledger, p.fingerprint),
        date_of_service=retired.date_of_service,
        won_by=retired.won_by,
    )
    return RetiredRecord.__pydantic_serializer__.to_json(record)


def decode_retired(raw: bytes) -> Retired:
    record = RetiredRecord.model_validate_json(raw)
    return Retired(Published(*record.published), record.date_of_service, record.won_by)


def encode_meta(watermark: dt.datetime | None, layout: str) -> bytes:
    mark = watermark.isoformat() if watermark else None
    return json.dumps({"watermark": mark, "layout": layout or None}).encode()


def decode_meta(raw: bytes | None) -> tuple[dt.datetime | None, str | None]:
    """(event time, layout) of a partition-meta record."""
    meta = json.loads(raw or b"{}")
    mark = meta.get("watermark")
    return (dt.datetime.fromisoformat(mark) if mark else None), meta.get("layout")


def offset_headers(end_offsets: dict[str, int]) -> list[tuple[str, bytes]]:
    return [(OFFSET_HEADER_PREFIX + topic, str(o).encode()) for topic, o in end_offsets.items()]


def is_committed(headers: list[tuple[str, bytes]], committed: dict[str, int]) -> bool:
    """True when every input offset the record carries is below that input's committed offset."""
    for name, raw in headers:
        if name.startswith(OFFSET_HEADER_PREFIX):
            topic = name[len(OFFSET_HEADER_PREFIX) :]
            if int(raw) >= committed.get(topic, 0):
                return False
    return True


_DEFAULT: VisitCodec | None = None


def default_visit_codec() -> VisitCodec:
    """The visit codec over the schemas/ directory in use (built once: it compiles code)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = VisitCodec()
    return _DEFAULT
