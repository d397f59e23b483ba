"""Visit state and decision versioning, shared by `check`, the worker and replay.

A visit is one patient on one date of service. It keeps, per charge, the winning event (the
latest by (occurred_at, event_id), so arrival order never matters) and the last decision it
published. After each change the whole visit is decided again and only the charges whose
decision changed are published, with the RETRACTED/VOIDED bookkeeping of the output contract
(docs/data-flow.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, MutableMapping
from enum import StrEnum
from typing import NamedTuple, Protocol

import msgspec
from msgspec.structs import astuple, replace

from rules.charge import Charge, Decision, DecisionSource
from rules.engine import Verdict, decide_visit
from rules.model import DecisionStatus, EventType
from rules.pack import PackSet, RulePack


class Ledger(StrEnum):
    """The two output topics a decision can live on."""

    BILLABLE = "corrected"  # charges.corrected: ACCEPTED / CORRECTED
    REVIEW = "held"  # charges.held: HELD

    @classmethod
    def of(cls, status: DecisionStatus) -> Ledger:
        return cls.REVIEW if status == DecisionStatus.HELD else cls.BILLABLE


class VisitKey(NamedTuple):
    patient_id: str
    date_of_service: dt.date

    @classmethod
    def of(cls, event: Charge) -> VisitKey:
        return cls(event.patient_id, event.date_of_service)


class Published(NamedTuple):
    """What a visit remembers of the last decision it published for a charge."""

    version: int
    status: DecisionStatus
    ledger: Ledger
    fingerprint: int  # 64-bit digest of what the decision says (0: VOIDED)


class Publication(NamedTuple):
    """A change of a charge's decision: the new decision, on its ledger, and what the charge
    had published before it (None: nothing yet)."""

    ledger: Ledger
    decision: Decision
    before: Published | None


def retraction(before: Published | None, latest: Publication) -> Publication | None:
    """The RETRACTED record owed to the ledger a charge leaves, carrying the version of the
    decision that replaces it: when `latest` is on another ledger than what was last emitted
    (`before`). After a VOIDED there is nothing left there to retract."""
    if before is None or before.ledger == latest.ledger or before.status == DecisionStatus.VOIDED:
        return None
    return Publication(before.ledger, _retract(latest.decision, DecisionStatus.RETRACTED), None)


def emitted(publications: Iterable[Publication]) -> list[Publication]:
    """The records written if each change is emitted at once (one event, one transaction):
    each decision, preceded by the RETRACTED it owes."""
    out: list[Publication] = []
    for publication in publications:
        retracted = retraction(publication.before, publication)
        if retracted is not None:
            out.append(retracted)
        out.append(publication)
    return out


class _Ranked(Protocol):
    @property
    def decision_version(self) -> int: ...
    @property
    def status(self) -> DecisionStatus: ...


def table_rank(decision: _Ranked) -> tuple[int, int]:
    """Order of a charge's records for a table reader (docs/data-flow.md): the highest
    decision_version wins; on a tie the decision beats the RETRACTED record of the ledger it
    left, so the table is right whatever order the two topics are read in."""
    return (decision.decision_version, 0 if decision.status == DecisionStatus.RETRACTED else 1)


def _wins(new: Charge, current: Charge | None) -> bool:
    return current is None or (new.occurred_at, new.event_id) > (
        current.occurred_at,
        current.event_id,
    )


_encode = msgspec.msgpack.encode
_EVENT_ID, _OCCURRED_AT = 0, 2  # positions in Charge's field order


def content_digest(event: Charge) -> bytes:
    """Digest of what a charge line says, leaving out the event's own id and capture time:
    a re-sent, unchanged line is not a new decision."""
    fields = astuple(event)
    what = fields[_EVENT_ID + 1 : _OCCURRED_AT] + fields[_OCCURRED_AT + 1 :]
    return hashlib.blake2b(_encode(what), digest_size=12).digest()


def fingerprint(verdict: Verdict, source_digest: bytes) -> int:
    """A stable digest of what a decision says, so restored state compares across processes.

    The billed line is its source event with the corrections applied, so the source event's
    content digest plus the findings stand for it without serializing the line again.
    """
    digest = hashlib.blake2b(source_digest, digest_size=8)
    digest.update(_encode((verdict.status, verdict.corrections, verdict.holds)))
    return int.from_bytes(digest.digest(), "big", signed=True)


# The last fingerprint of each line object, with the verdict it was computed for: a visit is
# decided again on every event, and a line whose verdict equals the last one has the same
# fingerprint. Identity-keyed and bounded, as rules.engine's cache of a line's own findings.
_LAST: dict[int, tuple[Charge, bytes, Verdict | None, int]] = {}
_LAST_LIMIT = 20_000


def line_fingerprint(line: Charge, verdict: Verdict) -> int:
    """`fingerprint(verdict, content_digest(line))`, remembered for the line's last verdict."""
    last = _LAST.get(id(line))
    if last is None or last[0] is not line:
        last = (line, content_digest(line), None, 0)
    elif last[2] is not None and last[2] == verdict:
        return last[3]
    value = fingerprint(verdict, last[1])
    if len(_LAST) >= _LAST_LIMIT:
        _LAST.clear()
    _LAST[id(line)] = (line, last[1], verdict, value)
    return value


class Visit:
    """One patient on one date of service: each charge's winning event and last decision."""

    __slots__ = ("charges", "key", "published")

    def __init__(
        self,
        key: VisitKey,
        charges: dict[str, Charge] | None = None,
        published: dict[str, Published] | None = None,
    ) -> None:
        self.key = key
        self.charges: dict[str, Charge] = charges if charges is not None else {}
        self.published: dict[str, Published] = published if published is not None else {}

    def active_lines(self) -> list[Charge]:
        return [c for c in self.charges.values() if c.event_type == EventType.UPSERT]

    def decide(self, pack: RulePack) -> dict[str, Verdict]:
        return decide_visit(self.active_lines(), pack)

    def publish_changes(
        self,
        pack: RulePack,
        source: DecisionSource,
        flags: tuple[str, ...] = (),
    ) -> list[Publication]:
        """Decide the visit again; return (and remember) the decisions that changed."""
        verdicts = self.decide(pack)
        out: list[Publication] = []
        for charge_id in sorted(self.charges):
            verdict = verdicts.get(charge_id)
            if verdict is None:
                out.extend(self._void(charge_id, pack, source, flags))
            else:
                out.extend(self._decided(charge_id, verdict, pack, source, flags))
        return out

    def _decided(
        self,
        charge_id: str,
        verdict: Verdict,
        pack: RulePack,
        source: DecisionSource,
        flags: tuple[str, ...],
    ) -> Iterator[Publication]:
        before = self.published.get(charge_id)
        digest = line_fingerprint(self.charges[charge_id], verdict)
        if before is not None and before.fingerprint == digest:
            return
        version = before.version + 1 if before else 1
        status, ledger = verdict.status, Ledger.of(verdict.status)
        decision = _decision(self.key, verdict, status, version, pack, source, flags)
        self.published[charge_id] = Published(version, status, ledger, digest)
        yield Publication(ledger, decision, before)

    def _void(
        self,
        charge_id: str,
        pack: RulePack,
        source: DecisionSource,
        flags: tuple[str, ...],
    ) -> Iterator[Publication]:
        before = self.published.get(charge_id)
        if before is not None and before.status == DecisionStatus.VOIDED:
            return
        # A charge voided before any decision was published is still announced, on the
        # billable ledger, so a table reader knows the charge_id is not to be billed.
        ledger = before.ledger if before else Ledger.BILLABLE
        version = before.version + 1 if before else 1
        voided = Verdict(billed=self.charges[charge_id], corrections=(), holds=())
        decision = _decision(self.key, voided, DecisionStatus.VOIDED, version, pack, source, flags)
        self.published[charge_id] = Published(version, DecisionStatus.VOIDED, ledger, 0)
        yield Publication(ledger, decision, before)


def _decision(
    key: VisitKey,
    verdict: Verdict,
    status: DecisionStatus,
    version: int,
    pack: RulePack,
    source: DecisionSource,
    flags: tuple[str, ...],
) -> Decision:
    return Decision(
        charge_id=verdict.billed.charge_id,
        patient_id=key.patient_id,
        date_of_service=key.date_of_service,
        status=status,
        charge=verdict.billed,
        corrections=verdict.corrections,
        holds=verdict.holds,
        decision_version=version,
        rule_pack=pack.ref,
        source=source,
        flags=flags,
    )


def _retract(replacement: Decision, status: DecisionStatus) -> Decision:
    """The record for the ledger a charge leaves: same version as the decision replacing it."""
    return replace(replacement, status=status, corrections=(), holds=())


class VisitBook:
    """Visits by (patient, date of service) plus the visit each charge currently lives in.

    A charge whose later UPSERT carries another date of service moves to that visit, taking
    its published history along so its decision_version keeps counting.
    """

    def __init__(self, visits: MutableMapping[VisitKey, Visit] | None = None) -> None:
        # Any mapping: a dict here; the worker's state store holds them serialized.
        self.visits: MutableMapping[VisitKey, Visit] = visits if visits is not None else {}
        self.home: dict[str, VisitKey] = {}

    def add_visit(self, visit: Visit) -> None:
        self.visits[visit.key] = visit
        for charge_id in visit.charges:
            self.home[charge_id] = visit.key

    def drop_visit(self, key: VisitKey) -> Visit | None:
        visit = self.visits.pop(key, None)
        if visit is not None:
            for charge_id in visit.charges:
                if self.home.get(charge_id) == key:
                    del self.home[charge_id]
        return visit

    def apply(self, event: Charge, key: VisitKey | None = None) -> list[VisitKey]:
        """Fold one event in; return the visits whose charges changed (to decide again).
        `key`: the event's visit key, given as the one instance a caller shares."""
        key = key or VisitKey.of(event)
        # A redelivered event is no winner: it equals or precedes the charge's winning event.
        home_key = self.home.get(event.charge_id, key)
        home = self.visits.get(home_key)
        current = home.charges.get(event.charge_id) if home else None
        if not _wins(event, current):
            # Nothing is recorded for a losing event: it loses again if redelivered, and state
            # that only memory held would make a restored worker decide differently.
            return []
        visit = self.visits.get(key)
        if visit is None:
            visit = Visit(key)
        visit.charges[event.charge_id] = event
        self.home[event.charge_id] = key
        if home is None or home_key == key:
            self.visits[key] = visit  # stored back: a serialized mapping learns it changed
            return [key]
        del home.charges[event.charge_id]
        moved = home.published.pop(event.charge_id, None)
        if moved is not None:
            visit.published[event.charge_id] = moved
        self.visits[home_key] = home
        self.visits[key] = visit
        return [home_key, key]


class FinalDecision(NamedTuple):
    charge: Charge  # the charge's winning event
    verdict: Verdict | None  # None: voided


def decide_events(events: Iterable[Charge], packs: PackSet) -> dict[str, FinalDecision]:
    """Final decision per charge for a sequence of events, folded in order.

    Decisions depend only on each visit's final set of charges, so deciding every visit once
    at the end gives the same final decisions as deciding after every event. `check` and the
    tests' oracle both fold with this.
    """
    book = VisitBook()
    for event in events:
        book.apply(event)
    final: dict[str, FinalDecision] = {}
    for key, visit in book.visits.items():
        verdicts = visit.decide(packs.for_date(key.date_of_service))
        for charge_id, charge in visit.charges.items():
            final[charge_id] = FinalDecision(charge, verdicts.get(charge_id))
    return final
