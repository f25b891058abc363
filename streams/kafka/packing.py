"""Several log records in one Kafka message: the packed layout of adaptd's topics.

Faust (and any Kafka consumer in Python) pays a fixed cost per Kafka message, tens of
microseconds, a hundred times what folding one event costs.  So the daemon's log
produces one message per partition and batch: a request's events whose (tenant,
program) keys fall in one partition go out as one message, in their order in the
request, cut into several when they exceed ``MAX_RECORDS`` records or ``max_bytes``
bytes.  Each partition then holds its records in the very order one message per record
would give, which matters: watermarks are computed per event in log order, so packing
by key instead (all of qa's events of a request, then all of triage's) would make
events of one key late behind the other's and change the derived events.

Message value (little-endian)::

    MAGIC (4 bytes: b"\\x00AP1") | n (uint32) | n lengths (uint32 each) | the n values back to back

A value not starting with ``MAGIC`` (or too short or inconsistent to be a packed one) is
one plain record: what Faust writes to the derived topics, and what logs written before
packing hold, stays readable.  JSON never starts with a NUL byte, so no event is taken
for a packed message.

Log offsets (what ``KafkaLog`` hands out when packing): record ``i`` of the ``n`` in the
message at Kafka offset ``k`` has offset ``((k + 1) << SHIFT) - n + i``.  They increase
strictly in log order, and ``k`` is ``offset >> SHIFT`` for every record of the message
(``n < 2 ** SHIFT``); reading everything up to Kafka offset ``k`` leaves a reader at
``k << SHIFT``, which is also the log's end offset when ``k`` is the high watermark, so
"position == end_offset" still means "caught up".  They are not consecutive between
messages: a gap of ``2 ** SHIFT - n`` offsets follows each message.  Pure functions, no I/O.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate

MAGIC = b"\x00AP1"
#: Bits of a log offset below the Kafka offset: at most ``2 ** SHIFT - 1`` records per message.
SHIFT = 12
MAX_RECORDS = (1 << SHIFT) - 1
#: Default largest packed message (a broker's default ``message.max.bytes`` is ~1 MB).
MAX_BYTES = 512 * 1024
_HEAD = struct.Struct("<4sI")


def pack(values: Sequence[bytes]) -> bytes:
    """One message value holding ``values`` (1 to ``MAX_RECORDS`` of them), in order.

    Raises:
        ValueError: no values, or more than ``MAX_RECORDS``.
    """
    if not values or len(values) > MAX_RECORDS:
        raise ValueError(f"a packed message holds 1 to {MAX_RECORDS} records, not {len(values)}")
    lengths = array("I", map(len, values))
    if sys.byteorder == "big":  # pragma: no cover - the layout is little-endian everywhere
        lengths.byteswap()
    return b"".join((_HEAD.pack(MAGIC, len(values)), lengths.tobytes(), *values))


def unpack(value: bytes) -> list[bytes] | None:
    """The records of a packed message value; None when ``value`` is not one (a plain
    record, or a damaged packed message, which the caller keeps as one plain record).
    Never raises."""
    if len(value) < _HEAD.size or not value.startswith(MAGIC):
        return None
    _, n = _HEAD.unpack_from(value)
    start = _HEAD.size + 4 * n
    if n == 0 or n > MAX_RECORDS or start > len(value):
        return None
    lengths = array("I")
    lengths.frombytes(value[_HEAD.size:start])
    if sys.byteorder == "big":  # pragma: no cover
        lengths.byteswap()
    bounds = list(accumulate(lengths, initial=start))
    if bounds[-1] != len(value):
        return None
    view = memoryview(value)
    return [bytes(view[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def log_offset(kafka_offset: int, index: int, count: int) -> int:
    """The log offset of record ``index`` of the ``count`` in the message at ``kafka_offset``."""
    return ((kafka_offset + 1) << SHIFT) - count + index


def message_of(offset: int) -> int:
    """The Kafka offset of the message that holds (or, between messages, follows) log
    offset ``offset``: where a read from ``offset`` starts fetching."""
    return offset >> SHIFT


def log_end(kafka_offset: int) -> int:
    """The log offset of a reader that has read every message before ``kafka_offset``."""
    return kafka_offset << SHIFT


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: murmur2 like the Java client,
    librdkafka's ``murmur2_random`` and Faust, so a key's records land where they would
    unpacked."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (unsigned 32 bits)."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, rest = length & ~3, length % 4
    if rest >= 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def split(groups: Sequence[int], sizes: Sequence[int], max_bytes: int = MAX_BYTES,
          max_records: int = MAX_RECORDS) -> list[tuple[int, list[int]]]:
    """Group record indices by ``groups`` (their partitions) into messages, each group's
    in submission order.

    Returns:
        ``(group, indices)`` per message, in the order each group first appears; a
        group's records are cut into several messages past ``max_records`` records or
        ``max_bytes`` bytes of values (a record larger than that goes alone).  ``[]``
        for no records.
    """
    by_group: dict[int, list[int]] = {}
    for i, key in enumerate(groups):
        group = by_group.get(key)
        if group is None:
            by_group[key] = [i]
        else:
            group.append(i)
    out: list[tuple[int, list[int]]] = []
    for key, indices in by_group.items():
        part: list[int] = []
        size = 0
        for i in indices:
            if part and (len(part) >= max_records or size + sizes[i] > max_bytes):
                out.append((key, part))
                part, size = [], 0
            part.append(i)
            size += sizes[i]
        out.append((key, part))
    return out
