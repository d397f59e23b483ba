"""Replayed decisions against the live ones: which charges would change, and how."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.charge import Decision
from rules.model import ChargeDecision

# A decision as read back from the live topics (pydantic) or replayed (the lean Struct): the
# diff reads the same fields of both.
AnyDecision = ChargeDecision | Decision


@dataclass(frozen=True)
class ChargeChange:
    charge_id: str
    changed: tuple[str, ...]
    before: dict[str, Any] | None  # None: no live decision for the charge
    after: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "charge_id": self.charge_id,
            "changed": list(self.changed),
            "before": self.before,
            "after": self.after,
        }


@dataclass
class DiffReport:
    compared: int = 0
    changes: list[ChargeChange] = field(default_factory=list)
    by_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    rules_added: Counter[str] = field(default_factory=Counter)
    rules_removed: Counter[str] = field(default_factory=Counter)
    path: Path | None = None


_COMPARED = ("status", "modifiers", "units", "holds")


def decision_view(decision: AnyDecision) -> dict[str, Any]:
    """What the diff compares (status, modifiers, units, hold rule_ids) plus context."""
    return {
        "status": decision.status.value,
        "modifiers": list(decision.charge.modifiers),
        "units": decision.charge.units,
        "holds": sorted({h.rule_id for h in decision.holds}),
        "corrections": sorted({c.rule_id for c in decision.corrections}),
        "date_of_service": decision.date_of_service.isoformat(),
        "cpt_code": decision.charge.cpt_code,
        "decision_version": decision.decision_version,
        "rule_pack": f"{decision.rule_pack.id}@{decision.rule_pack.version}",
        "flags": list(decision.flags),
    }


def diff_decisions(live: dict[str, ChargeDecision], replayed: dict[str, Decision]) -> DiffReport:
    """Charges the replay decided whose latest decision differs from the live one."""
    report = DiffReport(compared=len(replayed))
    for charge_id in sorted(replayed):
        after = decision_view(replayed[charge_id])
        old = live.get(charge_id)
        before = decision_view(old) if old is not None else None
        if before is None:
            changed: tuple[str, ...] = ("status",)
        else:
            changed = tuple(f for f in _COMPARED if before[f] != after[f])
        if not changed:
            continue
        report.changes.append(ChargeChange(charge_id, changed, before, after))
        report.by_status[(before["status"] if before else "-", after["status"])] += 1
        old_rules = set(before["holds"]) | set(before["corrections"]) if before else set()
        new_rules = set(after["holds"]) | set(after["corrections"])
        report.rules_added.update(new_rules - old_rules)
        report.rules_removed.update(old_rules - new_rules)
    return report


def write_diff(diff: DiffReport, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for change in diff.changes:
            out.write(json.dumps(change.to_json(), separators=(",", ":")) + "\n")
    diff.path = path


def format_diff(diff: DiffReport) -> list[str]:
    where = f" (details: {diff.path})" if diff.path else ""
    rows = [
        f"diff against the live decisions: {diff.compared} charges compared, "
        f"{len(diff.changes)} would change{where}",
    ]
    if not diff.changes:
        return rows
    rows += ["", f"{'old status -> new status':<34}{'charges':>9}"]
    for (old, new), n in sorted(diff.by_status.items()):
        rows.append(f"{f'{old} -> {new}':<34}{n:>9}")
    rows += ["", f"{'rule_id':<34}{'added':>9}{'removed':>9}"]
    for rule in sorted(set(diff.rules_added) | set(diff.rules_removed)):
        rows.append(f"{rule:<34}{diff.rules_added[rule]:>9}{diff.rules_removed[rule]:>9}")
    return rows
