"""Parsers of option values: each turns the text of a flag or a CHARGE_CAPTURE_* variable into
its value, or raises argparse.ArgumentTypeError saying what is wrong (argparse prints it for a
flag; worker.cli.options names the variable for the environment)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from worker.kafka.probe import addresses

Parse = Callable[[str], object]
E = TypeVar("E", bound=StrEnum)


def text(value: str) -> str:
    """Any non-empty text (names, ids): an empty value is a mistake, not a default."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value.strip()


def integer(low: int, high: int | None = None, *, also: tuple[int, ...] = ()) -> Parse:
    """An integer in [low, high] (or one of `also`, e.g. -1 for "the broker's default")."""
    bounds = f">= {low}" if high is None else f"between {low} and {high}"
    if also:
        bounds += " or " + " or ".join(str(a) for a in also)

    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number in also or (number >= low and (high is None or number <= high)):
            return number
        raise argparse.ArgumentTypeError(f"{number} is out of range: must be {bounds}")

    parse.__name__ = "integer"
    return parse


def seconds(value: str) -> float:
    """A positive number of seconds."""
    try:
        number = float(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is out of range: must be > 0")
    return number


def choice(*choices: str, upper: bool = False) -> Parse:
    """One of `choices`; with `upper`, case-insensitive and returned upper-cased."""

    def parse(value: str) -> str:
        canonical = value.strip().upper() if upper else value.strip()
        if canonical in choices:
            return canonical
        raise argparse.ArgumentTypeError(
            f"invalid choice {value!r} (choose from {', '.join(choices)})"
        )

    parse.__name__ = "choice"
    return parse


def enum(kind: type[E]) -> Callable[[str], E]:
    """A member of a StrEnum by its value."""
    names = ", ".join(member.value for member in kind)

    def parse(value: str) -> E:
        try:
            return kind(value.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid choice {value!r} (choose from {names})"
            ) from None

    parse.__name__ = "choice"
    return parse


def existing_file(value: str) -> str:
    """A path to a readable file (certificates, keys): checked now, not at the first TLS
    handshake."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return value


def directory(value: str) -> Path:
    """A path; whether it holds what is expected is for its reader to say (rule packs)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(value)


def bootstrap_servers(value: str) -> str:
    """HOST[:PORT][,HOST[:PORT]...]; a missing port means 9092, as for every Kafka client."""
    for host, port in addresses(value):
        if not host:
            raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT[,HOST:PORT...]")
        if not 0 < port < 65536:
            raise argparse.ArgumentTypeError(f"{value!r}: a port must be 1..65535")
    return ",".join(part.strip() for part in value.split(","))


_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def boolean(value: str) -> bool:
    """true/false (also 1/0, yes/no, on/off), for a switch's variable."""
    found = _BOOLEANS.get(value.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError("expected true or false")
    return found
