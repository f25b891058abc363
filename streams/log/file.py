"""Embedded stream log: segmented append-only files with group commit (one partition).

Directory layout::

    00000000000000000000.seg   frames (see framing), named by the first offset they hold
    positions/<group>.pos      a consumer group's committed position, replaced atomically
    LOCK                       flock'ed while open, so two processes never write one log

Callers put batches on a bounded queue; one writer thread takes every waiting batch,
writes them with one ``write``, fsyncs once and then resolves each batch's future, so
the cost of an fsync is shared by all concurrent writers (group commit).  Only fsynced
records are visible to readers.  Readers ``pread`` their own descriptors under one lock,
so retention can close a segment's descriptor without pulling it from under a read.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from concurrent.futures import Future
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Callable, Literal

from . import framing
from .base import LogClosed, LogError, LogStats, Record, StreamLog

logger = logging.getLogger(__name__)

_SUFFIX = ".seg"
_NAME = re.compile(r"(\d{20})\.seg\Z")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_CHUNK = 1 << 20  # bytes per pread when scanning; also the sparse index spacing
_MAX_READ = 8 << 20  # largest single pread of a read() call
_MAX_GROUP_BYTES = 16 << 20  # cap one write group so a deep queue does not balloon memory
_CURSORS = 64  # remembered read positions (one per sequential reader is plenty)
_first = itemgetter(0)


class _Segment:
    """One segment file.  ``size``/``end`` count durable bytes/offsets only."""

    __slots__ = ("base", "path", "size", "end", "last_ts", "index", "fd")

    def __init__(self, base: int, path: Path, size: int, end: int) -> None:
        self.base = base
        self.path = path
        self.size = size
        self.end = end
        self.last_ts: int | None = None
        # Sparse (offset, byte position) pairs, ascending; None until built (old segments
        # are only scanned when a random read or the age retention needs them).
        self.index: list[tuple[int, int]] | None = None
        self.fd: int | None = None  # read descriptor, opened lazily, under _io_lock


def _fsync_dir(path: Path) -> None:
    # A new or renamed file is durable only once its directory entry is.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    ) -> None:
        """Open (creating if needed) the log in ``path`` and recover its torn tail.

        Args:
            path: the log directory; created with its parents.
            fsync: "batch" fsyncs every write group; "interval" at most once per
                ``fsync_interval_ms`` (acks still wait for the fsync that covers them).
            fsync_interval_ms: see ``fsync``.
            segment_bytes: a segment is rolled before a batch would take it past this.
            retention_bytes: delete oldest segments while the log is larger than this.
            retention_hours: delete segments whose newest record is older than this.
            max_pending_batches: batches that may wait for the writer; more are refused.
            clock: seconds since the epoch, for record timestamps and age retention.

        Raises:
            ValueError: an option is out of range.
            LogError: another FileLog holds the directory, or a file cannot be read.
        """
        if fsync not in ("batch", "interval"):
            raise ValueError(f"fsync must be 'batch' or 'interval', not {fsync!r}")
        if segment_bytes <= framing.HEADER_SIZE or max_pending_batches < 1 or fsync_interval_ms < 0:
            raise ValueError("segment_bytes, max_pending_batches or fsync_interval_ms out of range")
        self.path = Path(path)
        self._policy = fsync
        self._interval = fsync_interval_ms / 1000
        self._segment_bytes = segment_bytes
        self._retention_bytes = retention_bytes
        self._retention_hours = retention_hours
        self._max_pending = max_pending_batches
        self._clock = clock
        self._stats = LogStats()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # writer waits for batches
        self._durable = threading.Condition(self._lock)  # wait() waits for the watermark
        self._io_lock = threading.Lock()  # read descriptors and the cursor cache
        self._retention_lock = threading.Lock()
        self._queue: deque[tuple[list[bytes], Future[list[int]]]] = deque()
        self._closing = False
        self._closed = False
        self._broken: LogError | None = None
        self._cursors: OrderedDict[int, tuple[_Segment, int]] = OrderedDict()
        self._frame_estimate = 512  # average frame bytes seen, sizes read() preads
        self.path.mkdir(parents=True, exist_ok=True)
        self._positions_dir = self.path / "positions"
        self._positions_dir.mkdir(exist_ok=True)
        self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise LogError(f"log directory {self.path} is in use by another FileLog") from None
        try:
            self._positions = self._load_positions()
            self._segments = self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise
        active = self._segments[-1]
        # Writer-thread state: bytes written (maybe not yet synced) and the next offset.
        self._wfd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        self._write_pos = active.size
        self._next_offset = active.end
        self._unsynced: list[tuple[Future[list[int]], int, int]] = []
        self._last_sync = float("-inf")
        self._writer = threading.Thread(target=self._run_writer, name=f"filelog-writer:{self.path.name}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ appending

    def submit(self, values: list[bytes], keys: list[bytes] | None = None) -> Future[list[int]]:
        """Queue a batch; never blocks.  See StreamLog.submit.

        The future fails with LogClosed after close(), with LogError("log writer queue
        full") when ``max_pending_batches`` batches already wait, and with LogError when
        writing or fsyncing fails (the log then refuses appends until reopened).
        Callbacks added to the future run on the writer thread: keep them short.

        Raises:
            TypeError: a value is not bytes (a caller bug, reported at once).
        """
        values = list(values)
        if not set(map(type, values)) <= {bytes}:
            raise TypeError("FileLog records must be bytes")
        future: Future[list[int]] = Future()
        with self._lock:
            if self._closing:
                future.set_exception(LogClosed(f"log {self.path} is closed"))
            elif self._broken is not None:
                future.set_exception(self._broken)
            elif not values:
                future.set_result([])
            elif len(self._queue) >= self._max_pending:
                self._stats.extra["rejected_batches"] = self._stats.extra.get("rejected_batches", 0) + 1
                future.set_exception(LogError("log writer queue full"))
            else:
                self._queue.append((values, future))
                self._work.notify()
        return future

    def _run_writer(self) -> None:
        try:
            while self._writer_step():
                pass
        except BaseException as exc:  # never leave a caller waiting on a dead thread
            logger.exception("file log writer crashed")
            self._fail(LogError(f"log writer crashed: {exc!r}"))

    def _writer_step(self) -> bool:
        """Write one group, fsync when the policy says so; False when closed and drained."""
        with self._lock:
            while not self._queue and not self._closing:
                if not self._unsynced:
                    self._work.wait()
                elif (due := self._last_sync + self._interval - time.monotonic()) > 0:
                    self._work.wait(due)
                else:
                    break
            group, size = [], 0
            while self._queue and (not group or size < _MAX_GROUP_BYTES):
                values, future = self._queue.popleft()
                group.append((values, future))
                size += framing.encoded_size(values)
            closing = self._closing
        if self._broken is not None:
            for _, future in group:
                future.set_exception(self._broken)
            return bool(group) or not closing
        try:
            if group:
                self._write_group(group)
            if self._unsynced and (
                self._policy == "batch" or closing or time.monotonic() >= self._last_sync + self._interval
            ):
                self._sync()
        except Exception as exc:
            error = LogError(f"write to {self.path} failed: {exc!r}")
            error.__cause__ = exc
            self._fail(error)
        return bool(group) or not closing or bool(self._unsynced)

    def _write_group(self, group: list[tuple[list[bytes], Future[list[int]]]]) -> None:
        parts: list[bytes] = []
        size = 0
        ts = int(self._clock() * 1000)
        for values, future in group:
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while waiting: never written
            batch_size = framing.encoded_size(values)
            if self._write_pos + size > 0 and self._write_pos + size + batch_size > self._segment_bytes:
                self._write(parts)
                parts, size = [], 0
                self._roll()
            first = self._next_offset
            try:
                size += framing.encode_into(parts, values, first, ts)
            except ValueError as exc:  # too large a record: fail this batch only
                future.set_exception(LogError(str(exc)))
                continue
            self._next_offset = first + len(values)
            self._unsynced.append((future, first, len(values)))
        self._write(parts)
        self._segments[-1].last_ts = ts

    def _write(self, parts: list[bytes]) -> None:
        if not parts:
            return
        data = memoryview(b"".join(parts))
        active = self._segments[-1]
        if active.index is not None and (not active.index or self._write_pos - active.index[-1][1] >= _CHUNK):
            active.index.append((self._next_offset - len(parts) // 2, self._write_pos))
        while data:
            written = os.write(self._wfd, data)
            data = data[written:]
            self._write_pos += written
            self._stats.bytes_written += written

    def _sync(self) -> None:
        """fdatasync the active segment, publish the new watermark, resolve futures."""
        os.fdatasync(self._wfd)  # appends: the size is flushed too, mtime is not needed
        self._last_sync = time.monotonic()
        acked, self._unsynced = self._unsynced, []
        with self._lock:
            active = self._segments[-1]
            active.size, active.end = self._write_pos, self._next_offset
            self._stats.fsyncs += 1
            self._stats.batches += len(acked)
            self._stats.appended += sum(n for _, _, n in acked)
            self._durable.notify_all()
        for future, first, n in acked:
            future.set_result(list(range(first, first + n)))

    def _roll(self) -> None:
        """Seal the active segment (synced) and start a new one at the next offset."""
        if self._unsynced or self._write_pos != self._segments[-1].size:
            self._sync()
        os.close(self._wfd)
        path = self.path / f"{self._next_offset:020d}{_SUFFIX}"
        self._wfd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        _fsync_dir(self.path)
        segment = _Segment(self._next_offset, path, 0, self._next_offset)
        segment.index = []
        with self._lock:
            self._segments = (*self._segments, segment)
        self._write_pos = 0
        try:
            self.enforce_retention()
        except Exception:  # retention must never stop appends; it retries at the next roll
            logger.exception("file log retention failed")

    def _fail(self, error: LogError) -> None:
        """Fail every unacked batch, refuse further appends, drop unsynced bytes."""
        failed, self._unsynced = self._unsynced, []
        with self._lock:
            self._broken = error
            failed += [(future, 0, 0) for _, future in self._queue]
            self._queue.clear()
            self._stats.extra["failed_batches"] = self._stats.extra.get("failed_batches", 0) + len(failed)
        for future, _, _ in failed:
            if not future.done():
                future.set_exception(error)
        try:  # unacked bytes must not come back as records after a reopen
            os.ftruncate(self._wfd, self._segments[-1].size)
        except OSError:
            pass
