"""The CMS NCCI practitioner files, read as CMS ships them, and the edits the rules look up.

Practitioner PTP (procedure-to-procedure) edits come as four quarterly zip files,
`ccipra-vNNNr0-f1.zip` to `f4.zip`, each holding a tab-delimited .txt (sometimes beside an
.xlsx or a readme): a pack may name the zips or the .txt files. The .txt opens with an AMA
copyright line and a title line; its column header then spans four lines: the first holds
"Column 1", "Column 2", "*=in existence", "Effective", "Deletion", "Modifier", "PTP Edit
Rationale" and the next three carry the rest of each header ("prior to 1996", "Date *=no data",
"0=not allowed 1=allowed 9=not applicable") with empty first cells. A data row is column 1,
column 2, "*" or empty (in existence before 1996), the effective date (YYYYMMDD), the deletion
date (YYYYMMDD, or "*" for none), the modifier indicator (0, 1 or 9) and the rationale.

Practitioner MUEs (medically unlikely edits) come as a CSV, or a zip holding it, whose first
record is a quoted, multi-line AMA copyright notice. Its header row is "HCPCS/CPT Code" (with a
line break after the slash, inside the quoted cell), "Practitioner Services MUE Values", "MUE
Adjudication Indicator" (text such as "2 Date of Service Edit: Policy": the digit is the MAI)
and "MUE Rationale".

A plain comma-separated file with a one-line header, as older exports had, is read too.

A full quarter is millions of PTP rows, so they are not kept as objects: `PtpEdits` indexes
the edits that can ever apply by column-2 code, then column-1 code, with shared code strings
and shared (effective, deleted, indicator) tuples, and a lookup costs two dict probes whatever
the number of edits loaded.
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import io
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

PTP_HEADER_START = "Column 1"
MUE_HEADER_START = "HCPCS/CPT Code"
# The first header line of the PTP file, cell by cell (each cell is the start of its header).
PTP_COLUMNS = (
    "Column 1",
    "Column 2",
    "*=in existence",
    "Effective",
    "Deletion",
    "Modifier",
    "PTP Edit Rationale",
)
MUE_COLUMNS = (
    "HCPCS/CPT Code",
    "Practitioner Services MUE Values",
    "MUE Adjudication Indicator",
)
MODIFIER_INDICATORS = {"0": 0, "1": 1, "9": 9}

# (effective, deleted, modifier indicator): the edit applies on effective <= day < deleted.
Span = tuple[dt.date, dt.date | None, int]

_ZIP_MAGIC = b"PK\x03\x04"
_DATE = re.compile(r"\d{8}")


class NcciFileError(ValueError):
    """A CMS NCCI file that cannot be read: names the file (and zip member) and the line."""

    def __init__(self, where: str, line: int | None, problem: str) -> None:
        self.where, self.line, self.problem = where, line, problem
        super().__init__(f"{where}:{line}: {problem}" if line else f"{where}: {problem}")


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


def in_force(span: Span, day: dt.date) -> bool:
    effective, deleted, _ = span
    return effective <= day and (deleted is None or day < deleted)


def applies(span: Span) -> bool:
    """Whether an edit can ever hold a line: indicator 0 or 1, and in force for a day at least."""
    effective, deleted, indicator = span
    return indicator != 9 and (deleted is None or deleted > effective)


_NO_EDITS: Mapping[str, tuple[Span, ...]] = {}


class PtpEdits:
    """PTP edits indexed by column-2 code, then column-1 code: {column2: {column1: spans}}.

    A pair has one span per row of the files (usually one; a pair deleted and added again has
    two), in file order. The code strings and span tuples are shared between entries, so an
    edit costs one dict slot (about 50 bytes) rather than an object of its own.
    """

    __slots__ = ("_by_column2", "_count")

    def __init__(
        self, by_column2: dict[str, dict[str, tuple[Span, ...]]] | None = None, count: int = 0
    ) -> None:
        self._by_column2 = by_column2 or {}
        self._count = count

    @classmethod
    def load(cls, paths: Iterable[Path], *, every_row: bool = False) -> PtpEdits:
        """The edits of PTP files (.txt, .zip or comma-separated). Rows with indicator 9 and
        rows deleted on or before their effective date never apply and are dropped, unless
        `every_row` (to inspect a file)."""
        by_column2: dict[str, dict[str, tuple[Span, ...]]] = {}
        interner = _Interner()

        def read(text: IO[str], where: str) -> int:
            return _read_ptp(text, where, interner, by_column2, every_row)

        # Millions of acyclic, long-lived objects: the cyclic GC would rescan them again and
        # again while they are built.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            count = sum(n for path in paths for n in _read_each(path, ".txt", None, read))
        finally:
            if was_enabled:
                gc.enable()
        return cls(by_column2, count)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[PtpEdit]:
        """Every edit, grouped by column-2 code in the order the codes first appear."""
        for column2, by_column1 in self._by_column2.items():
            for column1, spans in by_column1.items():
                for effective, deleted, indicator in spans:
                    yield PtpEdit(column1, column2, effective, deleted, indicator)

    def column1_edits(self, column2: str) -> Mapping[str, tuple[Span, ...]]:
        """{column-1 code: spans} of the edits that deny `column2` beside a column-1 code."""
        return self._by_column2.get(column2, _NO_EDITS)

    def __repr__(self) -> str:
        return f"PtpEdits({self._count} edits, {len(self._by_column2)} column-2 codes)"


def load_ptp(path: Path) -> list[PtpEdit]:
    """Every row of one PTP file (or zip) as a PtpEdit, grouped by column-2 code."""
    return list(PtpEdits.load([path], every_row=True))


def load_mue(path: Path) -> list[MueLimit]:
    """The limits of one MUE file (CSV, or a zip holding it), in file order."""

    def read(text: IO[str], where: str) -> list[MueLimit]:
        return list(_read_mue(text, where))

    return [limit for limits in _read_each(path, ".csv", "", read) for limit in limits]


# --- sources ---------------------------------------------------------------------------------


def _read_each(
    path: Path, member_suffix: str, newline: str | None, read: Callable[[IO[str], str], T]
) -> list[T]:
    """`read(text, where)` of a file, or of each `member_suffix` member when it is a zip.

    Text is decoded as UTF-8 (a BOM is dropped); an undecodable byte, which can only sit in
    free text such as a rationale, becomes U+FFFD instead of failing the load.
    """
    shown = os.path.normpath(path)
    where = shown
    try:
        with path.open("rb") as raw:
            if raw.read(4) != _ZIP_MAGIC:
                raw.seek(0)
                return [read(_decoded(raw, newline), shown)]
        with zipfile.ZipFile(path) as archive:
            names = sorted(
                info.filename
                for info in archive.infolist()
                if not info.is_dir()
                and info.filename.lower().endswith(member_suffix)
                and not info.filename.startswith("__MACOSX/")
            )
            if not names:
                members = ", ".join(archive.namelist()) or "none"
                raise NcciFileError(shown, None, f"no {member_suffix} file in the zip ({members})")
            results, skipped = [], []
            for name in names:
                where = f"{shown}[{name}]"
                with archive.open(name) as member:
                    try:
                        results.append(read(_decoded(member, newline), where))
                    except _NoHeader as error:
                        skipped.append(error)  # e.g. a readme beside the edits
            if not results:
                raise skipped[0]
            return results
    except FileNotFoundError:
        raise NcciFileError(shown, None, "no such file") from None
    except IsADirectoryError:
        raise NcciFileError(shown, None, "is a directory, not a file") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise NcciFileError(where, None, f"not a readable zip file ({error})") from None
    except OSError as error:
        raise NcciFileError(where, None, f"cannot read it ({error.strerror or error})") from None


def _decoded(binary: IO[bytes], newline: str | None) -> IO[str]:
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline=newline)


# --- PTP -------------------------------------------------------------------------------------


class _Interner:
    """Caches of one load: each code string and each (dates, indicator) cell triple is parsed
    and validated once, and every edit shares the resulting objects."""

    __slots__ = ("codes", "dates", "spans")

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}
        self.dates: dict[str, dt.date] = {}
        # raw (effective, deletion, modifier) cells -> ((span,), applies)
        self.spans: dict[tuple[str, str, str], tuple[tuple[Span], bool]] = {}

    def code(self, raw: str, column: str) -> str:
        code = raw.strip()
        if not code:
            raise _RowError(f"{column}: empty")
        if not (code.isascii() and code.isalnum()):
            raise _RowError(f"{column}: {code!r} is not a HCPCS/CPT code")
        shared = self.codes[raw] = sys.intern(code)
        return shared

    def date(self, raw: str, column: str) -> dt.date:
        text = raw.strip()
        known = self.dates.get(text)
        if known is not None:
            return known
        if not _DATE.fullmatch(text):
            raise _RowError(f"{column}: {text!r} is not a date (YYYYMMDD)")
        try:
            day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError as error:
            raise _RowError(f"{column}: {text!r} is not a date ({error})") from None
        return self.dates.setdefault(text, day)

    def span(self, effective: str, deletion: str, modifier: str) -> tuple[tuple[Span], bool]:
        start = self.date(effective, "Effective Date")
        end = None if deletion.strip() in ("*", "") else self.date(deletion, "Deletion Date")
        indicator = MODIFIER_INDICATORS.get(modifier.strip())
        if indicator is None:
            raise _RowError(f"Modifier: {modifier.strip()!r} is not 0, 1 or 9")
        span: Span = (start, end, indicator)
        found = ((span,), applies(span))
        self.spans[effective, deletion, modifier] = found
        return found


class _NoHeader(NcciFileError):
    """Not an NCCI table at all: in a zip, a member such as a readme, which is skipped."""


class _RowError(Exception):
    """A bad cell; the reader adds the file and line."""


def _ptp_header(text: IO[str], where: str) -> tuple[int, bool]:
    """Read up to and including the first header line: (its line number, tab-separated?)."""
    for number, line in enumerate(text, start=1):
        tabbed = "\t" in line
        raw = line.split("\t") if tabbed else next(csv.reader([line]), [])
        cells = [cell.strip() for cell in raw]
        if len(cells) < 2 or not (
            cells[0].startswith(PTP_COLUMNS[0]) and cells[1].startswith(PTP_COLUMNS[1])
        ):
            continue
        for index, expected in enumerate(PTP_COLUMNS[:6]):
            if index >= len(cells) or not cells[index].startswith(expected):
                got = cells[index] if index < len(cells) else "nothing"
                raise NcciFileError(
                    where,
                    number,
                    f"header column {index + 1}: expected {expected!r}, got {got!r} "
                    "(not a CMS NCCI PTP file?)",
                )
        return number, tabbed
    raise _NoHeader(where, None, f"no header row starting with {PTP_HEADER_START!r}")


def _read_ptp(
    text: IO[str],
    where: str,
    interner: _Interner,
    by_column2: dict[str, dict[str, tuple[Span, ...]]],
    every_row: bool,
) -> int:
    """Add one file's edits to `by_column2`; returns how many were added.

    This loop runs for every one of the millions of rows of a quarter: the cells of a row are
    looked up in the interner's caches and only parsed when new.
    """
    header_line, tabbed = _ptp_header(text, where)
    # A comma-separated file is turned into tab-separated lines: one loop reads both.
    lines: Iterable[str] = text if tabbed else ("\t".join(row) for row in csv.reader(text))
    spans_of, codes, code = interner.spans, interner.codes, interner.code
    added = 0
    # The header's other lines (three in CMS files) have empty column-1 and column-2 cells.
    header_left = 3
    number = header_line
    try:
        for number, line in enumerate(lines, start=header_line + 1):  # noqa: B007
            cells = line.split("\t", 6)
            if header_left:
                if not "".join(cells[:2]).strip():
                    header_left -= 1
                    continue
                header_left = 0
            if len(cells) < 6:
                if not line.strip():
                    continue
                raise _RowError(f"{len(cells)} column(s), expected 7 ({', '.join(PTP_COLUMNS)})")
            found = spans_of.get((cells[3], cells[4], cells[5]))
            if found is None:
                found = interner.span(cells[3], cells[4], cells[5])
            column1 = codes.get(cells[0]) or code(cells[0], "Column 1")
            column2 = codes.get(cells[1]) or code(cells[1], "Column 2")
            spans, usable = found
            if not (usable or every_row):
                continue
            by_column1 = by_column2.get(column2)
            if by_column1 is None:
                by_column1 = by_column2[column2] = {}
            known = by_column1.setdefault(column1, spans)
            if known is not spans:  # the pair again (deleted, then added back): both spans
                by_column1[column1] = known + spans
            added += 1
    except _RowError as error:
        raise NcciFileError(where, number, str(error)) from None
    return added


# --- MUE -------------------------------------------------------------------------------------


def _squashed(cell: str) -> str:
    """A header cell without its whitespace (CMS breaks "HCPCS/CPT Code" across two lines)."""
    return "".join(cell.split()).upper()


def _read_mue(text: IO[str], where: str) -> Iterator[MueLimit]:
    reader = csv.reader(text)
    start = _squashed(MUE_HEADER_START)
    for row in reader:
        if row and _squashed(row[0]).startswith(start):
            header = reader.line_num
            for index, expected in enumerate(MUE_COLUMNS):
                got = _squashed(row[index]) if index < len(row) else ""
                if not got.startswith(_squashed(expected)):
                    raise NcciFileError(
                        where,
                        header,
                        f"header column {index + 1}: expected {expected!r}, got "
                        f"{row[index] if index < len(row) else 'nothing'!r} "
                        "(not a CMS NCCI practitioner MUE file?)",
                    )
            break
    else:
        raise _NoHeader(where, None, f"no header row starting with {MUE_HEADER_START!r}")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        try:
            yield _mue_row(row)
        except _RowError as error:
            raise NcciFileError(where, reader.line_num, str(error)) from None


def _mue_row(row: list[str]) -> MueLimit:
    if len(row) < 3:
        raise _RowError(f"{len(row)} column(s), expected 4 ({', '.join(MUE_COLUMNS)}, ...)")
    code = row[0].strip()
    if not (code and code.isascii() and code.isalnum()):
        raise _RowError(f"HCPCS/CPT Code: {code!r} is not a HCPCS/CPT code")
    units = row[1].strip()
    if not (units.isascii() and units.isdigit()):
        raise _RowError(f"Practitioner Services MUE Values: {units!r} is not a number of units")
    # The indicator cell reads e.g. "2 Date of Service Edit: Policy": its digit is the MAI.
    indicator = row[2].strip()
    if indicator[:1] not in ("1", "2", "3") or indicator[1:2].isdigit():
        raise _RowError(f"MUE Adjudication Indicator: {indicator!r} does not start with 1, 2 or 3")
    return MueLimit(code=code, max_units=int(units), adjudication_indicator=int(indicator[0]))
