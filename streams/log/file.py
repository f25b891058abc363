"""Embedded stream log: segmented append-only files with group commit (one partition).

Directory layout::

    00000000000000000000.seg   frames (see framing), named by the first offset they hold
    positions/<group>.pos      consumer group positions (see positions)
    quarantine/                bytes ``adaptd log repair`` cut out, each with a JSON note
    LOCK                       flock'ed while open, so two processes never write one log

Modules: ``framing`` (bytes of a frame), ``segment`` (one file: read, scan, recover),
``writer`` (the thread doing group commit, surviving disk faults), ``disk`` (its system
calls, replaceable to inject faults), ``positions`` (consumer groups), ``verify`` and
``repair`` (offline checks and quarantine), and this one, which ties them together and
owns what readers see.  Only fsynced records are
visible.  Readers ``pread`` under one lock, which is also what retention takes to close
a deleted segment's descriptor, so a read never loses its file mid-way.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import time
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from itertools import repeat
from pathlib import Path
from typing import Literal

from adaptd.streams.log import framing
from adaptd.streams.log.base import LogClosed, LogError, LogStats, Record, RecordBatch, StreamLog
from adaptd.streams.log.disk import Disk
from adaptd.streams.log.positions import Positions, check_group
from adaptd.streams.log.segment import Segment, fsync_dir, list_bases, segment_path
from adaptd.streams.log.writer import Writer

logger = logging.getLogger(__name__)

_CURSORS = 64  # remembered read positions: one per sequential reader is plenty


class FileLog(StreamLog):
    """The embedded log: one directory of segment files, partition 0 only."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: Literal["batch", "interval"] = "batch",
        fsync_interval_ms: int = 5,
        segment_bytes: int = 64 * 1024 * 1024,
        retention_bytes: int | None = None,
        retention_hours: float | None = None,
        max_pending_batches: int = 1024,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        fault_retry_ms: int = 500,
        disk: Disk | None = None,
    ) -> None:
        """Open (creating if needed) the log in ``path`` and cut its torn tail.

        Args:
            path: the log directory; created with its parents (unless ``read_only``).
            fsync: "batch" fsyncs every write group; "interval" at most once per
                ``fsync_interval_ms`` (acks still wait for the fsync that covers them).
            fsync_interval_ms: see ``fsync``.
            segment_bytes: a new segment starts before a batch would pass this size.
            retention_bytes: delete oldest segments while the log is larger than this.
            retention_hours: delete segments whose newest record is older than this.
            max_pending_batches: batches that may wait for the writer; more are refused.
            clock: seconds since the epoch, for record timestamps and age retention.
            read_only: read what was valid when opened, without locking, writing or
                truncating anything (e.g. to replay a log in use); appends and commits
                fail with LogError.
            fault_retry_ms: after a disk fault (ENOSPC, EIO), new batches fail at once for
                this long before the writer tries again (see writer); it recovers by itself.
            disk: the writer's system calls (tests pass one that injects faults).

        Raises:
            ValueError: an option is out of range.
            LogError: another FileLog holds the directory, a read-only log does not
                exist, or a position file is damaged.
        """
        if fsync not in ("batch", "interval"):
            raise ValueError(f"fsync must be 'batch' or 'interval', not {fsync!r}")
        if (segment_bytes <= framing.HEADER_SIZE or max_pending_batches < 1 or fsync_interval_ms < 0
                or fault_retry_ms < 0):
            raise ValueError("segment_bytes, max_pending_batches or fsync_interval_ms out of range")
        self.path = Path(path)
        self._retention_bytes = retention_bytes
        self._retention_hours = retention_hours
        self._clock = clock
        self._read_only = read_only
        self._stats = LogStats()
        self._lock = threading.Lock()  # the segment tuple, durable sizes/ends, counters
        self._durable = threading.Condition(self._lock)  # wait() waits for the watermark
        self._io_lock = threading.Lock()  # read descriptors and the cursor cache
        self._retention_lock = threading.Lock()  # retention and commits, one at a time
        self._closed = False
        self._cursors: OrderedDict[int, tuple[Segment, int]] = OrderedDict()
        self._frame_estimate = 512  # bytes per frame seen by reads, to size the preads
        self._lock_fd = -1
        self._writer: Writer | None = None
        if read_only:
            if not self.path.is_dir():
                raise LogError(f"no log at {self.path}")
        else:
            if not self.path.is_dir():
                self.path.mkdir(parents=True)
                fsync_dir(self.path.parent)  # the new directory's entry must survive a crash
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                raise LogError(f"log directory {self.path} is in use by another FileLog") from None
        try:
            self._positions = Positions(self.path / "positions", create=not read_only)
            self._segments = self._open_segments()
            if not read_only:
                self._writer = Writer(
                    self.path, self._segments[-1], policy=fsync, interval_s=fsync_interval_ms / 1000,
                    segment_bytes=segment_bytes, max_pending=max_pending_batches, clock=clock,
                    on_durable=self._durable_now, on_roll=self._rolled, on_exit=self._writer_exited,
                    disk=disk, retry_s=fault_retry_ms / 1000,
                )
        except BaseException:
            self._release()
            raise

    def _open_segments(self) -> tuple[Segment, ...]:
        """List the segments, verify the sealed ones, cut the last one's torn tail, create
        segment 0 if none.

        Raises:
            CorruptLog: a damaged frame anywhere but a torn tail (nothing is changed).
        """
        bases = list_bases(self.path)
        if not bases and not self._read_only:
            os.close(os.open(segment_path(self.path, 0), os.O_WRONLY | os.O_CREAT, 0o644))
            fsync_dir(self.path)
        elif not bases:  # read-only and empty: nothing to read
            segment = Segment(0, segment_path(self.path, 0), 0, 0)
            segment.index = []
            return (segment,)
        # A sealed segment ends where the next begins; only the last one is scanned now.
        segments = [Segment(b, segment_path(self.path, b), 0, b) for b in bases or [0]]
        for segment, following in zip(segments, segments[1:]):
            segment.size, segment.end = segment.path.stat().st_size, following.base
            # Every frame is checked at open: damage in a sealed segment must stop the
            # daemon now, not surface later as a failed read in replay or a stalled tail.
            try:
                segment.verify_sealed()
            finally:
                segment.close_reader()
        last = segments[-1]
        cut = last.recover(truncate=not self._read_only)
        last.close_reader()  # reads reopen it lazily
        if self._read_only:
            self._stats.extra["ignored_tail_bytes"] = cut
        else:
            self._stats.truncated_bytes = cut
        return tuple(segments)

    # ------------------------------------------------------------------ appending

    def submit(self, values: list[bytes], keys: list[bytes] | None = None) -> Future[list[int]]:
        """Queue a batch for the writer thread; never blocks.  See StreamLog.submit.

        The future fails with LogClosed after close(), with LogError("log writer queue
        full") when ``max_pending_batches`` batches already wait, with LogError when
        writing or fsyncing fails (the failed batches are not in the log; for
        ``fault_retry_ms`` new batches fail at once, then writing is tried again, see
        ``write_fault``) or the log is read-only.  Callbacks added to
        the future run on the writer thread: keep them short.

        Raises:
            TypeError: a value is not bytes (a caller bug, reported at once).
        """
        values = list(values)
        if not set(map(type, values)) <= {bytes}:
            raise TypeError("FileLog records must be bytes")
        if values and self._writer is not None:
            return self._writer.submit(values)
        future: Future[list[int]] = Future()
        if self._closed or (self._writer is not None and self._writer.closing):
            future.set_exception(LogClosed(f"log {self.path} is closed"))
        elif self._writer is None:
            future.set_exception(LogError(f"log {self.path} is open read-only"))
        else:
            future.set_result([])
        return future

    def _durable_now(self, segment: Segment, size: int, end: int, batches: int, records: int) -> None:
        # Writer callback after each fsync: readers may now see up to ``end``.
        with self._lock:
            segment.size, segment.end = size, end
            self._stats.fsyncs += 1
            self._stats.batches += batches
            self._stats.appended += records
            self._durable.notify_all()

    def _writer_exited(self) -> None:
        # Writer callback: close() called on the writer thread (from a future's callback)
        # could not wait for the drain, so the files are released here, after it.
        if self._writer is not None and self._writer.closing:
            self._release()

    def _rolled(self, segment: Segment) -> None:
        # Writer callback: a new active segment exists.  Retention runs here, off the
        # callers' threads; it must never stop appends, and simply runs again next roll.
        with self._lock:
            self._segments = (*self._segments, segment)
        try:
            self.enforce_retention()
        except Exception:
            logger.exception("file log retention failed")

    # ------------------------------------------------------------------ reading

    def read(self, offset: int, max_records: int = 1000, partition: int = 0) -> list[Record]:
        """Return up to ``max_records`` durable records from ``offset``; never blocks.

        Returns ``[]`` at or past the end and for ``max_records <= 0``; an offset below
        ``start_offset()`` reads from the start.  Where each read ends is remembered, so
        the next read from there goes on without a search (sequential reads cost one
        pread); another offset is found through its segment's sparse index.

        Raises:
            ValueError: ``offset`` is negative or ``partition`` is not 0.
            LogClosed: the log is closed.
            LogError: a frame is damaged, a segment is shorter than its offsets say, or
                reading failed.
        """
        values: list[bytes] = []
        stamps: list[int] = []
        first = self._read_checked(offset, max_records, partition, values, stamps, views=False)
        offsets = range(first, first + len(values))
        return list(map(Record, offsets, values, repeat(0), stamps))

    def read_batch(self, offset: int, max_records: int = 1000, partition: int = 0) -> RecordBatch:
        """Like :meth:`read` (same records, same checks: every frame's CRC and offset), as
        one :class:`RecordBatch`: payloads are gathered into one buffer with a single copy,
        without a Python object per record.  Empty at or past the end.

        Raises:
            ValueError, LogClosed, LogError: as ``read``.
        """
        chunks: list[memoryview] = []
        stamps = array("q")
        first = self._read_checked(offset, max_records, partition, chunks, stamps, views=True)
        batch = RecordBatch.of(0, array("q", range(first, first + len(chunks))), chunks, stamps)
        chunks.clear()  # release the views of the read buffers at once
        return batch

    def _read_checked(self, offset: int, max_records: int, partition: int, values: list, stamps: list[int] | array,
                      *, views: bool) -> int:
        """Check the arguments and read under the read lock (see ``_read_into``); 0 records
        for ``max_records <= 0``."""
        _check_partition(partition)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        if max_records <= 0:
            return offset
        with self._io_lock:
            try:
                return self._read_into(offset, max_records, values, stamps, views)
            except OSError as exc:
                raise LogError(f"cannot read {self.path}: {exc}") from exc

    def _read_into(self, offset: int, max_records: int, values: list, stamps: list[int] | array,
                   views: bool = False) -> int:
        """Append the payloads/timestamps read() returns; return the first offset (under the read lock).

        With ``views`` the payloads are memoryviews of the read buffers (see framing.decode).
        """
        with self._lock:
            if self._closed:
                raise LogClosed(f"log {self.path} is closed")
            segments = self._segments
            active = segments[-1]
            active_size, end = active.size, active.end  # one consistent durable view
        offset = first = max(offset, segments[0].base)
        if offset >= end:
            return first
        want = min(max_records, end - offset)
        cursor = self._cursors.pop(offset, None)
        if cursor is None:
            segment = segments[bisect_right([s.base for s in segments], offset) - 1]
            cursor = segment, segment.locate(offset, active_size if segment is active else segment.size)
        segment, pos = cursor
        while True:
            limit, stop = (active_size, end) if segment is active else (segment.size, segment.end)
            take = min(want - len(values), stop - offset)
            if take > 0:
                start = pos
                pos = segment.read_frames(pos, limit, offset, take, values, stamps, self._frame_estimate,
                                          views=views)
                self._frame_estimate = (pos - start) // take + 1
                offset = first + len(values)
            if len(values) >= want:
                break
            segment, pos = segments[segments.index(segment) + 1], 0  # go on in the next one
        self._cursors[offset] = (segment, pos)
        if len(self._cursors) > _CURSORS:
            self._cursors.popitem(last=False)
        return first

    def end_offset(self, partition: int = 0) -> int:
        """The offset the next durable record will get (the durable high watermark)."""
        _check_partition(partition)
        with self._lock:
            return self._segments[-1].end

    def start_offset(self, partition: int = 0) -> int:
        """The lowest offset still held; rises when retention deletes segments."""
        _check_partition(partition)
        with self._lock:
            return self._segments[0].base

    def wait(self, offset: int, timeout: float, partition: int = 0) -> bool:
        """Block until ``offset`` is durable.

        Returns:
            True once ``end_offset() > offset``; False when ``timeout`` seconds pass or
            the log is closed first.  Woken by the writer's fsync, never polls.
        """
        _check_partition(partition)
        with self._lock:
            self._durable.wait_for(lambda: self._segments[-1].end > offset or self._closed, timeout)
            return self._segments[-1].end > offset

    # ------------------------------------------------------------------ retention

    def enforce_retention(self) -> int:
        """Delete the oldest sealed segments the retention settings no longer keep.

        A segment goes while the log is larger than ``retention_bytes``, or when its
        newest record is older than ``retention_hours`` by the injected clock.  Deletion
        stops at the first segment that must stay, at the active segment, and at the
        first segment holding offsets at or above the lowest committed position of any
        group (some group has not read them).  With no group committed, positions hold
        nothing back.  Runs by itself after every segment roll.

        Returns:
            The number of segments deleted (0 when none may go or none is configured).

        Raises:
            LogError: a sealed segment is damaged (found while scanning for its age).
        """
        if self._read_only or (self._retention_bytes is None and self._retention_hours is None):
            return 0
        with self._retention_lock:
            with self._lock:
                segments = self._segments
            floor = self._positions.floor()
            total = sum(s.size for s in segments)
            now_ms = self._clock() * 1000
            doomed: list[Segment] = []
            for segment in segments[:-1]:
                if floor is not None and segment.end > floor:
                    break
                too_old = False
                if self._retention_hours is not None:
                    if segment.last_ts is None:
                        with self._io_lock:
                            segment.build_index()
                    too_old = now_ms - (segment.last_ts or 0) > self._retention_hours * 3_600_000
                if not (too_old or (self._retention_bytes is not None and total > self._retention_bytes)):
                    break
                doomed.append(segment)
                total -= segment.size
            if not doomed:
                return 0
            with self._lock:
                self._segments = self._segments[len(doomed):]
                self._stats.segments_deleted += len(doomed)
            with self._io_lock:  # waits out any read still using these descriptors
                for segment in doomed:
                    segment.close_reader()
                for offset in [o for o, (s, _) in self._cursors.items() if s in doomed]:
                    del self._cursors[offset]
            for segment in doomed:
                logger.info("retention deleted %s (offsets %d-%d)", segment.path, segment.base, segment.end - 1)
                segment.path.unlink()
            fsync_dir(self.path)
            return len(doomed)

    # ------------------------------------------------------------------ positions

    def commit(self, group: str, offset: int, partition: int = 0) -> None:
        """Durably store ``group``'s position (the next offset it will read).

        Raises:
            ValueError: ``group`` is not a safe file name (see positions.check_group),
                ``offset`` is negative, or ``partition`` is not 0.
            LogClosed: the log is closed.
            LogError: the log is read-only or the position file could not be written
                (the previous position stays).
        """
        _check_partition(partition)
        check_group(group)
        if self._closed:
            raise LogClosed(f"log {self.path} is closed")
        if self._read_only:
            raise LogError(f"log {self.path} is open read-only")
        with self._retention_lock:  # retention must not act on a floor being changed
            try:
                self._positions.commit(group, offset)
            except OSError as exc:
                raise LogError(f"cannot commit {group!r} in {self.path}: {exc}") from exc

    def committed(self, group: str, partition: int = 0) -> int | None:
        """``group``'s last committed position, or None if it never committed.

        Raises:
            ValueError: ``group`` is not a safe file name or ``partition`` is not 0.
        """
        _check_partition(partition)
        return self._positions.get(group)

    # ------------------------------------------------------------------ lifecycle

    def write_fault(self) -> str | None:
        """Why appends fail right now: the disk fault being retried and for how long.

        None when writes work (and for a read-only or closed log).
        """
        writer = self._writer
        if writer is None or (error := writer.fault) is None:
            return None
        since = writer.fault_since
        age = 0.0 if since is None else time.monotonic() - since
        return f"{error} (failing for {age:.1f}s)"

    def stats(self) -> LogStats:
        """A snapshot of the counters.

        ``appended``/``batches`` count acknowledged records/batches, ``fsyncs`` fsyncs
        that acknowledged something, ``bytes_written`` frame bytes written (durable or
        not), ``truncated_bytes`` torn-tail bytes cut when opening, ``segments_deleted``
        segments removed by retention.  ``extra``: ``segments`` held now,
        ``pending_batches`` waiting for the writer, ``rejected_batches`` refused because
        the queue was full, ``failed_batches`` failed by a write or fsync error or refused
        while one is retried, ``write_faults`` failed writes/fsyncs/probes,
        ``write_recoveries`` returns to working writes, ``write_failing`` 1 while failing (and, for
        a read-only log, ``ignored_tail_bytes``: an invalid tail it did not cut).
        """
        writer = self._writer
        with self._lock:
            stats = dataclasses.replace(self._stats, extra={**self._stats.extra, "segments": len(self._segments)})
        if writer is not None:
            stats.bytes_written = writer.bytes_written
            stats.extra.update(
                pending_batches=writer.pending, rejected_batches=writer.rejected, failed_batches=writer.failed,
                write_faults=writer.faults, write_recoveries=writer.recoveries,
                write_failing=int(writer.fault is not None),
            )
        return stats

    def close(self) -> None:
        """Resolve every batch submitted before, fsync, stop the writer, close files.

        Idempotent.  Later ``submit`` calls fail with LogClosed and ``read`` raises it.
        Called from a future's callback (on the writer thread) it cannot wait for the
        drain: the writer finishes the queue and releases the files on its way out.
        """
        if self._writer is not None and not self._writer.close():
            return
        self._release()

    def _release(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._durable.notify_all()
        with self._io_lock:
            for segment in getattr(self, "_segments", ()):
                segment.close_reader()
            self._cursors.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # drops the flock: another FileLog may open the log now
            self._lock_fd = -1


def _check_partition(partition: int) -> None:
    if partition != 0:
        raise ValueError(f"FileLog has a single partition 0, not {partition}")
