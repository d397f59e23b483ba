"""JSON-lines ChargeEvents from a file, as `check` and `produce` read them.

A file that cannot be read as text lines is refused whole (InputUnreadable, exit 66); a line
that is not a valid event is rejected with its number and the reason (field paths, never the
values: they may be PHI) and skipped. A line longer than MAX_LINE_BYTES is rejected without
being held in memory: no real event comes near it (the generator's largest are about 1 KiB).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from msgspec import DecodeError, ValidationError

from rules.charge import Charge, charge_from_json, describe_invalid
from worker.errors import InputUnreadable

MAX_LINE_BYTES = 1024 * 1024  # 1 MiB
_SNIFF_BYTES = 8192
_SKIP_CHUNK = 64 * 1024
STDIN = Path("-")


def open_input(path: Path) -> IO[bytes]:
    """`path` opened for reading as bytes (`-` is stdin), or InputUnreadable saying why."""
    if path == STDIN:
        return sys.stdin.buffer
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise InputUnreadable(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputUnreadable(f"{path}: is a directory, not a JSON-lines file") from None
    except OSError as error:
        raise InputUnreadable(f"{path}: {error.strerror or type(error).__name__}") from None
    head = stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    if head.startswith(b"\x1f\x8b"):
        stream.close()
        raise InputUnreadable(f"{path}: gzip-compressed; decompress it first (gunzip -k)")
    if b"\x00" in head:
        stream.close()
        raise InputUnreadable(f"{path}: a binary file, not JSON lines")
    return stream


def numbered_lines(stream: IO[Any], limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """(number, line) of each non-blank line of a text or binary stream; the line is None
    when it is longer than `limit` (its rest is read past in chunks, never held whole)."""
    readline = stream.readline
    number = 0
    while line := readline(limit + 1):
        number += 1
        if len(line) > limit and line[-1:] not in ("\n", b"\n"):
            while (rest := readline(_SKIP_CHUNK)) and rest[-1:] not in ("\n", b"\n"):
                pass
            yield number, None
        elif line.strip():
            yield number, line


def read_events(
    stream: IO[Any],
    rejected: list[str],
    check: Callable[[Charge], object] | None = None,
) -> Iterator[Charge]:
    """The valid events of `stream`; each rejected line appends "line N: reason".

    `check` may refuse an event that is valid on its own (raising LookupError or ValueError
    with the reason), e.g. one no rule pack is in force for."""
    for number, line in numbered_lines(stream):
        if line is None:
            rejected.append(
                f"line {number}: longer than {MAX_LINE_BYTES} bytes, the limit of one event"
            )
            continue
        try:
            event = charge_from_json(line)
        except (ValidationError, DecodeError) as error:
            rejected.append(f"line {number}: {describe_invalid(error)}")
            continue
        if check is not None:
            try:
                check(event)
            except (LookupError, ValueError) as refused:
                rejected.append(f"line {number}: {refused}")
                continue
        yield event
