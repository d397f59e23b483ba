"""Per-partition visit state, its changelog records and event-time retention (DESIGN §5).

One `PartitionState` per partition number: the input partition p and the repartition topic's
partition p feed the same patients, so they share it, and it is logged to changelog partition p.

Changelog records carry, in headers, the end offsets of every input partition the writing batch
consumed. Restoration skips a record when any of those offsets is at or past the committed
offset of that input partition: it belongs to a transaction that never committed, which a
broker without aborted-transaction filtering (Tansu) still shows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from rules.model import ChargeEvent, DecisionSource, DecisionStatus
from rules.pack import PackSet
from rules.visit import Ledger, Publication, Published, Visit, VisitBook, VisitKey

META_KEY = b"\x00partition-meta"
OFFSET_HEADER_PREFIX = "input-offset:"
EXPIRED_FLAG = "VISIT_STATE_EXPIRED"


def visit_key_bytes(key: VisitKey) -> bytes:
    return f"{key.patient_id}\x1f{key.date_of_service.isoformat()}".encode()


def visit_key_from_bytes(raw: bytes) -> VisitKey:
    patient, day = raw.decode().split("\x1f")
    return VisitKey(patient, dt.date.fromisoformat(day))


class VisitSnapshot(BaseModel):
    """A visit as its changelog record stores it (JSON; serialized by pydantic-core)."""

    charges: list[ChargeEvent]
    seen: list[str]  # sorted, so the same visit always writes the same bytes
    published: dict[str, tuple[int, DecisionStatus, Ledger, str]]


def encode_visit(visit: Visit) -> bytes:
    # Every part is already validated: construct without validating again.
    snapshot = VisitSnapshot.model_construct(
        charges=list(visit.charges.values()),
        seen=sorted(visit.seen_event_ids),
        published={
            cid: (p.version, p.status, p.ledger, p.fingerprint)
            for cid, p in visit.published.items()
        },
    )
    return VisitSnapshot.__pydantic_serializer__.to_json(snapshot)


def decode_visit(key: VisitKey, raw: bytes) -> Visit:
    snapshot = VisitSnapshot.model_validate_json(raw)
    return Visit(
        key=key,
        charges={c.charge_id: c for c in snapshot.charges},
        seen_event_ids=set(snapshot.seen),
        published={
            cid: Published(version, status, ledger, digest)
            for cid, (version, status, ledger, digest) in snapshot.published.items()
        },
    )


@dataclass(frozen=True)
class ChangelogWrite:
    key: bytes
    value: bytes | None  # None: tombstone


@dataclass
class PartitionState:
    partition: int
    retention: dt.timedelta
    book: VisitBook = field(default_factory=VisitBook)
    watermark: dt.datetime | None = None  # highest occurred_at seen: event time, never wall
    dirty: set[VisitKey] = field(default_factory=set)
    expired: set[VisitKey] = field(default_factory=set)  # to tombstone at the next flush

    # -- event time -------------------------------------------------------------------------

    def observe(self, event: ChargeEvent) -> None:
        if self.watermark is None or event.occurred_at > self.watermark:
            self.watermark = event.occurred_at

    def is_expired(self, key: VisitKey) -> bool:
        if self.watermark is None:
            return False
        return key.date_of_service + self.retention < self.watermark.date()

    def expire_if_due(self, key: VisitKey) -> bool:
        """Drop an expired visit before it is touched; True when the event is for one.

        Lazy per-event expiry gives the same decisions whatever the batch boundaries: once the
        watermark passes a visit's retention, every later event sees it as expired.
        """
        if not self.is_expired(key):
            return False
        if self.book.drop_visit(key) is not None:
            self.expired.add(key)
        return True

    def sweep(self) -> None:
        """Expire every visit past retention (keeps memory bounded between events)."""
        for key in [k for k in self.book.visits if self.is_expired(k)]:
            self.book.drop_visit(key)
            self.expired.add(key)

    # -- deciding ----------------------------------------------------------------------------

    def decide(
        self, event: ChargeEvent, source: DecisionSource, packs: PackSet
    ) -> list[Publication]:
        """Fold one event into its visit and return the decisions that changed.

        The one place the live worker and replay decide an event, so both agree.
        """
        self.observe(event)
        key = VisitKey.of(event)
        expired = self.expire_if_due(key)
        flags = (EXPIRED_FLAG,) if expired else ()
        # A visit rebuilt after expiry numbers its decisions above any it published before.
        first_version = int(event.occurred_at.timestamp()) if expired else 1
        out: list[Publication] = []
        for visit_key in self.book.apply(event):
            visit = self.book.visits[visit_key]
            pack = packs.for_date(visit_key.date_of_service)
            out += visit.publish_changes(pack, source, flags, first_version)
            self.dirty.add(visit_key)
        if expired:
            self.expire_if_due(key)
        return out

    # -- changelog --------------------------------------------------------------------------

    def take_writes(self) -> Iterator[ChangelogWrite]:
        for key in sorted(self.dirty | self.expired):
            visit = None if key in self.expired else self.book.visits.get(key)
            raw = visit_key_bytes(key)
            yield ChangelogWrite(raw, encode_visit(visit) if visit is not None else None)
        self.dirty.clear()
        self.expired.clear()
        yield ChangelogWrite(META_KEY, self._encode_meta())

    def _encode_meta(self) -> bytes:
        mark = self.watermark.isoformat() if self.watermark else None
        return json.dumps({"watermark": mark}).encode()

    def restore(self, key: bytes, value: bytes | None) -> None:
        if key == META_KEY:
            mark = json.loads(value or b"{}").get("watermark")
            self.watermark = dt.datetime.fromisoformat(mark) if mark else None
            return
        visit_key = visit_key_from_bytes(key)
        self.book.drop_visit(visit_key)
        if value is not None:
            self.book.add_visit(decode_visit(visit_key, value))


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
