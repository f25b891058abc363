"""One segment file of the file log: reading, scanning and torn-tail recovery.

A segment holds consecutive frames (see framing) and is named by the first offset it
holds, zero-padded to 20 digits, so a directory listing sorts in offset order.  Only the
FileLog's writer thread appends; everything here reads with ``pread`` on a descriptor of
its own, which never moves a shared file position.
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_right
from collections.abc import MutableSequence
from operator import itemgetter
from pathlib import Path

from adaptd.streams.log import framing
from adaptd.streams.log.base import CorruptLog, LogError

logger = logging.getLogger(__name__)

SUFFIX = ".seg"
_NAME = re.compile(r"(\d{20})\.seg\Z")
#: Bytes per pread when scanning, and the spacing of the sparse index.
CHUNK = 1 << 20
#: Largest single pread of a read() call (unless one frame is larger).
MAX_READ = 1 << 20
_first = itemgetter(0)


def segment_path(directory: Path, base: int) -> Path:
    """The file name of the segment whose first offset is ``base``."""
    return directory / f"{base:020d}{SUFFIX}"


def list_bases(directory: Path) -> list[int]:
    """Base offsets of the segment files in ``directory``, ascending (logs strays)."""
    bases = []
    for entry in os.scandir(directory):
        if entry.name.endswith(SUFFIX):
            match = _NAME.match(entry.name)
            if match is None:
                logger.warning("ignoring %s: not a segment name", entry.path)
            else:
                bases.append(int(match.group(1)))
    return sorted(bases)


def fsync_dir(path: Path) -> None:
    """fsync a directory: a new, renamed or deleted entry is durable only after this."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """A segment file and what is known about it.

    ``size`` and ``end`` count durable bytes and offsets only: for a sealed segment they
    are final, for the active one the FileLog's writer raises them after each fsync.
    """

    __slots__ = ("base", "path", "size", "end", "last_ts", "index", "fd")

    def __init__(self, base: int, path: Path, size: int, end: int) -> None:
        self.base = base
        self.path = path
        self.size = size
        self.end = end
        #: Timestamp of the newest record, None until known (written or scanned).
        self.last_ts: int | None = None
        #: Sparse (offset, byte position) pairs, ascending, about one per CHUNK bytes;
        #: None until built (segments of an earlier run are scanned only when needed).
        #: The writer appends to it: one list.append, so readers always see whole pairs.
        self.index: list[tuple[int, int]] | None = None
        #: Read descriptor, opened lazily (FileLog guards it with its read lock).
        self.fd: int | None = None

    def reader_fd(self) -> int:
        """The read descriptor, opened on first use.

        Raises:
            LogError: the file is gone (deleted by retention in another process?).
        """
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                raise LogError(f"segment {self.path} is missing") from None
        return self.fd

    def close_reader(self) -> None:
        """Close the read descriptor if open (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read_frames(
        self, pos: int, limit: int, offset: int, take: int, values: list, stamps: MutableSequence[int],
        frame_estimate: int, *, views: bool = False,
    ) -> int:
        """Decode ``take`` frames starting at byte ``pos``, which holds ``offset``.

        Args:
            pos: byte position of the frame of ``offset``.
            limit: durable size of the segment; nothing at or past it is read.
            offset: the offset expected at ``pos``.
            take: how many frames to decode (all of them must be there).
            values, stamps: payloads and timestamps are appended here.
            frame_estimate: typical frame size, to size the reads.
            views: append payloads as memoryviews of the read buffers (see framing.decode).

        Returns:
            The byte position just past the last decoded frame.

        Raises:
            LogError: a frame is damaged, or the segment ends before ``take`` frames.
        """
        fd = self.reader_fd()
        target = len(values) + take
        need = 0
        while len(values) < target:
            if pos >= limit:
                raise LogError(f"{self.path} ends at byte {pos} but should hold offset {offset}")
            # Enough for the frames still wanted, capped; more if one frame is larger.
            wanted = (target - len(values)) * frame_estimate
            size = min(limit - pos, max(need, min(MAX_READ, max(4096, wanted))))
            buf = os.pread(fd, size, pos)
            if len(buf) < size:
                raise LogError(f"{self.path} is shorter than its {limit} durable bytes")
            count = len(values)
            try:
                used = framing.decode(buf, 0, offset, target - count, values, stamps, views=views)
            except framing.FrameError as exc:
                raise LogError(f"corrupt frame in {self.path} at byte {pos + exc.position}: {exc.reason}") from None
            if used == 0:  # the next frame is larger than this read
                need = framing.frame_size_at(buf, 0) or framing.HEADER_SIZE
                if pos + need > limit:
                    raise LogError(f"truncated frame in {self.path} at byte {pos}")
                continue
            pos += used
            offset += len(values) - count
            need = 0
        return pos

    def scan(
        self, pos: int, limit: int, offset: int, *, verify: bool, until: int | None = None,
        index: list[tuple[int, int]] | None = None,
    ) -> tuple[int, int, int | None, str | None]:
        """Walk frame headers in ``[pos, limit)`` chunk by chunk (see framing.scan).

        Args:
            pos, offset: where to start and the offset expected there.
            limit: stop at this byte.
            verify: check CRCs too.
            until: stop before the frame of this offset.
            index: when given, one (offset, position) pair per chunk is appended.

        Returns:
            (end position, next offset, last timestamp or None, error or None).  A frame
            cut short by ``limit`` or by the end of the file is an error ("partial frame").
        """
        fd = self.reader_fd()
        last_ts, need = None, 0
        while pos < limit and (until is None or offset < until):
            size = min(limit - pos, max(CHUNK, need))
            buf = os.pread(fd, size, pos)
            if index is not None:
                index.append((offset, pos))
            result = framing.scan(buf, 0, offset, verify=verify, until_offset=until)
            pos, offset = pos + result.end, result.next_offset
            if result.last_timestamp_ms is not None:
                last_ts = result.last_timestamp_ms
            if result.error:
                return pos, offset, last_ts, result.error
            if len(buf) < size or (result.need and pos + result.need > limit):
                return pos, offset, last_ts, "partial frame at the end"
            need = result.need
        return pos, offset, last_ts, None

    def locate(self, offset: int, limit: int) -> int:
        """Byte position of ``offset`` (held below ``limit``), via the sparse index.

        Raises:
            LogError: the segment is damaged before ``offset``.
        """
        if offset == self.base:
            return 0
        if self.index is None:
            self.build_index()
        assert self.index is not None
        i = bisect_right(self.index, offset, key=_first) - 1
        start, pos = self.index[i] if i >= 0 else (self.base, 0)
        pos, found, _, error = self.scan(pos, limit, start, verify=False, until=offset)
        if error or found != offset:
            raise LogError(f"cannot find offset {offset} in {self.path}: {error or 'segment too short'}")
        return pos

    def build_index(self) -> None:
        """Scan a sealed segment's headers once for its sparse index and newest timestamp.

        Raises:
            LogError: a header is damaged or the frames do not reach ``end``.
        """
        index: list[tuple[int, int]] = []
        _, end, last_ts, error = self.scan(0, self.size, self.base, verify=False, index=index)
        if error or end != self.end:
            raise LogError(f"{self.path} is damaged: {error or f'its frames end at offset {end}, not {self.end}'}")
        self.index, self.last_ts = index, last_ts

    def damage_after(self, position: int, offset: int, file_size: int) -> tuple[int, int] | None:
        """A valid frame past the damaged one at ``position`` (see framing.find_frame_after).

        Returns:
            (byte position, offset) of a later valid frame, or None: the damage is a torn tail.
        """
        buf = os.pread(self.reader_fd(), file_size - position, position)
        found = framing.find_frame_after(buf, 0, offset)
        return None if found is None else (position + found[0], found[1])

    def corrupt(self, position: int, offset: int, reason: str) -> CorruptLog:
        """The error that refuses to open this segment's log (data dir: the log's parent)."""
        return CorruptLog(str(self.path), position, offset, reason, str(self.path.parent.parent))

    def verify_sealed(self) -> None:
        """Check every frame of a sealed segment (length, offset sequence, CRC).

        Raises:
            CorruptLog: a frame is damaged, or the frames do not reach the next segment.
        """
        index: list[tuple[int, int]] = []
        pos, end, last_ts, error = self.scan(0, self.size, self.base, verify=True, index=index)
        if error or end != self.end:
            raise self.corrupt(pos, end, error or f"its frames end at offset {end}, not {self.end}")
        self.index, self.last_ts = index, last_ts

    def recover(self, *, truncate: bool) -> int:
        """Validate every frame (length, offset sequence, CRC) and cut a torn tail.

        Sets ``size``, ``end``, ``last_ts`` and ``index`` from what is valid. Only a true
        torn tail is cut: a damaged frame with no valid frame after it. Such frames were
        never acknowledged (acks follow the fsync, and a crash tears only the last write),
        so cutting them loses no acknowledged record. Damage with valid frames after it
        (a flipped byte, a bad sector) cuts nothing and raises.

        Args:
            truncate: cut the file (else only ignore the tail, for read-only opens).

        Returns:
            The number of bytes past the valid prefix (0 when the file is clean).

        Raises:
            CorruptLog: damage in the middle of the segment; the file is left as it was.
        """
        index: list[tuple[int, int]] = []
        file_size = os.fstat(self.reader_fd()).st_size
        end, next_offset, last_ts, error = self.scan(0, file_size, self.base, verify=True, index=index)
        cut = file_size - end
        if error:
            later = self.damage_after(end, next_offset, file_size)
            if later is not None:
                raise self.corrupt(end, next_offset, f"{error}; a valid frame of offset {later[1]} follows at byte {later[0]}")
            action = "truncating" if truncate else "ignoring"
            logger.warning("%s %d bytes of torn tail in %s (%s at byte %d)", action, cut, self.path, error, end)
            if truncate:
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, end)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.size, self.end, self.last_ts, self.index = end, next_offset, last_ts, index
        return cut
