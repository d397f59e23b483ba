"""The three records of the data flow as framed Avro: charge events, decisions, dead letters.

One Codec class for the whole worker, over a SchemaSource (worker.serde.framing): the local
schemas/registry.json by default, or a Confluent Schema Registry (worker.serde.registry_source).
The per-record path is the same for both and asks the source nothing once an id is known: one
dict lookup per record for the writer/reader pair of its id, one for the frame of what is
written. A writer schema that equals our reader is read without schema resolution, one that
only adds or lacks top-level fields with a projection (worker.serde.projection).

The hot path: an event written under our own charge_event schema (whatever its id) is read
straight into a Charge by generated code, and its Avro body is kept, so a decision that bills
it unchanged splices it in; decisions are written by generated code too
(worker.serde.records). Other writers are decoded by fastavro and validated into a Charge.
Cold paths (readers of the output topics, dead letters, tools) use fastavro and the pydantic
contract models.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import fastavro
import msgspec

from rules.charge import Charge, Decision, charge_from_avro, describe_invalid
from rules.model import ChargeDecision, ChargeEvent, DeadLetter, ErrorKind
from worker.errors import UndecidableRecord
from worker.serde.framing import (
    DEAD_LETTER,
    DECISION,
    EVENT,
    HEADER,
    MAGIC,
    LocalRegistry,
    SchemaRefused,
    SchemaSource,
)
from worker.serde.projection import Projection, projection
from worker.serde.records import DecisionWriter, EventReader, charge_writer

# (writer schema, reader schema or None, projection or None): fastavro's two arguments, and
# what turns the writer's record into ours when fastavro need not resolve (serde.projection)
Readers = tuple[Any, Any, Projection | None]
# Refused (id, expected record) pairs kept; a stream of garbage ids must not grow it without end
_MAX_REFUSED = 10_000


class Decoded(NamedTuple):
    charge: Charge
    body: bytes | None  # its Avro body under our current schema, when it was written so


class Codec:
    """The three records of the data flow, framed."""

    def __init__(self, source: SchemaSource | None = None) -> None:
        self.source: SchemaSource = source or LocalRegistry()
        self._readers: dict[str, dict[int, Readers]] = {EVENT: {}, DECISION: {}, DEAD_LETTER: {}}
        self._events = self._readers[EVENT]
        # (schema id, expected record) -> (why, monotonic time it may be asked again or None)
        self._refused: dict[tuple[int, str], tuple[str, float | None]] = {}
        self._frames: dict[tuple[str, str | None], tuple[bytes, Any]] = {}
        # Generated code for our own schemas (the reader documents of schemas/).
        event, decision = self.source.document(EVENT), self.source.document(DECISION)
        self._read_event = EventReader(event)
        self._write_charge = charge_writer(event)
        self._write_decision = DecisionWriter(decision, self._write_charge)
        self._ours: set[int] = set()  # event schema ids whose writer is our own schema

    def open(self) -> None:
        """Resolve the ids of what will be written, check what will be read (a registry's
        work, once, at start: SchemaSource.open)."""
        self.source.open()

    def close(self) -> None:
        self.source.close()

    # -- the records -------------------------------------------------------------------------

    def decode_event(self, value: bytes | None) -> Charge:
        """A validated Charge; UndecidableRecord (DECODE, SCHEMA or VALIDATION) otherwise."""
        return self.read_event(value).charge

    def read_event(self, value: bytes | None) -> Decoded:
        """`decode_event`, and the event's Avro body when it was written under our schema."""
        if (
            value is not None
            and len(value) > HEADER.size
            and value[0] == MAGIC
            and int.from_bytes(value[1 : HEADER.size], "big") in self._ours
        ):
            body = value[HEADER.size :]
            try:
                return Decoded(self._read_event(body), body)
            except msgspec.ValidationError as error:
                raise UndecidableRecord(ErrorKind.VALIDATION, describe_invalid(error)) from error
            except (ValueError, IndexError, OverflowError, UnicodeDecodeError) as error:
                raise UndecidableRecord(
                    ErrorKind.DECODE, f"Avro body does not decode: {type(error).__name__}"
                ) from error
        record = self._decode(value, self._events, EVENT)  # first sight, or another writer
        try:
            charge = charge_from_avro(record)
        except msgspec.ValidationError as error:
            raise UndecidableRecord(ErrorKind.VALIDATION, describe_invalid(error)) from error
        return Decoded(charge, None)

    def encode_charge(self, charge: Charge) -> bytes:
        """A Charge's Avro body under our current schema."""
        return bytes(self._write_charge(charge, bytearray()))

    def encode_event(self, event: ChargeEvent | Charge, topic: str | None = None) -> bytes:
        if isinstance(event, Charge):
            return self._frame_of(EVENT, topic) + self.encode_charge(event)
        return self.encode(EVENT, event.model_dump(), topic)

    def encode_decision(
        self, decision: Decision, charge_body: bytes | None = None, topic: str | None = None
    ) -> bytes:
        """Framed for `topic`; `charge_body`: the billed charge's Avro body, when at hand."""
        out = bytearray(self._frame_of(DECISION, topic))
        self._write_decision(decision, out, charge_body)
        return bytes(out)

    def decode_decision(self, value: bytes) -> ChargeDecision:
        return ChargeDecision.model_validate(self.decode(value, DECISION))

    def encode_dead_letter(self, letter: DeadLetter, topic: str | None = None) -> bytes:
        return self.encode(DEAD_LETTER, letter.model_dump(), topic)

    def decode_dead_letter(self, value: bytes) -> DeadLetter:
        return DeadLetter.model_validate(self.decode(value, DEAD_LETTER))

    # -- framed Avro dicts -------------------------------------------------------------------

    def encode(self, name: str, record: dict[str, Any], topic: str | None = None) -> bytes:
        """`record` as our schema `name`, framed with its id on `topic` (a registry's ids are
        per subject, i.e. per topic; the local ones are the same everywhere)."""
        frame = self._frames.get((name, topic))
        if frame is None:
            frame = self._frame(name, topic)
        out = io.BytesIO()
        out.write(frame[0])
        fastavro.schemaless_writer(out, frame[1], record)
        return out.getvalue()

    def decode(self, value: bytes | None, expected: str) -> dict[str, Any]:
        """The Avro dict of a framed `expected` record, resolved to our reader schema."""
        return self._decode(value, self._readers[expected], expected)

    def _decode(
        self, data: bytes | None, readers: dict[int, Readers], expected: str
    ) -> dict[str, Any]:
        if data is None or len(data) < HEADER.size:
            raise UndecidableRecord(ErrorKind.DECODE, "value missing or shorter than the header")
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise UndecidableRecord(ErrorKind.DECODE, f"unknown magic byte {magic}")
        pair = readers.get(schema_id)
        if pair is None:
            pair = self._resolve(schema_id, expected, readers)
        body = io.BytesIO(data[HEADER.size :])
        try:
            record = cast(dict[str, Any], fastavro.schemaless_reader(body, pair[0], pair[1]))
        except Exception as error:  # fastavro raises many types for corrupt bytes
            raise UndecidableRecord(
                ErrorKind.DECODE, f"Avro body does not decode: {type(error).__name__}"
            ) from error
        if body.tell() != len(data) - HEADER.size:
            raise UndecidableRecord(ErrorKind.DECODE, "trailing bytes after the Avro record")
        if pair[2] is not None:
            pair[2](record)
        return record

    # -- asking the source (once per id) ----------------------------------------------------

    def prefetch(self, values: Iterable[bytes | None]) -> None:
        """Ask the source now for the writer schemas of event ids not seen yet (a remote
        source only), so that deciding the records asks it nothing.

        The live worker and replay call this before deciding a batch: a SchemaUnavailable
        raised here leaves nothing of the batch decided or sent. An id the source refuses is
        remembered and its records dead-lettered when decoded; one refused as not known yet is
        asked again here (never while decoding) once its retry time has come.
        """
        if not self.source.remote:
            return
        known, refused = self._events, self._refused
        now = time.monotonic()
        for value in values:
            if value is None or len(value) < HEADER.size or value[0] != MAGIC:
                continue
            schema_id = int.from_bytes(value[1 : HEADER.size], "big")
            if schema_id in known:
                continue
            why = refused.get((schema_id, EVENT))
            if why is not None:
                if why[1] is None or now < why[1]:
                    continue
                del refused[(schema_id, EVENT)]
            try:
                self._resolve(schema_id, EVENT, known)
            except SchemaRefused:
                continue  # remembered: its records are dead-lettered when decoded

    def _resolve(self, schema_id: int, expected: str, readers: dict[int, Readers]) -> Readers:
        why = self._refused.get((schema_id, expected))
        if why is not None:
            raise SchemaRefused(why[0])
        try:
            writer = self.source.writer(schema_id, expected)
        except SchemaRefused as refused:
            if len(self._refused) >= _MAX_REFUSED:
                self._refused.clear()
            again = refused.retry_after_s
            retry_at = None if again is None else time.monotonic() + again
            self._refused[(schema_id, expected)] = (refused.message, retry_at)
            raise
        reader = self.source.reader(expected)
        # Our own schema (the local id, or ours as the registry returns it) needs no
        # resolution; comparing here once saves fastavro a deep comparison per record.
        pair: Readers = (reader, None, None)
        if not (writer is reader or writer == reader):
            shortcut = projection(writer, reader)
            pair = (writer, None, shortcut) if shortcut is not None else (writer, reader, None)
        elif expected == EVENT:
            self._ours.add(schema_id)  # from now on read by the generated reader
        readers[schema_id] = pair
        return pair

    def _frame_of(self, name: str, topic: str | None) -> bytes:
        frame = self._frames.get((name, topic))
        return (frame if frame is not None else self._frame(name, topic))[0]

    def _frame(self, name: str, topic: str | None) -> tuple[bytes, Any]:
        frame = (HEADER.pack(MAGIC, self.source.writer_id(name, topic)), self.source.reader(name))
        self._frames[(name, topic)] = frame
        return frame


def decision_json(decision: Decision) -> str:
    """A decision as one JSON line (replay's file output): msgspec's field order and ISO-8601
    times, readable by the pydantic ChargeDecision."""
    return msgspec.json.encode(decision).decode()
