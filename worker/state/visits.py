"""The visits of one partition: at rest as their changelog values, the recent ones decoded.

Kafka Streams keeps a task's state serialized (RocksDB) behind a record cache; this is the
same shape in memory. Every visit is held as the bytes of its changelog value (about 200 bytes
per charge); the last `hot_limit` visits touched are also held decoded, for deciding. So:
- memory grows by a visit's bytes, not by its decoded objects (and the collector tracks none
  of those bytes);
- restoring a visit is storing its bytes and reading its small `lines` header (charge ids and
  winning events): no charge is decoded until the visit is decided again;
- writing a changed visit to the changelog is encoding it once, with its charges copied from
  the Avro bodies they arrived in; and that value is then the one held at rest.

A decoded visit is changed in place by deciding; `changed(key)` marks it, and it is encoded
before it leaves the decoded set, so nothing decided is ever lost to eviction.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping

from rules.charge import Charge
from rules.visit import Visit, VisitKey
from worker.state.lines import LineRecord, lines_of
from worker.state.visit_format import VisitCodec

BODY_LIMIT_FACTOR = 2  # Avro bodies remembered per generation, per decoded visit allowed


class VisitStore(MutableMapping[VisitKey, Visit]):
    def __init__(self, codec: VisitCodec, hot_limit: int = 4096) -> None:
        self.codec = codec
        self.hot_limit = max(hot_limit, 1)
        self._values: dict[VisitKey, bytes | None] = {}  # None: new, only decoded so far
        self._hot: OrderedDict[VisitKey, Visit] = OrderedDict()
        self._changed: set[VisitKey] = set()  # decoded visits their value no longer matches
        # A charge's Avro body by the charge object (kept alive by the entry, so its id is
        # not reused while the entry lives), to copy it into the visit's next value. Two
        # generations: a full one becomes the older, so the latest bodies are always kept.
        self._bodies: dict[int, tuple[Charge, bytes]] = {}
        self._older_bodies: dict[int, tuple[Charge, bytes]] = {}

    # -- the mapping ---------------------------------------------------------------------------

    def __getitem__(self, key: VisitKey) -> Visit:
        visit = self._hot.get(key)
        if visit is not None:
            self._hot.move_to_end(key)
            return visit
        raw = self._values[key]  # KeyError: no such visit
        assert raw is not None, "a new visit is always decoded"
        visit = self.codec.decode(key, raw, self.remember)
        self._admit(key, visit)
        return visit

    def __setitem__(self, key: VisitKey, visit: Visit) -> None:
        self._values[key] = None
        self._hot[key] = visit
        self._hot.move_to_end(key)
        self._changed.add(key)
        self._evict()

    def __delitem__(self, key: VisitKey) -> None:
        del self._values[key]
        self._hot.pop(key, None)
        self._changed.discard(key)

    def __iter__(self) -> Iterator[VisitKey]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    # -- beyond a mapping ----------------------------------------------------------------------

    def changed(self, key: VisitKey) -> None:
        """The decoded visit `key` was changed (decided again): its value must be rewritten."""
        if key in self._hot:
            self._changed.add(key)

    def value(self, key: VisitKey) -> bytes:
        """The visit's changelog value, encoded now if it changed since the last one."""
        if key in self._changed:
            encoded = self.codec.encode(self._hot[key], self.body)
            self._values[key] = encoded
            self._changed.discard(key)
            return encoded
        raw = self._values[key]
        assert raw is not None
        return raw

    def restore(self, key: VisitKey, raw: bytes) -> list[tuple[str, dt.datetime | None]]:
        """Hold a visit as restored from the changelog; per line its charge id and, when
        HELD, its event time (ValueError for a value whose lines do not read)."""
        lines = self.codec.held_index(raw)
        self._hot.pop(key, None)
        self._changed.discard(key)
        self._values[key] = raw
        return lines

    def lines(self, key: VisitKey) -> tuple[LineRecord, ...]:
        """The charge ids, winning events and last decisions of a visit, without decoding it
        (nor encoding it, when it is decoded)."""
        visit = self._hot.get(key)
        if visit is not None:
            return lines_of(visit)
        raw = self._values[key]
        assert raw is not None
        return self.codec.read_lines(raw)

    def resize(self, hot_limit: int) -> None:
        """Keep up to `hot_limit` visits decoded from now on (the oldest past it are encoded
        and dropped now)."""
        hot_limit = max(hot_limit, 1)
        # Encoded while the larger limit still sizes the Avro bodies kept: the visits leaving
        # copy their charges' bodies rather than encode each charge again.
        self._evict(hot_limit)
        self.hot_limit = hot_limit
        if len(self._bodies) + len(self._older_bodies) > 2 * BODY_LIMIT_FACTOR * hot_limit:
            self._bodies, self._older_bodies = {}, {}

    def remember(self, charge: Charge, body: bytes) -> None:
        """`body` is `charge`'s Avro body under our current schema (copied into values)."""
        bodies = self._bodies
        if len(bodies) >= BODY_LIMIT_FACTOR * self.hot_limit:
            self._older_bodies, self._bodies = bodies, {}
            bodies = self._bodies
        bodies[id(charge)] = (charge, body)

    def body(self, charge: Charge) -> bytes:
        key = id(charge)
        found = self._bodies.get(key) or self._older_bodies.get(key)
        if found is not None and found[0] is charge:
            return found[1]
        body = self.codec.encode_charge(charge)
        self.remember(charge, body)
        return body

    def _admit(self, key: VisitKey, visit: Visit) -> None:
        self._hot[key] = visit
        self._evict()

    def _evict(self, limit: int | None = None) -> None:
        keep = self.hot_limit if limit is None else limit
        while len(self._hot) > keep:
            key, _ = next(iter(self._hot.items()))
            if key in self._changed:
                self.value(key)  # encoded before it goes: the value is the visit now
            del self._hot[key]
