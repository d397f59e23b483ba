"""Where the input's producers put a patient's records: the partition whose state holds it."""

from __future__ import annotations

import functools
import struct
import zlib
from enum import StrEnum


class Partitioner(StrEnum):
    """How the input topic's producers place keys."""

    MURMUR2 = "murmur2"  # the Java client's and kafka-python's default partitioner
    CRC32 = "crc32"  # librdkafka's `consistent`/`consistent_random` (confluent-kafka's default)


@functools.lru_cache(maxsize=8192)  # patients of the recent events: their visits come together
def home_partition(patient_key: bytes, partitions: int, partitioner: str = "murmur2") -> int:
    """The partition a producer using `partitioner` sends `patient_key` to."""
    if partitioner == Partitioner.CRC32:
        return zlib.crc32(patient_key) % partitions
    return (fast_murmur2(patient_key) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]


def fast_murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as kafka-python's
    `murmur2` computes it, in fewer Python operations: the worker hashes every decision's key.
    """
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    if words:
        for k in (_WORDS[words] if words < 64 else struct.Struct(f"<{words}I")).unpack_from(data):
            k = (k * _M) & 0xFFFFFFFF
            k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
            h = ((h * _M) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail:
        at = length & ~3
        if tail == 3:
            h ^= data[at + 2] << 16
        if tail >= 2:
            h ^= data[at + 1] << 8
        h = ((h ^ data[at]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition kafka-python's (and the Java client's) default partitioner gives `key`."""
    return (fast_murmur2(key) & 0x7FFFFFFF) % partitions
