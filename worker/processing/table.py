"""The output topics read as a table: the latest decision per charge."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from rules.model import ChargeDecision
from rules.visit import table_rank
from worker.config import WorkerConfig
from worker.kafka.reading import read_to_end
from worker.kafka.records import Record
from worker.serde.codec import Codec


def latest_decisions(
    config: WorkerConfig | str, topics: list[str], codec: Codec | None = None
) -> tuple[dict[str, ChargeDecision], Counter[str]]:
    """Latest decision per charge over the output topics, and the records seen by status.

    Latest = highest decision_version; on a tie the decision beats the RETRACTED record of
    the ledger it left, so the table is correct whatever the topic read order.
    """
    codec = codec or Codec()
    latest: dict[str, ChargeDecision] = {}
    published: Counter[str] = Counter()
    seen: set[tuple[str, int, str, str]] = set()
    for record in read_to_end(config, topics):
        assert record.value is not None
        decision = codec.decode_decision(record.value)
        identity = (decision.charge_id, decision.decision_version, decision.status, record.topic)
        if identity in seen:  # a leaked aborted copy (Tansu): identical by construction
            continue
        seen.add(identity)
        published[decision.status.value] += 1
        current = latest.get(decision.charge_id)
        if current is None or table_rank(decision) > table_rank(current):
            latest[decision.charge_id] = decision
    return latest, published


def decisions_of(
    records: Iterable[Record], codec: Codec, charge_ids: set[str] | None = None
) -> Iterator[ChargeDecision]:
    """The decisions in `records` (of the output topics), each once: a copy a broker leaked
    from an aborted transaction (Tansu) is identical to the committed one and is dropped.
    With `charge_ids`, only theirs (matched on the record key, the charge id, before
    decoding)."""
    keys = None if charge_ids is None else {c.encode() for c in charge_ids}
    seen: set[tuple[str, int, str, str]] = set()
    for record in records:
        if record.value is None or (keys is not None and record.key not in keys):
            continue
        decision = codec.decode_decision(record.value)
        identity = (decision.charge_id, decision.decision_version, decision.status, record.topic)
        if identity not in seen:
            seen.add(identity)
            yield decision
