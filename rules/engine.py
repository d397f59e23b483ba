"""Deciding a visit: every active charge of one patient on one date of service, as a whole."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rules.model import ChargeEvent, Correction, DecisionStatus, Hold
from rules.pack import RulePack
from rules.traction import (
    EVERY_LINE_HOLDS,
    TRACTION_CORRECTIONS,
    TRACTION_HOLDS,
    VisitContext,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A charge's decision before it is versioned and published."""

    billed: ChargeEvent  # the line as it should be billed, corrections applied
    corrections: tuple[Correction, ...]
    holds: tuple[Hold, ...]

    @property
    def status(self) -> DecisionStatus:
        if self.holds:
            return DecisionStatus.HELD
        if self.corrections:
            return DecisionStatus.CORRECTED
        return DecisionStatus.ACCEPTED


def decide_visit(lines: Iterable[ChargeEvent], pack: RulePack) -> dict[str, Verdict]:
    """Decide every line of a visit. Pure: depends on the set of lines and the pack only."""
    visit = VisitContext.of(list(lines), pack)
    return {line.charge_id: _decide_line(line, visit) for line in visit.lines}


def _decide_line(line: ChargeEvent, visit: VisitContext) -> Verdict:
    corrections: list[Correction] = []
    holds: list[Hold] = []
    is_traction = line.cpt_code == visit.pack.traction_code
    if is_traction:
        for _rule_id, fix in TRACTION_CORRECTIONS:
            fixed = fix(line, visit)
            if fixed is not None:
                line, found = fixed
                corrections.append(found)
    rules = (*EVERY_LINE_HOLDS, *TRACTION_HOLDS) if is_traction else EVERY_LINE_HOLDS
    for _rule_id, check in rules:
        found_hold = check(line, visit)
        if found_hold is not None:
            holds.append(found_hold)
    return Verdict(billed=line, corrections=tuple(corrections), holds=tuple(holds))
