"""What one checkpoint writes, gathered as its records are processed and emitted at once.

Every event is decided when it is processed, so decision versions count each change of a
charge's decision in event order, whatever the batch boundaries. But only the latest decision
of each charge is emitted per batch (an earlier version the same batch replaced would be read
by nobody), and the RETRACTED a charge owes is judged against what was last emitted for it:
the `before` of its first change in the batch. Nothing is sent while records are processed,
so the live worker polls with no transaction open, and a partition revoked between two polls
takes its share of the batch with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from rules.charge import Decision
from rules.model import ErrorKind
from rules.visit import Publication, Published, retraction
from worker.kafka.records import Record
from worker.processing.outputs import Outputs, Where
from worker.processing.sensor import Sensor


@dataclass(slots=True)
class _Pending:
    before: Published | None  # what was last emitted for the charge
    latest: Publication
    body: bytes | None  # the Avro body of the billed charge, when it is the input's own
    occurred_at: dt.datetime  # of the event the latest decision came from
    # The charge's own event when this batch read it: the record a refused output of the
    # charge is laid at (a later line of the visit may have caused the latest decision, but
    # what the output carries is this line).
    own: Where | None


@dataclass(slots=True)
class _Share:
    """One partition's part of the batch."""

    decisions: dict[str, _Pending] = field(default_factory=dict)  # by charge_id, first seen first
    letters: list[tuple[Record, ErrorKind, str, bool]] = field(default_factory=list)
    rekeyed: list[tuple[Record, bytes, int]] = field(default_factory=list)


class Batch:
    def __init__(self) -> None:
        self.shares: dict[int, _Share] = {}
        self.records = 0  # input records processed into it

    def _share(self, partition: int) -> _Share:
        share = self.shares.get(partition)
        if share is None:
            share = self.shares[partition] = _Share()
        return share

    def decided(
        self,
        partition: int,
        publication: Publication,
        body: bytes | None,
        occurred_at: dt.datetime,
        own: Where | None = None,
    ) -> None:
        """`own`: the input record being processed, when it is the charge's own event."""
        decisions = self._share(partition).decisions
        charge_id = publication.decision.charge_id
        pending = decisions.get(charge_id)
        if pending is None:
            decisions[charge_id] = _Pending(publication.before, publication, body, occurred_at, own)
        else:
            pending.latest, pending.body, pending.occurred_at = publication, body, occurred_at
            if own is not None:
                pending.own = own

    def dead_letter(
        self, partition: int, record: Record, kind: ErrorKind, message: str, bare: bool = False
    ) -> None:
        """`bare`: the letter leaves the value out (even a cut copy of it was refused)."""
        self._share(partition).letters.append((record, kind, message, bare))

    def rekey(self, partition: int, record: Record, patient: bytes, home: int) -> None:
        self._share(partition).rekeyed.append((record, patient, home))

    def drop(self, partition: int) -> None:
        """A revoked partition's share goes: its new owner processes those records again."""
        self.shares.pop(partition, None)

    def __bool__(self) -> bool:
        return self.records > 0 or bool(self.shares)

    def emit(
        self,
        outputs: Outputs,
        sensor: Sensor,
        decorate: Callable[[Decision], Decision] | None = None,
    ) -> None:
        """Hand everything to `outputs`, partition by partition, in processing order. Each
        output names the input record it answers for (`outputs.origin`), so one the broker
        refuses can be laid at that record's door."""
        try:
            for share in self.shares.values():
                _emit_share(share, outputs, sensor, decorate)
        finally:
            sensor.emitted()  # what was emitted is counted, even if the emit stopped early
        outputs.origin = None
        self.shares.clear()


def _emit_share(
    share: _Share,
    outputs: Outputs,
    sensor: Sensor,
    decorate: Callable[[Decision], Decision] | None,
) -> None:
    for record, kind, message, bare in share.letters:
        outputs.origin = (record.topic, record.partition, record.offset)
        outputs.dead_letter(record, kind, message, bare=bare)
        sensor.dead_lettered(record, kind, message)
    for record, patient, home in share.rekeyed:
        outputs.origin = (record.topic, record.partition, record.offset)
        outputs.rekey(record, patient, home)
    for pending in share.decisions.values():
        source = pending.latest.decision.source
        outputs.origin = pending.own or (source.topic, source.partition, source.offset)
        _emit(pending, outputs, sensor, decorate)


def _emit(
    pending: _Pending,
    outputs: Outputs,
    sensor: Sensor,
    decorate: Callable[[Decision], Decision] | None,
) -> None:
    latest = pending.latest
    if decorate is not None:
        latest = latest._replace(decision=decorate(latest.decision))
    retracted = retraction(pending.before, latest)
    if retracted is not None:
        outputs.decision(retracted.ledger, retracted.decision, pending.body)
        sensor.decided(retracted.decision, pending.occurred_at)
    outputs.decision(latest.ledger, latest.decision, pending.body)
    sensor.decided(latest.decision, pending.occurred_at)
