"""What a visit's value says of each of its charges besides the charge itself: the identity of
its winning event and the last decision it published. Shared by every visit format."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from rules.model import DecisionStatus
from rules.visit import Ledger, Published, Visit
from worker.serde.records import STRUCTS

NAMESPACE = "chargecapture.v1.state"


class PublishedRecord(msgspec.Struct, frozen=True, gc=False):
    version: int
    status: DecisionStatus
    ledger: Ledger
    fingerprint: int

    @classmethod
    def of(cls, published: Published | None) -> PublishedRecord | None:
        if published is None:
            return None
        return cls(published.version, published.status, published.ledger, published.fingerprint)


class LineRecord(msgspec.Struct, frozen=True, gc=False):
    """One charge of a visit, without its content."""

    charge_id: str
    event_id: str  # of its winning event
    occurred_at: dt.datetime  # of its winning event
    published: PublishedRecord | None

    def as_published(self) -> Published | None:
        p = self.published
        return None if p is None else Published(p.version, p.status, p.ledger, p.fingerprint)

    @property
    def held_at(self) -> dt.datetime | None:
        """Its winning event's time when its last decision is HELD."""
        p = self.published
        return self.occurred_at if p is not None and p.status == DecisionStatus.HELD else None


def published_schema() -> dict[str, Any]:
    return {
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


TYPES = {
    **STRUCTS,
    f"{NAMESPACE}.Line": LineRecord,
    f"{NAMESPACE}.Published": PublishedRecord,
    f"{NAMESPACE}.DecisionStatus": DecisionStatus,
    f"{NAMESPACE}.Ledger": Ledger,
}


def lines_of(visit: Visit) -> tuple[LineRecord, ...]:
    """A visit's lines, by charge id."""
    charges, published = visit.charges, visit.published
    return tuple(
        LineRecord(
            charge_id=cid,
            event_id=(c := charges[cid]).event_id,
            occurred_at=c.occurred_at,
            published=PublishedRecord.of(published.get(cid)),
        )
        for cid in sorted(charges)
    )


def held_index_of(lines: Iterable[LineRecord]) -> list[tuple[str, dt.datetime | None]]:
    """Per line its charge id and, when its last decision is HELD, its winning event's time."""
    return [(line.charge_id, line.held_at) for line in lines]
