"""Per-partition visit state, its changelog records and event-time retention (DESIGN §5).

One `PartitionState` per partition number: the input partition p and the repartition topic's
partition p feed the same patients, so they share it, and it is logged to changelog partition p.

Changelog records carry, in headers, the end offsets of every input partition the writing batch
consumed. Restoration skips a record when any of those offsets is at or past the committed
offset of that input partition: it belongs to a transaction that never committed, which a
broker without aborted-transaction filtering (Tansu) still shows.

When a visit expires, each of its charges leaves a small `Retired` record (its last decision's
version, status, ledger and the event that decided it), kept for `version_memory` after the
later of that event and its date of service, so a later event for the charge continues its
decision_version instead of starting again at 1 (DESIGN §3: never two different records for one
charge_id and version). An event whose date of service is older than that memory cannot be
versioned safely and is dead-lettered.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka.partitioner.default import murmur2
from pydantic import BaseModel

from rules.model import ChargeEvent, DecisionSource, DecisionStatus, ErrorKind
from rules.pack import PackSet
from rules.visit import Ledger, Publication, Published, Visit, VisitBook, VisitKey
from worker.serde import UndecidableRecord, kafka_time

META_KEY = b"\x00partition-meta"
RETIRED_PREFIX = b"\x00retired\x1f"
OFFSET_HEADER_PREFIX = "input-offset:"
EXPIRED_FLAG = "VISIT_STATE_EXPIRED"
# How far past its Kafka record timestamp an event's occurred_at may be: room for clock skew
# between source and producer, none for a mistyped year (which would win every later edit).
FUTURE_SKEW = dt.timedelta(days=1)


@functools.lru_cache(maxsize=65536)
def home_partition(patient_key: bytes, partitions: int, partitioner: str = "murmur2") -> int:
    """The partition whose state holds a patient: where the producers of the input topic put
    the key. `murmur2`: the Java client's and kafka-python's default partitioner; `crc32`:
    librdkafka's `consistent`/`consistent_random` (confluent-kafka, the default there)."""
    if partitioner == "crc32":
        return zlib.crc32(patient_key) % partitions
    hashed: int = murmur2(patient_key)
    return (hashed & 0x7FFFFFFF) % partitions


def record_time(record: Any) -> dt.datetime | None:
    """A consumed Kafka record's timestamp (None when the broker gives none)."""
    return kafka_time(record.timestamp)


def _later_than(moment: dt.datetime, reference: dt.datetime, margin: dt.timedelta) -> bool:
    try:
        return moment - margin > reference
    except OverflowError:  # within `margin` of year 1: not later than anything
        return False


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


class LayoutChanged(Exception):
    """The changelog was written under another partitioner or partition count."""


@dataclass(frozen=True)
class ChangelogWrite:
    key: bytes
    value: bytes | None  # None: tombstone


class RetiredRecord(BaseModel):
    """A `Retired` charge as its changelog record stores it."""

    published: tuple[int, DecisionStatus, Ledger, str]
    date_of_service: dt.date
    won_by: tuple[dt.datetime, str]


@dataclass(frozen=True, slots=True)
class Retired:
    """What is kept of a charge once its visit expired."""

    published: Published
    date_of_service: dt.date
    won_by: tuple[dt.datetime, str]  # (occurred_at, event_id) of the event it was decided on

    @property
    def last_seen(self) -> dt.date:
        """The later of its last event and its date of service: the memory counts from here
        (an occurred_at before the date of service is a fixable hold, not a reason to forget)."""
        return max(self.won_by[0].date(), self.date_of_service)

    def encode(self) -> bytes:
        p = self.published
        record = RetiredRecord.model_construct(
            published=(p.version, p.status, p.ledger, p.fingerprint),
            date_of_service=self.date_of_service,
            won_by=self.won_by,
        )
        return RetiredRecord.__pydantic_serializer__.to_json(record)

    @classmethod
    def decode(cls, raw: bytes) -> Retired:
        record = RetiredRecord.model_validate_json(raw)
        return cls(Published(*record.published), record.date_of_service, record.won_by)


@dataclass
class PartitionState:
    partition: int
    retention: dt.timedelta
    version_memory: dt.timedelta = dt.timedelta(days=400)
    book: VisitBook = field(default_factory=VisitBook)
    watermark: dt.datetime | None = None  # this partition's event time, never the wall clock
    retired: dict[str, Retired] = field(default_factory=dict)  # by charge_id
    dirty: set[VisitKey] = field(default_factory=set)
    expired: set[VisitKey] = field(default_factory=set)  # to tombstone at the next flush
    retired_changed: set[str] = field(default_factory=set)  # charge ids to write or tombstone
    # How patients were placed on partitions, e.g. "murmur2/6": state built under one layout
    # is wrong under another, so the changelog records it and restoration checks it.
    layout: str = ""

    # -- event time -------------------------------------------------------------------------

    def observe(self, event: ChargeEvent, rekeyed: bool) -> None:
        """Advance event time: the highest occurred_at of this partition's own input events.

        A re-keyed event (from another input partition) does not move the clock: where it falls
        among this partition's events is arrival timing, which a replay cannot reproduce.
        """
        if rekeyed:
            return
        if self.watermark is None or event.occurred_at > self.watermark:
            self.watermark = event.occurred_at

    def _older_than(self, day: dt.date, span: dt.timedelta) -> bool:
        if self.watermark is None:
            return False
        try:
            return day + span < self.watermark.date()
        except OverflowError:  # within `span` of the calendar's end (9999-12-31): not old
            return False

    def is_expired(self, key: VisitKey) -> bool:
        return self._older_than(key.date_of_service, self.retention)

    def expire_if_due(self, key: VisitKey) -> bool:
        """Retire an expired visit before it is touched; True when `key` is expired.

        Lazy per-event expiry gives the same decisions whatever the batch boundaries: once the
        watermark passes a visit's retention, every later event sees it as expired.
        """
        if not self.is_expired(key):
            return False
        self._retire(key)
        return True

    def _retire(self, key: VisitKey) -> None:
        visit = self.book.drop_visit(key)
        if visit is None:
            return
        self.expired.add(key)
        for charge_id, published in visit.published.items():
            event = visit.charges[charge_id]
            won_by = (event.occurred_at, event.event_id)
            self.retired[charge_id] = Retired(published, key.date_of_service, won_by)
            self.retired_changed.add(charge_id)

    def _history(self, event: ChargeEvent) -> Retired | None:
        """The retired record a charge that no live visit holds resumes from, if any."""
        if event.charge_id in self.book.home:
            return None
        retired = self.retired.get(event.charge_id)
        if retired is None or self._forgotten(retired):
            return None  # the same whether or not a sweep dropped it yet
        return retired

    def _forgotten(self, retired: Retired) -> bool:
        return self._older_than(retired.last_seen, self.version_memory)

    def sweep(self) -> None:
        """Expire every visit past retention and forget retired charges past the version
        memory (keeps memory bounded between events)."""
        for key in [k for k in self.book.visits if self.is_expired(k)]:
            self._retire(key)
        for charge_id, retired in list(self.retired.items()):
            if self._forgotten(retired):
                del self.retired[charge_id]
                self.retired_changed.add(charge_id)

    # -- deciding ----------------------------------------------------------------------------

    def decide(
        self,
        event: ChargeEvent,
        source: DecisionSource,
        packs: PackSet,
        *,
        record_time: dt.datetime | None = None,
        rekeyed: bool = False,
    ) -> list[Publication]:
        """Fold one event into its visit and return the decisions that changed.

        The one place the live worker and replay decide an event, so both agree. Raises
        UndecidableRecord for an occurred_at after its record was produced and for a date of
        service beyond the version memory.
        """
        if record_time is not None and _later_than(event.occurred_at, record_time, FUTURE_SKEW):
            raise UndecidableRecord(
                ErrorKind.VALIDATION,
                "occurred_at is more than a day after the record was produced (its Kafka "
                "timestamp): the capture time is wrong; correct it and send the event again",
            )
        self.observe(event, rekeyed)
        key = VisitKey.of(event)
        if self._older_than(key.date_of_service, self.version_memory):
            raise UndecidableRecord(
                ErrorKind.VALIDATION,
                f"date of service is more than {self.version_memory.days} days before this "
                "partition's event time: its decision history is no longer kept, so a new "
                "decision_version cannot be chosen safely; decide it by hand",
            )
        expired = self.expire_if_due(key)
        home = self.book.home.get(event.charge_id)
        if home is not None and home != key:
            self.expire_if_due(home)  # leaving an expired visit: as if a sweep retired it
        history = self._history(event)
        if history is not None and (event.occurred_at, event.event_id) <= history.won_by:
            return []  # older than the event its last decision came from
        changed = self.book.apply(event)
        if history is not None and key in changed:
            self.book.visits[key].published.setdefault(event.charge_id, history.published)
            del self.retired[event.charge_id]
            self.retired_changed.add(event.charge_id)
        out: list[Publication] = []
        for visit_key in changed:
            visit = self.book.visits[visit_key]
            flags = (EXPIRED_FLAG,) if expired and visit_key == key else ()
            out += visit.publish_changes(packs.for_date(visit_key.date_of_service), source, flags)
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
        for charge_id in sorted(self.retired_changed):
            retired = self.retired.get(charge_id)
            value = retired.encode() if retired is not None else None
            yield ChangelogWrite(RETIRED_PREFIX + charge_id.encode(), value)
        self.dirty.clear()
        self.expired.clear()
        self.retired_changed.clear()
        yield ChangelogWrite(META_KEY, self._encode_meta())

    def _encode_meta(self) -> bytes:
        mark = self.watermark.isoformat() if self.watermark else None
        return json.dumps({"watermark": mark, "layout": self.layout or None}).encode()

    def restore(self, key: bytes, value: bytes | None) -> None:
        if key == META_KEY:
            meta = json.loads(value or b"{}")
            built = meta.get("layout")
            if built and self.layout and built != self.layout:
                raise LayoutChanged(
                    f"state of partition {self.partition} was built for patients placed by "
                    f"{built}, the worker now places them by {self.layout}: the same patient "
                    "would be looked up in another partition's state. Restore the old settings, "
                    "or start from empty state under a new --app-id deliberately"
                )
            mark = meta.get("watermark")
            self.watermark = dt.datetime.fromisoformat(mark) if mark else None
            return
        if key.startswith(RETIRED_PREFIX):
            charge_id = key[len(RETIRED_PREFIX) :].decode()
            self.retired.pop(charge_id, None)
            if value is not None:
                self.retired[charge_id] = Retired.decode(value)
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
