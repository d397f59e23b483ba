"""Per-partition visit state and event-time retention.

One `PartitionState` per partition number: the input partition p and the repartition topic's
partition p feed the same patients, so they share it, and it is logged to changelog partition p
(record format: worker.state.changelog).

When a visit expires, each of its charges leaves a small `Retired` record (its last decision's
version, status, ledger and the event that decided it), kept for `version_memory` after the
later of that event and its date of service, so a later event for the charge continues its
decision_version instead of starting again at 1 (never two different records for one charge_id
and version). An event whose date of service is older than that memory cannot be versioned
safely and is dead-lettered.

Visits are held serialized, the recently touched ones decoded too (worker.state.visits): what
expiring, restoring and indexing need comes from a visit's small `lines` header, so only
deciding decodes one. The charges now HELD are indexed with their event time, for the
oldest-held gauge.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

from rules.charge import Charge, DecisionSource
from rules.model import DecisionStatus, ErrorKind
from rules.pack import PackNotInForce, PackSet
from rules.visit import Publication, VisitBook, VisitKey
from worker.config import WorkerConfig
from worker.errors import TopicLayoutError, UndecidableRecord
from worker.state.changelog import (
    META_KEY,
    RETIRED_PREFIX,
    ChangelogWrite,
    decode_meta,
    decode_retired,
    encode_meta,
    encode_retired,
    visit_key_bytes,
    visit_key_from_bytes,
)
from worker.state.lines import LineRecord
from worker.state.retired import Retired
from worker.state.visit_format import VisitCodec, default_visit_codec
from worker.state.visits import VisitStore

HOT_VISITS = 1024  # decoded visits kept per partition (--hot-visits)

EXPIRED_FLAG = "VISIT_STATE_EXPIRED"
# How far past its Kafka record timestamp an event's occurred_at may be: room for clock skew
# between source and producer, none for a mistyped year (which would win every later edit).
FUTURE_SKEW = dt.timedelta(days=1)


def _later_than(moment: dt.datetime, reference: dt.datetime, margin: dt.timedelta) -> bool:
    try:
        return moment - margin > reference
    except OverflowError:  # within `margin` of year 1: not later than anything
        return False


@dataclass
class PartitionState:
    partition: int
    retention: dt.timedelta
    version_memory: dt.timedelta = dt.timedelta(days=400)
    watermark: dt.datetime | None = None  # this partition's event time, never the wall clock
    retired: dict[str, Retired] = field(default_factory=dict)  # by charge_id
    dirty: set[VisitKey] = field(default_factory=set)
    expired: set[VisitKey] = field(default_factory=set)  # to tombstone at the next flush
    retired_changed: set[str] = field(default_factory=set)  # charge ids to write or tombstone
    # The input records (topic, partition, offset) that changed each dirty visit.
    origins: dict[VisitKey, list[tuple[str, int, int]]] = field(default_factory=dict)
    # How patients were placed on partitions, e.g. "murmur2/6": state built under one layout
    # is wrong under another, so the changelog records it and restoration checks it.
    layout: str = ""
    codec: VisitCodec = field(default_factory=default_visit_codec, repr=False)
    hot_visits: int = HOT_VISITS
    visits: VisitStore = field(init=False, repr=False)
    book: VisitBook = field(init=False, repr=False)
    held: dict[str, dt.datetime] = field(default_factory=dict, repr=False)  # HELD: since when
    # Visits by date of service and retired charges by the day their memory counts from, so a
    # sweep looks at what is due, not at every visit and charge it holds.
    # The visits' index by day is also where their keys' one instance is found (the visit
    # store, the home of each charge and the index itself share it).
    _visits_by_day: dict[dt.date, dict[VisitKey, VisitKey]] = field(
        default_factory=dict, repr=False
    )
    _retired_by_day: dict[dt.date, set[str]] = field(default_factory=dict, repr=False)
    # Dates before which a visit is expired / a retired charge forgotten, for the watermark
    # they were computed from (None: nothing is).
    _cutoffs: tuple[dt.datetime | None, dt.date | None, dt.date | None] = (None, None, None)

    def __post_init__(self) -> None:
        self.visits = VisitStore(self.codec, self.hot_visits)
        self.book = VisitBook(self.visits)

    # -- event time -------------------------------------------------------------------------

    def observe(self, event: Charge, rekeyed: bool) -> None:
        """Advance event time: the highest occurred_at of this partition's own input events.

        A re-keyed event (from another input partition) does not move the clock: where it falls
        among this partition's events is arrival timing, which a replay cannot reproduce.
        """
        if rekeyed:
            return
        if self.watermark is None or event.occurred_at > self.watermark:
            self.watermark = event.occurred_at

    def _cutoff(self, span: dt.timedelta) -> dt.date | None:
        assert self.watermark is not None
        try:
            return self.watermark.date() - span
        except OverflowError:  # within `span` of the calendar's start: nothing is that old
            return None

    def _before(self) -> tuple[dt.date | None, dt.date | None]:
        """(expired before, forgotten before), for the current watermark."""
        at, expire, forget = self._cutoffs
        if at is not self.watermark:
            if self.watermark is None:
                expire = forget = None
            else:
                expire, forget = self._cutoff(self.retention), self._cutoff(self.version_memory)
            self._cutoffs = (self.watermark, expire, forget)
        return expire, forget

    def is_expired(self, key: VisitKey) -> bool:
        expire = self._before()[0]
        return expire is not None and key.date_of_service < expire

    def _beyond_memory(self, day: dt.date) -> bool:
        forget = self._before()[1]
        return forget is not None and day < forget

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
        lines = self._drop_visit(key)
        if lines is None:
            return
        self.expired.add(key)
        for line in lines:
            published = line.as_published()
            if published is not None:
                won_by = (line.occurred_at, line.event_id)
                retired = Retired(published, key.date_of_service, won_by)
                self._put_retired(line.charge_id, retired)
                self.retired_changed.add(line.charge_id)

    def _indexed(self, key: VisitKey) -> VisitKey:
        """Index `key`; the instance of it the state holds."""
        return self._visits_by_day.setdefault(key.date_of_service, {}).setdefault(key, key)

    def _canonical(self, key: VisitKey) -> VisitKey:
        """The instance of `key` the state holds, or `key` for a visit it does not hold."""
        day = self._visits_by_day.get(key.date_of_service)
        return key if day is None else day.get(key, key)

    def _drop_visit(self, key: VisitKey) -> tuple[LineRecord, ...] | None:
        """Forget a visit (its charges' homes, its index entries); its lines, if it was held."""
        day = self._visits_by_day.get(key.date_of_service)
        if day is not None:
            day.pop(key, None)
            if not day:
                del self._visits_by_day[key.date_of_service]
        if key not in self.visits:
            return None
        lines = self.visits.lines(key)
        home, held = self.book.home, self.held
        for line in lines:
            if home.get(line.charge_id) == key:
                del home[line.charge_id]
                held.pop(line.charge_id, None)
        del self.visits[key]
        return lines

    def _put_retired(self, charge_id: str, retired: Retired) -> None:
        self._drop_retired(charge_id)
        self.retired[charge_id] = retired
        self._retired_by_day.setdefault(retired.last_seen, set()).add(charge_id)

    def _drop_retired(self, charge_id: str) -> None:
        retired = self.retired.pop(charge_id, None)
        if retired is not None:
            day = self._retired_by_day.get(retired.last_seen)
            if day is not None:
                day.discard(charge_id)
                if not day:
                    del self._retired_by_day[retired.last_seen]

    def _history(self, event: Charge) -> Retired | None:
        """The retired record a charge that no live visit holds resumes from, if any."""
        if event.charge_id in self.book.home:
            return None
        retired = self.retired.get(event.charge_id)
        if retired is None or self._forgotten(retired):
            return None  # the same whether or not a sweep dropped it yet
        return retired

    def _forgotten(self, retired: Retired) -> bool:
        return self._beyond_memory(retired.last_seen)

    def sweep(self) -> None:
        """Expire every visit past retention and forget retired charges past the version
        memory (keeps memory bounded between events). Looks only at the days that are due."""
        expire, forget = self._before()
        if expire is not None:
            for day in sorted(d for d in self._visits_by_day if d < expire):
                for key in sorted(self._visits_by_day.get(day, ())):
                    self._retire(key)
        if forget is not None:
            for day in sorted(d for d in self._retired_by_day if d < forget):
                for charge_id in sorted(self._retired_by_day.get(day, ())):
                    self._drop_retired(charge_id)
                    self.retired_changed.add(charge_id)

    def forget_writes(self) -> None:
        """Drop the pending changelog bookkeeping (replay keeps no changelog)."""
        self.dirty.clear()
        self.expired.clear()
        self.retired_changed.clear()
        self.origins.clear()

    # -- deciding ----------------------------------------------------------------------------

    def decide(
        self,
        event: Charge,
        source: DecisionSource,
        packs: PackSet,
        *,
        record_time: dt.datetime | None = None,
        rekeyed: bool = False,
        body: bytes | None = None,
    ) -> list[Publication]:
        """Fold one event into its visit and return the decisions that changed. `body`: the
        event's Avro body under our schema, when at hand (copied into the changelog value).

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
        try:
            packs.for_date(event.date_of_service)
        except PackNotInForce as missing:  # its message names dates only
            raise UndecidableRecord(ErrorKind.VALIDATION, str(missing)) from missing
        self.observe(event, rekeyed)
        key = self._canonical(VisitKey.of(event))
        if self._beyond_memory(key.date_of_service):
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
        if body is not None:
            self.visits.remember(event, body)
        changed = self.book.apply(event, key)
        if history is not None and key in changed:
            self.visits[key].published.setdefault(event.charge_id, history.published)
            self._drop_retired(event.charge_id)
            self.retired_changed.add(event.charge_id)
        out: list[Publication] = []
        for visit_key in changed:
            flags = (EXPIRED_FLAG,) if expired and visit_key == key else ()
            out += self._publish(visit_key, packs, source, flags)
        self._note_held(out)
        if expired:
            self.expire_if_due(key)
        return out

    def _publish(
        self, key: VisitKey, packs: PackSet, source: DecisionSource, flags: tuple[str, ...]
    ) -> list[Publication]:
        """Decide a changed visit again; it is to be written to the changelog."""
        self._indexed(key)
        visit = self.visits[key]
        out = visit.publish_changes(packs.for_date(key.date_of_service), source, flags)
        self.visits.changed(key)
        self.dirty.add(key)
        self.origins.setdefault(key, []).append((source.topic, source.partition, source.offset))
        return out

    def _note_held(self, publications: list[Publication]) -> None:
        held = self.held
        for publication in publications:
            decision = publication.decision
            if decision.status == DecisionStatus.HELD:
                held[decision.charge_id] = decision.charge.occurred_at
            else:
                held.pop(decision.charge_id, None)

    # -- changelog --------------------------------------------------------------------------

    def take_writes(self) -> Iterator[ChangelogWrite]:
        origins = self.origins
        visits = self.visits
        for key in sorted(self.dirty | self.expired):
            held = key not in self.expired and key in visits
            value = visits.value(key) if held else None
            yield ChangelogWrite(visit_key_bytes(key), value, tuple(origins.get(key, ())))
        for charge_id in sorted(self.retired_changed):
            retired = self.retired.get(charge_id)
            value = encode_retired(retired) if retired is not None else None
            yield ChangelogWrite(RETIRED_PREFIX + charge_id.encode(), value)
        self.forget_writes()
        yield ChangelogWrite(META_KEY, encode_meta(self.watermark, self.layout))

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (raises TopicLayoutError for another layout's state)."""
        if key == META_KEY:
            watermark, built = decode_meta(value)
            if built and self.layout and built != self.layout:
                raise TopicLayoutError(
                    f"state of partition {self.partition} was built for patients placed by "
                    f"{built}, the worker now places them by {self.layout}: the same patient "
                    "would be looked up in another partition's state. Restore the old settings, "
                    "or start from empty state under a new --app-id deliberately"
                )
            self.watermark = watermark
            return
        if key.startswith(RETIRED_PREFIX):
            charge_id = key[len(RETIRED_PREFIX) :].decode()
            self._drop_retired(charge_id)
            if value is not None:
                self._put_retired(charge_id, decode_retired(value))
            return
        visit_key = visit_key_from_bytes(key)
        self._drop_visit(visit_key)
        if value is not None:
            visit_key = self._indexed(visit_key)
            home, held = self.book.home, self.held
            for charge_id, held_at in self.visits.restore(visit_key, value):
                home[charge_id] = visit_key
                if held_at is not None:
                    held[charge_id] = held_at


def new_state(config: WorkerConfig, partition: int, partitions: int = 0) -> PartitionState:
    """Empty state of `partition` under `config`'s retention, version memory and layout."""
    return PartitionState(
        partition,
        retention=dt.timedelta(days=config.retention_days),
        # Never shorter than the retention: a live visit's events are always decidable.
        version_memory=dt.timedelta(days=max(config.version_memory_days, config.retention_days)),
        layout=f"{config.input_partitioner.value}/{partitions}" if partitions else "",
        hot_visits=config.hot_visits,
    )
