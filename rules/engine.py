"""Deciding a visit: every active charge of one patient on one date of service, as a whole."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

import rules.traction  # noqa: F401  (its decorators fill the registries below)
from rules.charge import Charge, Correction, Hold
from rules.model import DecisionStatus
from rules.pack import RulePack
from rules.rulebook import (
    EVERY_LINE_HOLDS,
    TRACTION_CORRECTIONS,
    TRACTION_HOLDS,
    VISIT_RULES,
    HoldRule,
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


# The rule functions in evaluation order, resolved once: this loop runs for every line. A
# hold rule comes with whether it reads the whole visit (run every time) or the line alone.
_FIXES = tuple(rule for _, rule in TRACTION_CORRECTIONS)
_Plan = tuple[tuple[HoldRule, bool], ...]
_LINE_PLAN: _Plan = tuple((rule, rule in VISIT_RULES) for _, rule in EVERY_LINE_HOLDS)
_TRACTION_PLAN: _Plan = _LINE_PLAN + tuple(
    (rule, rule in VISIT_RULES) for _, rule in TRACTION_HOLDS
)

# A line's own findings (corrections, and the holds that read only the line and the pack),
# remembered per line object and pack: each event decides its whole visit again, and all but
# one line of it are the same objects as last time. Pure memoisation, bounded; the visit rules
# run every time. Keyed by identity: an entry holds its line and pack, so their ids cannot be
# reused while it lives, and equal-looking lines of different content never share an entry.
_Own = tuple[Charge, RulePack, Charge, tuple[Correction, ...], _Plan, tuple[Hold | None, ...]]
_OWN: dict[tuple[int, int], _Own] = {}
_OWN_LIMIT = 20_000


def _own_findings(line: Charge, visit: VisitContext) -> _Own:
    key = (id(line), id(visit.pack))
    found = _OWN.get(key)
    if found is not None and found[0] is line and found[1] is visit.pack:
        return found
    corrections: list[Correction] = []
    billed = line
    plan = _LINE_PLAN
    if line.cpt_code == visit.pack.traction_code:
        for fix in _FIXES:
            fixed = fix(billed, visit)
            if fixed is not None:
                billed, correction = fixed
                corrections.append(correction)
        plan = _TRACTION_PLAN
    own = tuple([None if of_visit else rule(billed, visit) for rule, of_visit in plan])
    if len(_OWN) >= _OWN_LIMIT:
        _OWN.clear()
    found = _OWN[key] = (line, visit.pack, billed, tuple(corrections), plan, own)
    return found


def _decide_line(line: Charge, visit: VisitContext) -> Verdict:
    _, _, billed, corrections, plan, own = _own_findings(line, visit)
    holds = []
    for (rule, of_visit), found in zip(plan, own, strict=True):
        if of_visit:
            found = rule(billed, visit)
        if found is not None:
            holds.append(found)
    return Verdict(billed=billed, corrections=corrections, holds=tuple(holds))
