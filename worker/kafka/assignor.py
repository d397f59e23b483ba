"""A cooperative-sticky assignor that keeps partition numbers together across topics.

The worker reads `charges.captured` and `<app>.repartition`; partition p of both carries the
same patients and shares one state store and changelog partition, so one member must own p of
every topic. The stock cooperative-sticky assignor balances topic-partitions independently and
may split them, so this one assigns partition *numbers*, stickily, then applies the same
two-round cooperative hand-over (KIP-429): a number moving between members is first taken from
its old owner and given to the new one only in the next round.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment


class CopartitionedCooperativeStickyAssignor(CooperativeStickyAssignor):  # type: ignore[misc]
    name = "copartitioned-cooperative-sticky"

    def assign(self, cluster: Any, members: Any) -> dict[str, Any]:
        owned: dict[str, set[int]] = {}
        topics: set[str] = set()
        for member in members:
            parsed = self.parse_member_metadata(member.metadata)
            owned[member.member_id] = {tp.partition for tp in parsed.partitions}
            topics.update(parsed.subscription)
        counts = [len(cluster.partitions_for_topic(t) or ()) for t in topics]
        numbers = range(min(counts)) if counts else range(0)
        target = balanced_sticky(sorted(owned), owned, numbers)
        current = {p: m for m, parts in owned.items() for p in parts}
        result = {}
        for member_id in sorted(owned):
            # Round one withholds a number still owned by another member.
            mine = sorted(p for p in target[member_id] if current.get(p, member_id) == member_id)
            assigned = [(t, mine) for t in sorted(topics) if mine]
            result[member_id] = ConsumerProtocolAssignment(self.version, assigned, b"")
        return result


def balanced_sticky(
    members: list[str], owned: dict[str, set[int]], numbers: range
) -> dict[str, set[int]]:
    """Each member keeps what it owns up to its fair share; the rest go to the emptiest."""
    if not members:
        return {}
    base, extra = divmod(len(numbers), len(members))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(members)}
    target: dict[str, set[int]] = defaultdict(set)
    taken: set[int] = set()
    for member in members:
        for p in sorted(owned.get(member, set()) & set(numbers)):
            if len(target[member]) < quota[member] and p not in taken:
                target[member].add(p)
                taken.add(p)
    for p in numbers:
        if p in taken:
            continue
        member = min(members, key=lambda m: (len(target[m]) - quota[m], m))
        target[member].add(p)
        taken.add(p)
    return {m: target[m] for m in members}
