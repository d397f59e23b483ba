"""A visit's changelog value, which is also how the state store holds a visit at rest.

    format byte (2) | varint: schema id of the embedded charge events | Avro VisitState

VisitState is one array, a `VisitLine` per charge in charge id order: the last decision the
charge published (or null), then its winning ChargeEvent as Avro `bytes`, written in the schema
whose id the prefix names. Each charge event is copied from the bytes it arrived in when those
are known, so an unchanged line is copied, not encoded again.

Restoring, expiring and indexing a visit need per charge only its id, its winning event
(event_id, occurred_at) and its publication. The first fields of a ChargeEvent are event_id,
event_type, occurred_at and charge_id, and each event's length is written before it, so those
read the head of each event and skip the rest (`read_lines`, `held_index`): no charge is
decoded until the visit is decided again. A charge event schema laid out otherwise is read in
full instead.

Values of earlier versions (0.1's JSON, format 1) are read by worker.state.visit_format_old.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import fastavro

from rules.charge import Charge, charge_from_avro, interned
from rules.model import DecisionStatus
from rules.visit import Ledger, Published, Visit, VisitKey
from worker.serde.avro_fast import EPOCH, compile_reader, compile_writer
from worker.serde.framing import EVENT, LocalRegistry
from worker.state.lines import (
    NAMESPACE,
    TYPES,
    LineRecord,
    PublishedRecord,
    held_index_of,
    published_schema,
)
from worker.state.visit_format_old import FORMAT_1, Format1, Json01, charge_writer
from worker.varints import read_long, read_small, varint

VISIT_FORMAT = 2  # the first byte of a visit's changelog value
Bodies = Callable[[Charge], bytes]  # a charge's Avro body (remembered, or encoded)
# The fields a value's charge event must start with for its head to be read alone.
HEAD = ("event_id", "event_type", "occurred_at", "charge_id")

_STATUSES = tuple(DecisionStatus)  # Avro enum order of Published.status
_LEDGERS = tuple(Ledger)
_HELD = _STATUSES.index(DecisionStatus.HELD)
_STATUS_BYTES = {s: varint(n) for n, s in enumerate(_STATUSES)}
_LEDGER_BYTES = {x: varint(n) for n, x in enumerate(_LEDGERS)}


def visit_state_schema() -> dict[str, Any]:
    """The Avro schema of a value after its prefix (the charges are `bytes` in their own)."""
    line = {
        "type": "record",
        "name": "VisitLine",
        "fields": [
            {"name": "published", "type": ["null", published_schema()]},
            {"name": "charge", "type": "bytes"},
        ],
    }
    return {
        "type": "record",
        "name": "VisitState",
        "namespace": NAMESPACE,
        "fields": [{"name": "lines", "type": {"type": "array", "items": line}}],
    }


def _head_laid_out(document: dict[str, Any]) -> bool:
    """Whether a charge event schema starts with HEAD as `_skim` reads it."""
    fields = document.get("fields", [])[: len(HEAD)]
    if tuple(f.get("name") for f in fields) != HEAD:
        return False
    types = [f["type"] if isinstance(f["type"], dict) else {"type": f["type"]} for f in fields]
    return (
        [t.get("type") for t in types] == ["string", "enum", "long", "string"]
        and types[2].get("logicalType") == "timestamp-millis"
        and len(types[1].get("symbols", ())) <= 64  # its index is one byte
    )


class VisitCodec:
    """Visits to and from their changelog values (generated code for our current charge
    schema; fastavro for a charge written under another)."""

    def __init__(self, registry: LocalRegistry | None = None) -> None:
        self.registry = registry or LocalRegistry()
        current = self.registry.current[EVENT]
        self._charge_id = current.schema_id
        self._prefix = bytes([VISIT_FORMAT]) + varint(current.schema_id)
        self._read_charge = compile_reader(current.document, TYPES)
        self._write_charge = compile_writer(current.document, TYPES)
        self._heads: dict[int, bool] = {}  # by schema id: its events' heads read alone
        # The earlier formats, by a value's first byte.
        self._older: dict[bytes, Json01 | Format1] = {
            b"{": Json01(),
            bytes([FORMAT_1]): Format1(self.registry),
        }

    def encode_charge(self, charge: Charge) -> bytes:
        return bytes(self._write_charge(charge, bytearray()))

    def encode(self, visit: Visit, body: Bodies | None = None) -> bytes:
        """`visit`'s value; `body` gives a charge's Avro body when one is at hand."""
        charges, published = visit.charges, visit.published
        out = bytearray(self._prefix)
        if charges:
            out += varint(len(charges))
            for cid in sorted(charges):  # the same visit always writes the same bytes
                p = published.get(cid)
                if p is None:
                    out.append(0)
                else:
                    out.append(2)
                    out += varint(p.version)
                    out += _STATUS_BYTES[p.status]
                    out += _LEDGER_BYTES[p.ledger]
                    out += varint(p.fingerprint)
                charge = charges[cid]
                event = body(charge) if body is not None else self.encode_charge(charge)
                out += varint(len(event))
                out += event
        out.append(0)
        return bytes(out)

    def decode(
        self, key: VisitKey, raw: bytes, remember: Callable[[Charge, bytes], None] | None = None
    ) -> Visit:
        """The whole visit; `remember(charge, body)` is told each charge's Avro body."""
        older = self._older.get(raw[:1])
        if older is not None:
            return older.decode(key, raw, remember)
        schema_id, i = self._header(raw)
        current = schema_id == self._charge_id
        charges: dict[str, Charge] = {}
        published: dict[str, Published] = {}
        for p, start, end in _lines(raw, i):
            if current:
                charge, stop = self._read_charge(raw, start)
                if stop != end:
                    raise ValueError("a charge event ends before or after its length")
                charge = interned(charge)
                if remember is not None:
                    remember(charge, raw[start:end])
            else:
                charge = self._resolved(schema_id, raw[start:end])
            charges[charge.charge_id] = charge
            if p is not None:
                published[charge.charge_id] = _published(p)
        return Visit(key, charges, published)

    def read_lines(self, raw: bytes) -> tuple[LineRecord, ...]:
        """The lines of a value: no charge decoded in full (ValueError when they do not read)."""
        older = self._older.get(raw[:1])
        if older is not None:
            return older.read_lines(raw)
        schema_id, i = self._header(raw)
        try:
            return self._line_records(schema_id, raw, i)
        except (IndexError, UnicodeDecodeError, OverflowError) as error:
            raise ValueError(f"visit lines do not read: {type(error).__name__}") from error

    def held_index(self, raw: bytes) -> list[tuple[str, dt.datetime | None]]:
        """Per line its charge id and, when its last decision is HELD, its winning event's
        time: all a restore needs (ValueError when the lines do not read)."""
        older = self._older.get(raw[:1])
        if older is not None:
            return held_index_of(older.read_lines(raw))
        schema_id, i = self._header(raw)
        try:
            if self._has_head(schema_id):
                return _skim(raw, i)
            return held_index_of(self._line_records(schema_id, raw, i))
        except (IndexError, UnicodeDecodeError, OverflowError) as error:
            raise ValueError(f"visit lines do not read: {type(error).__name__}") from error

    def _line_records(self, schema_id: int, raw: bytes, i: int) -> tuple[LineRecord, ...]:
        out = []
        for p, start, end in _lines(raw, i):
            event_id, millis, charge_id = self._head(schema_id, raw, start, end)
            record = None if p is None else PublishedRecord.of(_published(p))
            at = EPOCH + dt.timedelta(milliseconds=millis)
            out.append(LineRecord(charge_id, event_id, at, record))
        return tuple(out)

    def _header(self, raw: bytes) -> tuple[int, int]:
        if raw[:1] != bytes([VISIT_FORMAT]):
            raise ValueError(f"unknown visit format {raw[:1]!r}")
        schema_id, start = read_long(raw, 1)
        if schema_id != self._charge_id:
            charge_writer(self.registry, schema_id)
        return schema_id, start

    def _has_head(self, schema_id: int) -> bool:
        heads = self._heads.get(schema_id)
        if heads is None:
            heads = self._heads[schema_id] = _head_laid_out(self.registry.by_id[schema_id].document)
        return heads

    def _head(self, schema_id: int, raw: bytes, start: int, end: int) -> tuple[str, int, str]:
        """(event_id, occurred_at in ms, charge_id) of the charge event at raw[start:end]."""
        if not self._has_head(schema_id):
            charge = self._resolved(schema_id, raw[start:end])
            millis = (charge.occurred_at - EPOCH) // dt.timedelta(milliseconds=1)
            return charge.event_id, millis, charge.charge_id
        n, i = read_small(raw, start)
        event_id = raw[i : i + n].decode()
        _, i = read_small(raw, i + n)  # event_type
        millis, i = read_long(raw, i)
        m, i = read_small(raw, i)
        if n < 0 or m < 0 or i + m > end:
            raise ValueError("a charge event's head does not read")
        return event_id, millis, raw[i : i + m].decode()

    def _resolved(self, schema_id: int, body: bytes) -> Charge:
        """A charge event written under another of our charge schemas, resolved to ours."""
        writer = self.registry.by_id[schema_id]
        reader = self.registry.current[EVENT]
        record = fastavro.schemaless_reader(io.BytesIO(body), writer.parsed, reader.parsed)
        assert isinstance(record, dict)
        return charge_from_avro(record)


# (version, status index, ledger index, fingerprint) of a line's last publication.
_Raw = tuple[int, int, int, int]


def _lines(b: bytes, i: int) -> list[tuple[_Raw | None, int, int]]:
    """Per line of the VisitState at `i`: its publication, and where its charge event starts
    and ends. ValueError (or IndexError) when the value does not read to its end."""
    out: list[tuple[_Raw | None, int, int]] = []
    count, i = read_long(b, i)
    while count:
        if count < 0:  # a block with its byte size: not needed to read it
            count = -count
            _, i = read_long(b, i)
        for _ in range(count):
            branch, i = read_small(b, i)
            p: _Raw | None = None
            if branch == 1:
                version, i = read_small(b, i)
                status, i = read_small(b, i)
                ledger, i = read_small(b, i)
                fingerprint, i = read_long(b, i)
                if not (0 <= status < len(_STATUSES) and 0 <= ledger < len(_LEDGERS)):
                    raise ValueError("an enum index out of range in visit lines")
                p = (version, status, ledger, fingerprint)
            elif branch != 0:
                raise ValueError("bad union branch in visit lines")
            n, i = read_small(b, i)
            if n < 0:
                raise ValueError("negative length in visit lines")
            out.append((p, i, i + n))
            i += n
        count, i = read_long(b, i)
    if i != len(b):
        raise ValueError("the visit record ends before or after the value does")
    return out


def _skim(b: bytes, i: int) -> list[tuple[str, dt.datetime | None]]:
    """`held_index` of the VisitState at `i`, its events' heads in the HEAD layout: one pass,
    lengths and enums read inline, what is not needed (fingerprints, event ids, the times of
    lines not HELD, the rest of each event) skipped, not decoded."""
    out: list[tuple[str, dt.datetime | None]] = []
    count, i = read_long(b, i)
    while count:
        if count < 0:  # a block with its byte size
            count = -count
            _, i = read_long(b, i)
        for _ in range(count):
            branch, i = read_small(b, i)
            held = False
            if branch == 1:
                _, i = read_small(b, i)  # version
                status, i = read_small(b, i)
                held = status == _HELD
                i += 1  # ledger: an enum of two
                while b[i] & 0x80:  # fingerprint
                    i += 1
                i += 1
            elif branch != 0:
                raise ValueError("bad union branch in visit lines")
            n, i = read_long(b, i)  # the event's length
            end = i + n
            m, i = read_small(b, i)  # event_id: skipped
            if m < 0:
                raise ValueError("negative length in a charge event's head")
            i += m + 1  # event_type: an enum of few symbols, one byte
            if held:
                millis, i = read_long(b, i)
            else:
                while b[i] & 0x80:
                    i += 1
                i += 1
            m, i = read_small(b, i)
            if n < 0 or m < 0 or i + m > end:
                raise ValueError("a charge event's head does not read")
            at = EPOCH + dt.timedelta(milliseconds=millis) if held else None
            out.append((b[i : i + m].decode(), at))
            i = end
        count, i = read_long(b, i)
    if i != len(b):
        raise ValueError("the visit record ends before or after the value does")
    return out


def _published(p: _Raw) -> Published:
    version, status, ledger, fingerprint = p
    return Published(version, _STATUSES[status], _LEDGERS[ledger], fingerprint)


_DEFAULT: VisitCodec | None = None


def default_visit_codec() -> VisitCodec:
    """The visit codec over the schemas/ directory in use (built once: it compiles code)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = VisitCodec()
    return _DEFAULT
