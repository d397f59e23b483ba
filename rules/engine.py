"""Deciding a visit: every active charge of one patient on one date of service, as a whole."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from rules.charge import Charge, Correction, Hold
from rules.model import DecisionStatus
from rules.pack import RulePack
from rules.traction import (
    EVERY_LINE_HOLDS,
    TRACTION_CORRECTIONS,
    TRACTION_HOLDS,
    VisitContext,
)


class Verdict(msgspec.Struct, frozen=True, gc=False):
    """A charge's decision before it is versioned and published."""

    billed: Charge  # the line as it should be billed, corrections applied
    corrections: tuple[Correction, ...]
    holds: tuple[Hold, ...]

    @property
    def status(self) -> DecisionStatus:
        if self.holds:
            return DecisionStatus.HELD
        if self.corrections:
            return DecisionStatus.CORRECTED
        return DecisionStatus.ACCEPTED


def decide_visit(lines: Iterable[Charge], pack: RulePack) -> dict[str, Verdict]:
    """Decide every line of a visit. Pure: depends on the set of lines and the pack only."""
    visit = VisitContext.of(list(lines), pack)
    return {line.charge_id: _decide_line(line, visit) for line in visit.lines}


# The rule functions in evaluation order, resolved once: this loop runs for every line.
_FIXES = tuple(rule for _, rule in TRACTION_CORRECTIONS)
_LINE_HOLDS = tuple(rule for _, rule in EVERY_LINE_HOLDS)
_TRACTION_HOLDS = _LINE_HOLDS + tuple(rule for _, rule in TRACTION_HOLDS)


def _decide_line(line: Charge, visit: VisitContext) -> Verdict:
    corrections: list[Correction] = []
    if line.cpt_code == visit.pack.traction_code:
        for fix in _FIXES:
            fixed = fix(line, visit)
            if fixed is not None:
                line, correction = fixed
                corrections.append(correction)
        checks = _TRACTION_HOLDS
    else:
        checks = _LINE_HOLDS
    holds = [found for check in checks if (found := check(line, visit)) is not None]
    return Verdict(billed=line, corrections=tuple(corrections), holds=tuple(holds))
