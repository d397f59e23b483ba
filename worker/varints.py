"""Zigzag varints, read and written: Avro's int and long, and the lengths and deltas of
Kafka's v2 records (the same encoding). The one primitive every record of the hot path uses,
several times per field.

A module of its own, at the top of the package, so that both the Avro code (worker.serde,
worker.state) and the Kafka record reader (worker.kafka.fast_records) use it, and so that the
compiled build (setup.py) turns it into C: the compiled modules call it natively, and the
readers and writers worker.serde.avro_fast generates call C functions instead of Python ones.
Profiled, the Python versions were 5-6% of the worker's main thread.
"""

from __future__ import annotations

from typing import Final


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag: small magnitudes, either sign, take few bytes
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


SMALL: Final = 4096  # the varints of -SMALL..SMALL-1 come from a table
VARINTS: Final = tuple(_varint(n) for n in range(-SMALL, SMALL))


def varint(n: int) -> bytes:
    """The zigzag varint of a long (small ones from a table)."""
    if -SMALL <= n < SMALL:
        return VARINTS[n + SMALL]
    return _varint(n)


def read_long(data: bytes, i: int) -> tuple[int, int]:
    """A zigzag varint at `i`: (value, next position)."""
    c = data[i]
    i += 1
    n = c & 0x7F
    shift = 7
    while c & 0x80:
        c = data[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError("varint longer than 10 bytes")
    return (n >> 1) ^ -(n & 1), i


def read_small(data: bytes, i: int) -> tuple[int, int]:
    """`read_long`, one byte inline: lengths, branches and enums are one byte in practice."""
    c = data[i]
    if c < 0x80:
        return (c >> 1) ^ -(c & 1), i + 1
    return read_long(data, i)
