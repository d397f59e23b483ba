"""A visit's changelog value, which is also how the state store holds a visit at rest.

    format byte (1) | varint: schema id of the embedded charge events | Avro VisitState

VisitState is two arrays. `lines` comes first and is small: per charge its id, the identity of
its winning event (event_id, occurred_at) and the last decision it published. It is all that
restoring, expiring or indexing a visit needs, so those read it alone (`read_lines`) and never
decode a charge. `charges` holds each winning ChargeEvent in full, in the charge_event schema
whose id the prefix names; they are decoded only when the visit is decided again. Charges are
written from their Avro bodies when those are known (an input event's own bytes), so an
unchanged line is copied, not encoded again.

Values that start with `{` are the JSON visits of charge-capture 0.1 (charges, seen event ids,
published): they are read, so a changelog written by it restores, and written again in this
format the next time the visit changes.
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
from worker.serde.avro_fast import EPOCH, compile_reader, compile_writer, read_long, varint
from worker.serde.framing import EVENT, LocalRegistry
from worker.serde.records import STRUCTS

VISIT_FORMAT = 1  # the first byte of a visit's changelog value
NAMESPACE = "chargecapture.v1.state"


class PublishedRecord(msgspec.Struct, frozen=True, gc=False):
    version: int
    status: DecisionStatus
    ledger: Ledger
    fingerprint: int


class LineRecord(msgspec.Struct, frozen=True, gc=False):
    """One charge of a visit, without its content."""

    charge_id: str
    event_id: str  # of its winning event
    occurred_at: dt.datetime  # of its winning event
    published: PublishedRecord | None

    def as_published(self) -> Published | None:
        p = self.published
        return None if p is None else Published(p.version, p.status, p.ledger, p.fingerprint)


class _Lines(msgspec.Struct, frozen=True, gc=False):
    lines: tuple[LineRecord, ...]


def _lines_schema() -> dict[str, Any]:
    published = {
        "type": "record",
        "name": "Published",
        "fields": [
            {"name": "version", "type": "int"},
            {
                "name": "status",
                "type": {
                    "type": "enum",
                    "name": "DecisionStatus",
                    "symbols": [s.value for s in DecisionStatus],
                },
            },
            {
                "name": "ledger",
                "type": {"type": "enum", "name": "Ledger", "symbols": [x.name for x in Ledger]},
            },
            {"name": "fingerprint", "type": "long"},
        ],
    }
    line = {
        "type": "record",
        "name": "Line",
        "fields": [
            {"name": "charge_id", "type": "string"},
            {"name": "event_id", "type": "string"},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "published", "type": ["null", published]},
        ],
    }
    return {"name": "lines", "type": {"type": "array", "items": line}}


def visit_state_schema(charge_schema: dict[str, Any]) -> dict[str, Any]:
    """The whole VisitState record, embedding the charge event schema it was written with."""
    return {
        "type": "record",
        "name": "VisitState",
        "namespace": NAMESPACE,
        "fields": [
            _lines_schema(),
            {"name": "charges", "type": {"type": "array", "items": charge_schema}},
        ],
    }


_TYPES = {
    **STRUCTS,
    f"{NAMESPACE}.VisitLines": _Lines,
    f"{NAMESPACE}.Line": LineRecord,
    f"{NAMESPACE}.Published": PublishedRecord,
    f"{NAMESPACE}.DecisionStatus": DecisionStatus,
    f"{NAMESPACE}.Ledger": Ledger,
}
Bodies = Callable[[Charge], bytes]  # a charge's Avro body (remembered, or encoded)


class VisitCodec:
    """Visits to and from their changelog values (generated code for our current charge
    schema; fastavro for a value written under another)."""

    def __init__(self, registry: LocalRegistry | None = None) -> None:
        self.registry = registry or LocalRegistry()
        current = self.registry.current[EVENT]
        self._charge_id = current.schema_id
        self._prefix = bytes([VISIT_FORMAT]) + varint(current.schema_id)
        lines: dict[str, Any] = {"type": "record", "name": "VisitLines", "namespace": NAMESPACE}
        lines["fields"] = [_lines_schema()]
        self._write_lines = compile_writer(lines, _TYPES)
        self._read_lines = compile_reader(lines, _TYPES)
        self._read_charge = compile_reader(current.document, _TYPES)
        self._write_charge = compile_writer(current.document, _TYPES)

    def encode_charge(self, charge: Charge) -> bytes:
        return bytes(self._write_charge(charge, bytearray()))

    def encode(self, visit: Visit, body: Bodies | None = None) -> bytes:
        """`visit`'s value; `body` gives a charge's Avro body when one is at hand."""
        ids = sorted(visit.charges)  # the same visit always writes the same bytes
        charges = [visit.charges[cid] for cid in ids]
        out = self._write_lines(_Lines(lines=lines_of(visit)), bytearray(self._prefix))
        if charges:
            out += varint(len(charges))
            for charge in charges:
                out += body(charge) if body is not None else self.encode_charge(charge)
        out += b"\x00"
        return bytes(out)

    def read_lines(self, raw: bytes) -> tuple[LineRecord, ...]:
        """The `lines` of a value (ValueError when it does not read)."""
        if raw[:1] == b"{":
            return lines_of(_legacy(VisitKey("", dt.date.min), raw))
        start = self._charges_schema(raw)
        try:
            record, _ = self._read_lines(raw, start)
        except (IndexError, UnicodeDecodeError, OverflowError) as error:
            raise ValueError(f"visit lines do not read: {type(error).__name__}") from error
        lines: tuple[LineRecord, ...] = record.lines
        return lines

    def held_index(self, raw: bytes) -> list[tuple[str, dt.datetime | None]]:
        """Per line its charge id and, when its last decision is HELD, its winning event's
        time: all a restore needs. Reads the lines without building them (a restore is one
        pass over a partition's visits); ValueError when they do not read."""
        if raw[:1] == b"{":
            return [(x.charge_id, _held_at(x)) for x in self.read_lines(raw)]
        try:
            return _skim_lines(raw, self._charges_schema(raw))
        except (IndexError, UnicodeDecodeError) as error:
            raise ValueError(f"visit lines do not read: {type(error).__name__}") from error

    def decode(
        self, key: VisitKey, raw: bytes, remember: Callable[[Charge, bytes], None] | None = None
    ) -> Visit:
        """The whole visit; `remember(charge, body)` is told each charge's Avro body."""
        if raw[:1] == b"{":
            return _legacy(key, raw)
        schema_id, start = read_long(raw, 1) if raw[:1] == bytes([VISIT_FORMAT]) else (-1, 0)
        if schema_id != self._charge_id:
            return self._resolved(key, raw)
        record, i = self._read_lines(raw, start)
        count, i = read_long(raw, i)
        charges: dict[str, Charge] = {}
        while count:
            if count < 0:  # a block with its byte size: not needed to read it
                count = -count
                _, i = read_long(raw, i)
            for _ in range(count):
                charge, end = self._read_charge(raw, i)
                charge = interned(charge)
                if remember is not None:
                    remember(charge, raw[i:end])
                charges[charge.charge_id] = charge
                i = end
            count, i = read_long(raw, i)
        if i != len(raw):
            raise ValueError("the visit record ends before or after the value does")
        published = {
            line.charge_id: p for line in record.lines if (p := line.as_published()) is not None
        }
        return Visit(key, charges, published)

    def _charges_schema(self, raw: bytes) -> int:
        if raw[:1] != bytes([VISIT_FORMAT]):
            raise ValueError(f"unknown visit format {raw[:1]!r}")
        schema_id, start = read_long(raw, 1)
        if schema_id != self._charge_id and self.registry.by_id.get(schema_id) is None:
            raise ValueError(f"visit written with unknown charge schema id {schema_id}")
        return start

    def _resolved(self, key: VisitKey, raw: bytes) -> Visit:
        """A visit written under an older charge schema, resolved to ours by fastavro."""
        start = self._charges_schema(raw)
        schema_id, _ = read_long(raw, 1)
        writer = self.registry.by_id[schema_id]
        if writer.name != EVENT:
            raise ValueError(f"visit written with charge schema id {schema_id} of {writer.name}")
        current = self.registry.current[EVENT]
        record = fastavro.schemaless_reader(
            io.BytesIO(raw[start:]),
            fastavro.parse_schema(visit_state_schema(writer.document)),
            fastavro.parse_schema(visit_state_schema(current.document)),
        )
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


_HELD = list(DecisionStatus).index(DecisionStatus.HELD)  # its index in the Avro enum


def _held_at(line: LineRecord) -> dt.datetime | None:
    p = line.published
    return line.occurred_at if p is not None and p.status == DecisionStatus.HELD else None


def _skim_lines(b: bytes, i: int) -> list[tuple[str, dt.datetime | None]]:
    """`held_index` of the lines array at `i` (the layout of `_lines_schema`). Lengths,
    branches and enums are one byte in practice: read inline, `read_long` past that."""
    out: list[tuple[str, dt.datetime | None]] = []
    count, i = read_long(b, i)
    while count:
        if count < 0:  # a block with its byte size
            count = -count
            _, i = read_long(b, i)
        for _ in range(count):
            n, i = _small(b, i)
            charge_id = b[i : i + n].decode()
            m, i = _small(b, i + n)
            if n < 0 or m < 0:
                raise ValueError("negative length in visit lines")
            millis, i = read_long(b, i + m)  # after event_id
            branch, i = _small(b, i)
            held = None
            if branch == 1:
                _, i = _small(b, i)  # version
                status, i = _small(b, i)
                i += 1  # ledger: an enum of two
                while b[i] & 0x80:  # fingerprint: skipped, not decoded
                    i += 1
                i += 1
                if status == _HELD:
                    held = EPOCH + dt.timedelta(milliseconds=millis)
            elif branch != 0:
                raise ValueError("bad union branch in visit lines")
            out.append((charge_id, held))
        count, i = read_long(b, i)
    if i > len(b):
        raise ValueError("visit lines end past the value")
    return out


def _small(b: bytes, i: int) -> tuple[int, int]:
    c = b[i]
    if c < 0x80:
        return (c >> 1) ^ -(c & 1), i + 1
    return read_long(b, i)


def lines_of(visit: Visit) -> tuple[LineRecord, ...]:
    """A visit's lines, by charge id."""
    charges, published = visit.charges, visit.published
    return tuple(
        LineRecord(
            charge_id=cid,
            event_id=(c := charges[cid]).event_id,
            occurred_at=c.occurred_at,
            published=_record(published.get(cid)),
        )
        for cid in sorted(charges)
    )


def _legacy(key: VisitKey, raw: bytes) -> Visit:
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


def _record(published: Published | None) -> PublishedRecord | None:
    if published is None:
        return None
    return PublishedRecord(
        version=published.version,
        status=published.status,
        ledger=published.ledger,
        fingerprint=published.fingerprint,
    )


_DEFAULT: VisitCodec | None = None


def default_visit_codec() -> VisitCodec:
    """The visit codec over the schemas/ directory in use (built once: it compiles code)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = VisitCodec()
    return _DEFAULT
