"""Record framing for the file log: pure functions over bytes, no I/O.

A segment file is a plain sequence of frames, one per record, little-endian::

    0   u32  length        payload bytes
    4   u32  crc32         zlib.crc32 of bytes 8 .. end of payload
    8   u64  offset        the record's logical offset
    16  u64  timestamp_ms  when the writer accepted the record
    24  ...  payload

The CRC covers the offset and the timestamp as well as the payload, so a damaged header
is caught, not only damaged data.  The offset in every frame lets a reader check that
frames follow each other without a gap, which also catches a damaged length (the next
"frame" then starts in the wrong place).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import MutableSequence
from typing import NamedTuple

HEADER = struct.Struct("<IIQQ")
HEADER_SIZE = HEADER.size
#: A length above this can only come from a damaged or torn header.
MAX_PAYLOAD = 1 << 30

_OFFSET_TS = struct.Struct("<QQ")
_OFFSET = struct.Struct("<Q")


class FrameError(ValueError):
    """A frame is damaged: bad CRC, unexpected offset or impossible length."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"byte {position}: {reason}")
        self.position = position
        self.reason = reason


class Scan(NamedTuple):
    """How far :func:`scan` got through a buffer."""

    #: Position just past the last whole, valid frame.
    end: int
    #: Offset the next frame must carry.
    next_offset: int
    #: Timestamp of the last valid frame, None when none was scanned.
    last_timestamp_ms: int | None
    #: Bytes from ``end`` needed to finish a frame cut by the end of the buffer (0: none).
    need: int
    #: Why scanning stopped at a damaged frame (None: it did not).
    error: str | None


def encoded_size(values: list[bytes]) -> int:
    """Return the number of bytes :func:`encode_into` adds for ``values``."""
    return sum(map(len, values)) + HEADER_SIZE * len(values)


def encode_into(parts: list[bytes], values: list[bytes], first_offset: int, timestamp_ms: int) -> int:
    """Append the frames of ``values`` (header, payload, header, ...) to ``parts``.

    The caller joins ``parts`` once for a whole write group, which is cheaper than
    joining per batch.

    Args:
        parts: list the encoded pieces are appended to.
        values: record payloads; an empty list appends nothing.
        first_offset: offset of ``values[0]``; the rest follow consecutively.
        timestamp_ms: timestamp stored in every frame.

    Returns:
        The number of bytes appended.

    Raises:
        ValueError: a payload is larger than MAX_PAYLOAD (nothing is appended then).
    """
    if values and max(map(len, values)) > MAX_PAYLOAD:
        raise ValueError(f"record larger than {MAX_PAYLOAD} bytes")
    pack = HEADER.pack
    pack_ots = _OFFSET_TS.pack
    crc32 = zlib.crc32
    add = parts.append
    offset = first_offset
    for value in values:
        # crc32(value, crc32(a)) == crc32(a + value): no copy of the payload is needed.
        add(pack(len(value), crc32(value, crc32(pack_ots(offset, timestamp_ms))), offset, timestamp_ms))
        add(value)
        offset += 1
    return encoded_size(values)


def encode(values: list[bytes], first_offset: int, timestamp_ms: int) -> bytes:
    """Return the frames of ``values`` as one bytes object (b"" for no values)."""
    parts: list[bytes] = []
    encode_into(parts, values, first_offset, timestamp_ms)
    return b"".join(parts)


def decode(
    buf: bytes,
    pos: int,
    offset: int,
    max_records: int,
    values: list,
    timestamps: MutableSequence[int],
    *,
    views: bool = False,
) -> int:
    """Decode whole frames from ``buf[pos:]``, checking CRCs and the offset sequence.

    Stops after ``max_records`` frames, at the end of ``buf`` or before a frame the buffer
    cuts short (the caller decides whether that is the end of a read chunk or a torn
    file; :func:`frame_size_at` tells how much it needs).

    Args:
        buf: bytes read from a segment.
        pos: where a frame starts in ``buf``.
        offset: the offset the frame at ``pos`` must carry.
        max_records: most frames to decode.
        values: payloads are appended here: new bytes objects, or with ``views`` memoryviews
            into ``buf`` (no copy; for a bulk reader that joins them once).
        timestamps: their timestamps are appended here (a list or an ``array('q')``).

    Returns:
        The position just past the last decoded frame (``pos`` if none was decoded).

    Raises:
        FrameError: a frame has the wrong offset or a bad CRC (nothing is appended for it).
    """
    # The hot read path: locals only, one unpack, one CRC and one slice per record.
    view = memoryview(buf)
    source = view if views else buf
    size = len(buf)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    add_value = values.append
    add_ts = timestamps.append
    stop = offset + max_records
    while offset < stop and pos + HEADER_SIZE <= size:
        length, crc, frame_offset, ts = unpack(buf, pos)
        start = pos + HEADER_SIZE
        end = start + length
        if end > size:
            break
        if frame_offset != offset:
            raise FrameError(pos, f"frame carries offset {frame_offset}, expected {offset}")
        if crc32(view[pos + 8 : end]) != crc:
            raise FrameError(pos, f"CRC mismatch in the frame of offset {offset}")
        add_value(source[start:end])
        add_ts(ts)
        offset += 1
        pos = end
    return pos


def frame_size_at(buf: bytes, pos: int) -> int | None:
    """Return the full size (header + payload) of the frame starting at ``pos``.

    Returns None when ``buf`` does not even hold the frame's header.
    """
    if pos + HEADER_SIZE > len(buf):
        return None
    return HEADER_SIZE + HEADER.unpack_from(buf, pos)[0]


def scan(
    buf: bytes,
    pos: int,
    offset: int,
    *,
    verify: bool = True,
    until_offset: int | None = None,
) -> Scan:
    """Walk frame headers from ``pos`` without copying payloads.

    Used for recovery (``verify=True``: every CRC is checked), to build a segment's
    sparse index and to skip to a random offset (``until_offset``).

    Args:
        buf: bytes read from a segment.
        pos: where a frame starts in ``buf``.
        offset: the offset the frame at ``pos`` must carry.
        verify: check each frame's CRC as well as its length and offset.
        until_offset: stop before the frame carrying this offset.

    Returns:
        A :class:`Scan`.  ``error`` is set at the first damaged frame (``end`` is then
        that frame's position); ``need`` is set when the buffer ends inside a frame.
        An empty buffer gives ``Scan(pos, offset, None, 0, None)``.
    """
    view = memoryview(buf)
    size = len(buf)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    last_ts: int | None = None
    while pos < size and (until_offset is None or offset < until_offset):
        if pos + HEADER_SIZE > size:
            return Scan(pos, offset, last_ts, HEADER_SIZE, None)
        length, crc, frame_offset, ts = unpack(buf, pos)
        if length > MAX_PAYLOAD:
            return Scan(pos, offset, last_ts, 0, f"impossible length {length}")
        end = pos + HEADER_SIZE + length
        if end > size:
            return Scan(pos, offset, last_ts, end - pos, None)
        if frame_offset != offset:
            return Scan(pos, offset, last_ts, 0, f"frame carries offset {frame_offset}, expected {offset}")
        if verify and crc32(view[pos + 8 : end]) != crc:
            return Scan(pos, offset, last_ts, 0, f"CRC mismatch in the frame of offset {offset}")
        last_ts = ts
        offset += 1
        pos = end
    return Scan(pos, offset, last_ts, 0, None)


#: How many offsets past a damaged frame :func:`find_frame_after` looks for.
SEARCH_OFFSETS = 256


def find_frame_after(buf: bytes, pos: int, offset: int, *, span: int = SEARCH_OFFSETS) -> tuple[int, int] | None:
    """Find a whole, valid frame past the damaged one at ``pos`` (which should carry ``offset``).

    Tells a torn tail (nothing valid after the damage: cut it) from damage in the middle
    (valid frames follow, which may have been acknowledged: never cut them). A frame counts
    when its header sits where its offset field says, its length fits in ``buf``, its
    offset is one of the ``span`` offsets after ``offset``, and its CRC matches; a CRC
    match by chance is about 2**-32 per candidate.

    Returns:
        (byte position, offset) of the first such frame found, or None when there is none.
    """
    view = memoryview(buf)
    size = len(buf)
    for candidate in range(offset + 1, offset + 1 + span):
        needle = _OFFSET.pack(candidate)
        at = buf.find(needle, pos + 9)
        while at != -1:
            start = at - 8  # the offset field is at byte 8 of a header
            if start + HEADER_SIZE <= size:
                length, crc, _, _ = HEADER.unpack_from(buf, start)
                end = start + HEADER_SIZE + length
                if length <= MAX_PAYLOAD and end <= size and zlib.crc32(view[start + 8 : end]) == crc:
                    return start, candidate
            at = buf.find(needle, at + 1)
    return None
