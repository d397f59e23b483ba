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
import json
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel

from rules.model import DecisionStatus
from rules.visit import Ledger, Published, VisitKey
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


# A partition holds many visits of each date of service: its keys share one date object each
# (32 bytes a visit, at rest).
_day = lru_cache(maxsize=4096)(dt.date.fromisoformat)


def visit_key_from_bytes(raw: bytes) -> VisitKey:
    patient, day = raw.decode().split("\x1f")
    return VisitKey(patient, _day(day))


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
