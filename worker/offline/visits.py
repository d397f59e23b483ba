"""One sample visit at a time: a patient, a clinic, a payer, the charge lines and their problems.

A visit is one patient on one date of service with 1..5 charge lines. Most lines are clean; a
visit may carry one deliberate problem (sometimes two), one per rule, at roughly the rates in
`SCENARIO_RATES_PER_1000_VISITS`. Every draw comes from the one seeded `random.Random`, in a
fixed order, so the same seed always builds the same visits.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
from dataclasses import dataclass, field

from worker.offline.problems import Line, apply_problem
from worker.offline.reference import (
    CHIRO,
    CMT_CODES,
    CMT_CUM,
    CMT_SET,
    DISTINCT_PARTNERS,
    DX_CERVICAL,
    DX_LUMBAR,
    DX_LUMBAR_EXTRA,
    DX_NOT_SUPPORTING,
    DX_SECONDARY_OTHER,
    GP_PAYERS,
    KIND_CUM,
    KINDS,
    MD,
    MEDICARE_LIKE,
    P_ASSISTANT_MODALITY,
    P_ASSISTANT_THERAPY,
    P_NO_ENCOUNTER,
    P_PREVIOUS_DAY,
    P_TRACTION,
    PAYER_BY_ID,
    PAYER_CUM,
    PAYERS,
    PLAN_OF_CARE,
    PT,
    SCENARIO_CUM,
    SCENARIO_NAMES,
    SECONDARY,
    SECONDARY_P,
    SPECIALTY,
    TRACTION_CODE,
    TRACTION_DEVICES,
    Event,
    copy_charge,
    eastern_utc_offset_hours,
    pick_cum,
    uniform,
)


def _npi(rng: random.Random) -> str:
    """A 10-digit NPI starting with 1, with a valid Luhn check digit (prefix 80840)."""
    body = str(rng.randrange(100_000_000, 200_000_000))
    total = 0
    for i, ch in enumerate(reversed("80840" + body)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class Clinic:
    kind: str
    npis: tuple[str, ...]
    device: str


def _make_clinics(rng: random.Random, visits: int) -> dict[str, list[Clinic]]:
    per_kind = max(1, visits // 90)
    clinics: dict[str, list[Clinic]] = {}
    for kind, n in ((CHIRO, per_kind), (PT, per_kind), (MD, max(1, per_kind // 3))):
        clinics[kind] = [
            Clinic(
                kind=kind,
                npis=tuple(_npi(rng) for _ in range(rng.randint(1, 4))),
                device=rng.choice(TRACTION_DEVICES),
            )
            for _ in range(n)
        ]
    return clinics


@dataclass
class _Visit:
    """What one visit's lines share, filled in draw order by `VisitBuilder.build`."""

    scen: list[str]
    kind: str = CHIRO
    payer_id: str = ""
    method: str = "MECHANICAL_DEVICE"
    clinic: Clinic | None = None
    npi: str = ""
    dos: dt.date = dt.date.min
    entry_ms: int = 0
    regions: list[str] = field(default_factory=list)
    good_dx: list[str] = field(default_factory=list)
    visit_dx: list[str] = field(default_factory=list)
    codes: list[tuple[str, int]] = field(default_factory=list)
    n_traction: int = 0
    template: Event = field(default_factory=dict)  # the fields every line of the visit shares

    @property
    def primary(self) -> str | None:
        return self.scen[0] if self.scen else None

    @property
    def plan(self) -> str:
        return PAYER_BY_ID[self.payer_id][2]

    @property
    def medicare_like(self) -> bool:
        return self.payer_id in MEDICARE_LIKE

    @property
    def medicare_chiro(self) -> bool:
        return self.plan == "MEDICARE" and self.kind == CHIRO

    @property
    def gp_applies(self) -> bool:
        return self.payer_id in GP_PAYERS or self.kind == PT  # PT offices put GP on everything


class VisitBuilder:
    def __init__(self, rng: random.Random, day: dt.date, visits: int) -> None:
        self.rng = rng
        self.day = day
        self.clinics = _make_clinics(rng, visits)
        self.patients: set[str] = set()
        self.local_midnight_ms = (day - dt.date(1970, 1, 1)).days * 86_400_000 - (
            eastern_utc_offset_hours(day) * 3_600_000
        )
        self.next_charge = rng.randrange(4_000_000_000, 5_000_000_000)
        self.next_encounter = rng.randrange(70_000_000, 80_000_000)

    def _charge_id(self) -> str:
        self.next_charge += 1
        return f"C{self.next_charge}"

    def _patient_id(self) -> str:
        while True:
            pid = f"P{uniform(self.rng, 10_000_000, 100_000_000)}"
            if pid not in self.patients:
                self.patients.add(pid)
                return pid

    def _scenarios(self) -> list[str]:
        rng = self.rng
        u = rng.random() * 1000.0
        if u >= SCENARIO_CUM[-1]:
            return []
        primary = SCENARIO_NAMES[bisect.bisect_right(SCENARIO_CUM, u)]
        out = [primary]
        if primary != "INVALID_CHARGE" and rng.random() < SECONDARY_P:
            second = rng.choice(SECONDARY)
            if second != primary:
                out.append(second)
        return out

    def build(self) -> tuple[list[Line], int]:
        """One visit's lines and the epoch-ms its charges start being entered."""
        visit = _Visit(self._scenarios())
        self._setting(visit)
        self._when(visit)
        self._diagnoses(visit)
        self._codes(visit)
        self._shared_fields(visit)
        lines = self._other_lines(visit)
        lines += self._traction_lines(visit, lines)
        self.rng.shuffle(lines)  # entry order inside the visit is not the code order
        return lines, visit.entry_ms

    def _setting(self, visit: _Visit) -> None:
        """Who, where, which payer (some problems only exist in certain settings)."""
        rng, primary = self.rng, visit.primary
        kind = KINDS[pick_cum(rng, KIND_CUM)]
        payer_id: str | None = None
        if primary == "MEDICARE_CHIROPRACTOR_NONCOVERED":
            kind, payer_id = CHIRO, "MEDICARE"
        elif primary == "FLEXION_DISTRACTION":
            kind, visit.method = CHIRO, "FLEXION_DISTRACTION"
        elif primary == "NOT_MECHANICAL_TRACTION":
            visit.method = rng.choice(("ROLLER_TABLE", "ROLLER_TABLE", "STATIC_BLOCKS", "MANUAL"))
            if visit.method != "MANUAL":
                kind = CHIRO
            elif kind == MD:
                kind = PT
        elif primary == "DECOMPRESSION_DEVICE":
            visit.method = "DECOMPRESSION_DEVICE"
            kind = CHIRO if rng.random() < 0.8 else PT
            r = rng.random()
            payer_id = "MEDICARE" if r < 0.4 else "SELF" if r < 0.7 else None
        elif primary == "GP_REQUIRED":
            payer_id = rng.choice(sorted(GP_PAYERS))
        if payer_id is None:
            payer_id = PAYERS[pick_cum(rng, PAYER_CUM[kind])][0]
        visit.kind, visit.payer_id = kind, payer_id
        visit.clinic = rng.choice(self.clinics[kind])
        visit.npi = rng.choice(visit.clinic.npis)

    def _when(self, visit: _Visit) -> None:
        rng, day = self.rng, self.day
        if "INVALID_CHARGE" in visit.scen and rng.random() < 0.15:
            visit.dos = day + dt.timedelta(days=1)  # entered against tomorrow's appointment
            late_entry = False
        elif rng.random() < P_PREVIOUS_DAY:
            visit.dos = day - dt.timedelta(days=1)
            late_entry = True
        else:
            visit.dos = day
            late_entry = False
        midnight = self.local_midnight_ms
        if late_entry:  # morning catch-up of yesterday's charges
            visit.entry_ms = midnight + uniform(rng, 8 * 3_600_000, 10 * 3_600_000)
        else:  # visit 08:00-16:30, charges entered 10-60 minutes later
            visit.entry_ms = (
                midnight
                + uniform(rng, 8 * 3_600_000, 16 * 3_600_000 + 1_800_000)
                + uniform(rng, 600_000, 3_600_000)
            )

    def _diagnoses(self, visit: _Visit) -> None:
        rng = self.rng
        r = rng.random()
        regions = ["CERVICAL"] if r < 0.4 else ["LUMBAR"] if r < 0.9 else ["CERVICAL", "LUMBAR"]
        good_dx: list[str] = []
        if visit.kind == CHIRO:  # subluxation first (Medicare CMT needs it), then the condition
            good_dx.extend("M99.01" if reg == "CERVICAL" else "M99.03" for reg in regions)
        for reg in regions:
            pool = DX_CERVICAL if reg == "CERVICAL" else DX_LUMBAR
            good_dx.append(rng.choice(pool))
            if reg == "LUMBAR" and rng.random() < 0.15:
                good_dx.append(DX_LUMBAR_EXTRA[0])
        if rng.random() < 0.15:
            good_dx.append(rng.choice(DX_SECONDARY_OTHER))
        visit.regions = regions
        visit.good_dx = list(dict.fromkeys(good_dx))[:12]
        unsupported = "DIAGNOSIS_NOT_SUPPORTING" in visit.scen
        visit.visit_dx = list(rng.choice(DX_NOT_SUPPORTING)) if unsupported else visit.good_dx

    def _codes(self, visit: _Visit) -> None:
        """Which codes the visit bills beside its traction line(s)."""
        rng, kind, primary = self.rng, visit.kind, visit.primary
        has_traction = bool(visit.scen) or rng.random() < P_TRACTION[kind]
        need_partner = primary in ("DISTINCT_MODIFIER_MISSING", "MODIFIER_59_WITH_X")
        mandatory: list[tuple[str, int]] = []
        optional: list[tuple[str, int]] = []
        estim = "G0283" if visit.medicare_like else "97014"
        if kind == CHIRO:
            mandatory.append((CMT_CODES[pick_cum(rng, CMT_CUM)], 1))
            for code, p in (("97140", 0.2), ("97110", 0.15), (estim, 0.3), ("97035", 0.12)):
                if rng.random() < p:
                    optional.append((code, 1 if code != "97110" else uniform(rng, 1, 3)))
            if rng.random() < 0.05:
                optional.append(("99213", 1))
        elif kind == PT:
            if rng.random() < 0.9 or need_partner:
                mandatory.append(("97110", uniform(rng, 1, 4)))
            for code, p in (("97140", 0.5), (estim, 0.3), ("97035", 0.2)):
                if rng.random() < p:
                    optional.append((code, uniform(rng, 1, 3) if code == "97140" else 1))
        else:
            mandatory.append(("99213", 1))
            if need_partner:
                mandatory.append(("97140", 1))
            for code, p in (("97140", 0.15), ("97110", 0.1), (estim, 0.1)):
                if rng.random() < p and all(c != code for c, _ in mandatory):
                    optional.append((code, 1))
        if has_traction:
            visit.n_traction = 2 if primary == "TRACTION_DUPLICATE" else 1
        room = max(0, 5 - len(mandatory) - visit.n_traction)
        visit.codes = mandatory + optional[:room]
        if not visit.codes and not visit.n_traction:
            visit.codes = [("97110", uniform(rng, 1, 4))]

    def _shared_fields(self, visit: _Visit) -> None:
        rng = self.rng
        pid, pname, plan = PAYER_BY_ID[visit.payer_id]
        encounter_id: str | None = None
        if rng.random() >= P_NO_ENCOUNTER:
            self.next_encounter += uniform(rng, 1, 8)
            encounter_id = f"ENC{self.next_encounter}"
        abn = visit.medicare_chiro and rng.random() < 0.3
        visit.template = {
            "patient_id": self._patient_id(),
            "encounter_id": encounter_id,
            "date_of_service": visit.dos.isoformat(),
            "payer": {"payer_id": pid, "name": pname, "plan_type": plan},
            "rendering_provider": {"npi": visit.npi, "specialty": SPECIALTY[visit.kind]},
            "plan_of_care": PLAN_OF_CARE[visit.kind],
            "abn_on_file": abn,
        }

    def _charge(
        self,
        visit: _Visit,
        cpt: str,
        modifiers: list[str],
        units: int,
        *,
        assistant: bool = False,
        traction: Event | None = None,
    ) -> Event:
        shared = visit.template
        return {
            "charge_id": self._charge_id(),
            "patient_id": shared["patient_id"],
            "encounter_id": shared["encounter_id"],
            "date_of_service": shared["date_of_service"],
            "cpt_code": cpt,
            "modifiers": modifiers,
            "units": units,
            "diagnosis_codes": list(visit.visit_dx),
            "payer": shared["payer"],
            "rendering_provider": shared["rendering_provider"],
            "performed_by": "ASSISTANT" if assistant else "PROVIDER",
            "supervising_provider_in_suite": True if assistant else None,
            "traction": traction,
            "documentation": {
                "medical_necessity": True,
                "device_and_region": True,
                "times_or_duration": True,
                "progress_note": True,
                "plan_of_care": shared["plan_of_care"],
            },
            "abn_on_file": shared["abn_on_file"],
            "place_of_service": "11",
        }

    def _other_lines(self, visit: _Visit) -> list[Line]:
        """The visit's lines other than traction, with their usual modifiers."""
        rng, kind, primary = self.rng, visit.kind, visit.primary
        cmt_present = bool({c for c, _ in visit.codes} & CMT_SET)
        lines: list[Line] = []
        for cpt, units in visit.codes:
            mods: list[str] = []
            assistant = False
            if cpt in CMT_CODES:
                if visit.medicare_like:
                    mods.append("AT")  # active treatment
            elif cpt == "99213":
                if len(visit.codes) > 1 or visit.n_traction:
                    mods.append("25")
            else:
                therapy = cpt in ("97110", "97140")
                p_assist = P_ASSISTANT_THERAPY[kind] if therapy else P_ASSISTANT_MODALITY[kind]
                assistant = rng.random() < p_assist
                if visit.gp_applies and primary != "GP_REQUIRED":
                    mods.append("GP")
                if assistant and kind == PT and visit.medicare_like:
                    mods.append("CQ")
                if visit.medicare_chiro and primary != "MEDICARE_CHIROPRACTOR_NONCOVERED":
                    mods.append("GY")
                if cpt == "97140" and cmt_present and primary != "DISTINCT_MODIFIER_MISSING":
                    mods.append("59")  # NCCI CMT/97140 edit
            lines.append(Line(self._charge(visit, cpt, mods, units, assistant=assistant)))
        return lines

    def _traction_lines(self, visit: _Visit, others: list[Line]) -> list[Line]:
        rng, kind, regions = self.rng, visit.kind, visit.regions
        partner_present = bool({c for c, _ in visit.codes} & DISTINCT_PARTNERS)
        assert visit.clinic is not None
        lines: list[Line] = []
        for i in range(visit.n_traction):
            mods = []
            assistant = rng.random() < P_ASSISTANT_MODALITY[kind]
            if visit.gp_applies:
                mods.append("GP")
            if assistant and kind == PT and visit.medicare_like:
                mods.append("CQ")
            if visit.medicare_chiro:
                mods.append("GY")
            if partner_present:
                mods.append("59" if rng.random() < 0.6 else "XS")
            trac_regions = list(regions)
            if i == 1 and len(regions) == 2:  # region split across two lines
                trac_regions = [regions[1]]
            elif i == 0 and visit.n_traction == 2 and len(regions) == 2:
                trac_regions = [regions[0]]
            traction: Event = {
                "method": "MECHANICAL_DEVICE",
                "device": visit.clinic.device,
                "body_regions": trac_regions,
                "minutes": uniform(rng, 10, 21),
            }
            clean = self._charge(
                visit, TRACTION_CODE, mods, 1, assistant=assistant, traction=traction
            )
            clean["diagnosis_codes"] = list(visit.good_dx)
            line = Line(clean)
            if i == 0 and visit.scen:
                self._with_problems(visit, line, [*others, *lines])
            elif i == 1:
                line.void_fix = True  # the duplicate entry
            lines.append(line)
        return lines

    def _with_problems(self, visit: _Visit, line: Line, others: list[Line]) -> None:
        """Give the clean traction line `line` the visit's problems (and maybe a later fix)."""
        clean = line.charge
        bad = copy_charge(clean)
        bad["diagnosis_codes"] = list(visit.visit_dx)
        for scenario in visit.scen:
            apply_problem(
                self.rng, self.day, scenario, bad, line, visit.method, visit.medicare_like, others
            )
        if line.fixed is None and not line.void_fix and bad != clean:
            line.fixed = copy_charge(clean)
        line.charge = bad
