"""What a rule sees and how rules are registered: `VisitContext` (a visit's active lines and
the pack in force on its date of service), the rule signatures, and the registries the
decorators fill in evaluation order. The rules themselves are in rules/traction.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from rules.charge import Charge, Correction, Hold
from rules.pack import RulePack


@dataclass(frozen=True, slots=True)
class VisitContext:
    """What every rule may look at: the visit's active lines and the pack in force."""

    date_of_service: dt.date
    pack: RulePack
    lines: tuple[Charge, ...]  # ordered by (occurred_at, charge_id): arrival order-free
    ids_by_code: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, lines: list[Charge], pack: RulePack) -> VisitContext:
        ordered = tuple(sorted(lines, key=_ORDER)) if len(lines) > 1 else tuple(lines)
        ids_by_code: dict[str, list[str]] = {}
        for line in ordered:
            ids_by_code.setdefault(line.cpt_code, []).append(line.charge_id)
        return cls(
            date_of_service=ordered[0].date_of_service if ordered else dt.date.min,
            pack=pack,
            lines=ordered,
            ids_by_code={code: tuple(ids) for code, ids in ids_by_code.items()},
        )

    def others_with(self, codes: frozenset[str] | tuple[str, ...], line: Charge) -> list[str]:
        """Sorted ids of the other lines of the visit billed with any of `codes`."""
        found = [cid for code in codes for cid in self.ids_by_code.get(code, ())]
        return sorted(cid for cid in found if cid != line.charge_id)

    def line(self, charge_id: str) -> Charge:
        return next(c for c in self.lines if c.charge_id == charge_id)


_ORDER = attrgetter("occurred_at", "charge_id")

CorrectionRule = Callable[[Charge, VisitContext], tuple[Charge, Correction] | None]
HoldRule = Callable[[Charge, VisitContext], Hold | None]

# Registries in evaluation order. Corrections run first, in order (GP is appended before GY);
# holds then judge the corrected line, so TOO_MANY_MODIFIERS counts what would be billed.
TRACTION_CORRECTIONS: list[tuple[str, CorrectionRule]] = []
TRACTION_HOLDS: list[tuple[str, HoldRule]] = []
EVERY_LINE_HOLDS: list[tuple[str, HoldRule]] = []
# Hold rules that read other lines of the visit; every other rule reads its line and the pack
# only, so the engine may remember its finding for a line (rules.engine).
VISIT_RULES: set[HoldRule] = set()


def correction(rule_id: str) -> Callable[[CorrectionRule], CorrectionRule]:
    def register(rule: CorrectionRule) -> CorrectionRule:
        TRACTION_CORRECTIONS.append((rule_id, rule))
        return rule

    return register


def hold(
    rule_id: str, *, every_line: bool = False, reads_visit: bool = False
) -> Callable[[HoldRule], HoldRule]:
    """Register a hold rule: on every line or on 97012 lines; `reads_visit`: it looks at the
    visit's other lines (not only its own line and the pack)."""

    def register(rule: HoldRule) -> HoldRule:
        (EVERY_LINE_HOLDS if every_line else TRACTION_HOLDS).append((rule_id, rule))
        if reads_visit:
            VISIT_RULES.add(rule)
        return rule

    return register
