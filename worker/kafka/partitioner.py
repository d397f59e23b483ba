"""Where the input's producers put a patient's records: the partition whose state holds it."""

from __future__ import annotations

import functools
import zlib
from enum import StrEnum

from kafka.partitioner.default import murmur2


class Partitioner(StrEnum):
    """How the input topic's producers place keys."""

    MURMUR2 = "murmur2"  # the Java client's and kafka-python's default partitioner
    CRC32 = "crc32"  # librdkafka's `consistent`/`consistent_random` (confluent-kafka's default)


@functools.lru_cache(maxsize=65536)
def home_partition(patient_key: bytes, partitions: int, partitioner: str = "murmur2") -> int:
    """The partition a producer using `partitioner` sends `patient_key` to."""
    if partitioner == Partitioner.CRC32:
        return zlib.crc32(patient_key) % partitions
    hashed: int = murmur2(patient_key)
    return (hashed & 0x7FFFFFFF) % partitions
