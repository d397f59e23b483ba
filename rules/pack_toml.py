"""Reading a rule pack's TOML: typed getters whose errors name the file, the key and the
problem in one line (`PackError`), and refuse keys nobody reads."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from rules.model import PlanType


class PackError(ValueError):
    """A rule pack (or a file it names) that cannot be used; the message is one line."""


_TOML_AT = re.compile(r"^(?P<problem>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")


def toml_problem(source: str, error: tomllib.TOMLDecodeError) -> str:
    text = str(error).replace("\n", " ")
    found = _TOML_AT.match(text)
    if found is None:  # e.g. "(at end of document)"
        return f"{source}: invalid TOML: {text}"
    return f"{source}:{found['line']}:{found['column']}: invalid TOML: {found['problem']}"


_MISSING: Any = object()
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, dt.datetime):
        return f"a date-time ({value.isoformat()})"
    if isinstance(value, dt.date | dt.time):
        return f"a {type(value).__name__} ({value.isoformat()})"
    return type(value).__name__


class Table:
    """One table of a pack being read: typed getters whose errors name the file and key.

    `label` is "" for the document itself, "[cmt]" for a table, and "[[diagnosis.supporting]]
    #3" for an entry of an array of tables.
    """

    def __init__(self, source: str, label: str, data: Mapping[str, Any]) -> None:
        self.source, self.label, self.data = source, label, data
        self.read: set[str] = set()

    def ref(self, key: str) -> str:
        if not self.label:
            return f"[{key}]"
        if self.label.startswith("[["):
            return f"{self.label} {key}"
        return f"{self.label}.{key}"

    def error(self, key: str | None, problem: str) -> PackError:
        where = self.label if key is None else self.ref(key)
        return PackError(
            f"{self.source}: {where}: {problem}" if where else f"{self.source}: {problem}"
        )

    def value(self, key: str, default: Any = _MISSING) -> Any:
        self.read.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            return self._missing(key)
        return default

    def _missing(self, key: str) -> Any:
        raise PackError(f"{self.source}: {self.ref(key)} missing")

    def table(self, key: str, default: Any = _MISSING) -> Table:
        value = self.value(key, default)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_kind(value)}")
        name = key if not self.label else f"{self.label.strip('[]')}.{key}"
        return Table(self.source, f"[{name}]", value)

    def tables(self, key: str) -> list[Table]:
        value = self.value(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"expected an array of tables ([[...]]), got {_kind(value)}")
        name = f"{self.label.strip('[]')}.{key}"
        return [Table(self.source, f"[[{name}]] #{n}", v) for n, v in enumerate(value, start=1)]

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self.value(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def integer(self, key: str, minimum: int, default: Any = _MISSING) -> int:
        value = self.value(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"expected a whole number, got {_kind(value)}")
        if value < minimum:
            raise self.error(key, f"{value} is below {minimum}")
        return value

    def strings(self, key: str, default: Any = _MISSING) -> list[str]:
        value = self.value(key, default)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of strings, got {_kind(value)}")
        for number, item in enumerate(value, start=1):
            if not isinstance(item, str) or not item.strip():
                raise self.error(
                    key, f"item {number}: expected a non-empty string, got {_kind(item)}"
                )
        return list(value)

    def date(self, key: str, default: Any = _MISSING) -> dt.date:
        value = self.value(key, default)
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a date (YYYY-MM-DD), got {_kind(value)}")
        if not _ISO_DATE.fullmatch(value):
            raise self.error(key, f"{value!r} is not a date (YYYY-MM-DD)")
        try:
            return dt.date.fromisoformat(value)
        except ValueError as error:
            raise self.error(key, f"{value!r} is not a date ({error})") from None

    def optional_date(self, key: str) -> dt.date | None:
        return None if self.value(key, None) is None else self.date(key)

    def plans(self, key: str) -> frozenset[PlanType]:
        plans = set()
        for name in self.strings(key):
            try:
                plans.add(PlanType(name))
            except ValueError:
                known = ", ".join(p.value for p in PlanType)
                raise self.error(key, f"unknown plan type {name!r} (one of {known})") from None
        return frozenset(plans)

    def done(self) -> None:
        """Refuse keys nobody reads: a misspelt optional key would silently change nothing."""
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            what = "section" if not self.label else "key"
            shown = ", ".join(f"[{k}]" if not self.label else repr(k) for k in unknown)
            known = ", ".join(sorted(self.read))
            raise self.error(None, f"unknown {what} {shown} (expected: {known})")
