"""Parsers for the official CMS NCCI practitioner files (formats in ../shared/DOMAIN.md).

CMS ships the files with a copyright preamble above the header row, so each parser looks for
its header row rather than assuming it is the first line.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

PTP_HEADER_START = "Column 1"
MUE_HEADER_START = "HCPCS/CPT Code"


@dataclass(frozen=True, slots=True)
class PtpEdit:
    """A procedure-to-procedure pair: the column-2 code is the one denied beside column 1."""

    column1: str
    column2: str
    effective: dt.date
    deleted: dt.date | None  # the edit applies on dates before this one
    modifier_indicator: int  # 0 never allowed, 1 allowed with an NCCI modifier, 9 not applicable

    def in_force(self, day: dt.date) -> bool:
        return self.effective <= day and (self.deleted is None or day < self.deleted)


@dataclass(frozen=True, slots=True)
class MueLimit:
    code: str
    max_units: int
    adjudication_indicator: int  # 1 per line, 2 per date of service (policy), 3 per DOS (clinical)


def _ncci_date(text: str) -> dt.date | None:
    text = text.strip()
    if not text or text == "*":
        return None
    return dt.datetime.strptime(text, "%Y%m%d").date()


def _rows_after_header(path: Path, header_start: str) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as stream:
        rows = list(csv.reader(stream))
    for index, row in enumerate(rows):
        if row and row[0].strip().startswith(header_start):
            return [r for r in rows[index + 1 :] if r and r[0].strip()]
    raise ValueError(f"{path}: no header row starting with {header_start!r}")


def load_ptp(path: Path) -> list[PtpEdit]:
    edits = []
    for row in _rows_after_header(path, PTP_HEADER_START):
        effective = _ncci_date(row[3])
        if effective is None:
            raise ValueError(f"{path}: PTP edit {row[0]}/{row[1]} has no effective date")
        edits.append(
            PtpEdit(
                column1=row[0].strip(),
                column2=row[1].strip(),
                effective=effective,
                deleted=_ncci_date(row[4]),
                modifier_indicator=int(row[5].strip()),
            )
        )
    return edits


def load_mue(path: Path) -> list[MueLimit]:
    limits = []
    for row in _rows_after_header(path, MUE_HEADER_START):
        # The indicator cell reads e.g. "2 Date of Service Edit: Policy": its digit is the MAI.
        limits.append(
            MueLimit(
                code=row[0].strip(),
                max_units=int(row[1].strip()),
                adjudication_indicator=int(row[2].strip()[:1]),
            )
        )
    return limits
