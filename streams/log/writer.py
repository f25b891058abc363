"""The file log's writer thread: a bounded queue of batches, group commit, fsync policy.

Callers ``submit`` batches and get futures; the one writer thread takes every batch that
waits, encodes them into one buffer, writes it with one ``write``, fsyncs once and only
then resolves the futures, so one fsync serves all concurrent writers.  Segments are
rolled here too.  The FileLog learns about durable progress and new segments through
two callbacks, and owns everything readers see.

Disk faults (ENOSPC, EIO, a failed fsync) are survived, not fatal: the batches the
failed write or fsync covered are failed (their callers answer 503 and retry), the
segment is cut back to its last durable byte so no half-written frame stays to be
mistaken for a record, and for ``retry_s`` seconds new batches are refused at once
(``fault`` says why).  Then the next batch is tried again, or, when none comes, the
thread probes for space by itself; the first success clears ``fault``.  No restart is
needed when space returns.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Literal

from adaptd.streams.log import framing
from adaptd.streams.log.base import LogClosed, LogError
from adaptd.streams.log.disk import Disk
from adaptd.streams.log.segment import CHUNK, Segment, fsync_dir, segment_path

logger = logging.getLogger(__name__)

#: Cap on one write group, so a deep queue of big batches does not balloon memory.
MAX_GROUP_BYTES = 16 << 20
#: Shortest pause between two idle probes for space while failing (even with retry_s 0).
MIN_PROBE_S = 0.05

Batch = tuple[list[bytes], "Future[list[int]]"]


def reject(future: Future[list[int]], error: BaseException) -> None:
    """Fail ``future`` unless it is already done or was cancelled meanwhile."""
    try:
        if not future.done():
            future.set_exception(error)
    except InvalidStateError:
        pass


class Writer:
    """Appends to the active segment on a thread of its own (see module docstring)."""

    def __init__(
        self,
        directory: Path,
        active: Segment,
        *,
        policy: Literal["batch", "interval"],
        interval_s: float,
        segment_bytes: int,
        max_pending: int,
        clock: Callable[[], float],
        on_durable: Callable[[Segment, int, int, int, int], None],
        on_roll: Callable[[Segment], None],
        on_exit: Callable[[], None],
        disk: Disk | None = None,
        retry_s: float = 0.5,
    ) -> None:
        """Open ``active`` for appending and start the thread.

        Args:
            directory: where new segments are created.
            active: the last segment (recovered: its size and end are durable).
            policy, interval_s: "batch" fsyncs every group, "interval" at most every
                ``interval_s`` seconds; acks always wait for the fsync that covers them.
            segment_bytes: roll before a batch would take the segment past this.
            max_pending: batches that may wait; the next is refused at once.
            clock: seconds since the epoch, stamped on each group's records.
            on_durable: ``(segment, size, end, batches, records)`` after each fsync, before
                the futures resolve: the new durable size/end of ``segment``.
            on_roll: a new, empty active segment exists (called on the writer thread).
            on_exit: the thread is ending after close() (release files).
            disk: the system calls on the active segment (a faulty one in tests).
            retry_s: after a disk fault, how long new batches are refused before the
                next attempt (see module docstring).
        """
        self._directory = directory
        self._policy = policy
        self._interval = interval_s
        self._segment_bytes = segment_bytes
        self._max_pending = max_pending
        self._clock = clock
        self._on_durable, self._on_roll, self._on_exit = on_durable, on_roll, on_exit
        self._disk = disk or Disk()
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: deque[Batch] = deque()
        self.closing = False
        #: Set once the thread crashed: every later batch fails with it.
        self.broken: LogError | None = None
        #: The disk fault being retried (None: writes work); ``fault_since`` its start
        #: (time.monotonic()).
        self.fault: LogError | None = None
        self.fault_since: float | None = None
        self._retry_at = self._probe_at = float("-inf")
        #: Failed writes/fsyncs, and recoveries from them.
        self.faults = self.recoveries = 0
        self.rejected = self.failed = self.bytes_written = 0
        # Thread-only state: the active segment, bytes written to it (synced or not), the
        # next offset to give out, and batches written but not yet fsynced.
        self._active = active
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        self._write_pos = active.size
        self._next_offset = active.end
        self._unsynced: list[tuple[Future[list[int]], int, int]] = []
        self._last_sync = float("-inf")
        self._thread = threading.Thread(target=self._run, name=f"filelog-writer:{directory}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Batches waiting for the thread."""
        return len(self._queue)

    def submit(self, values: list[bytes]) -> Future[list[int]]:
        """Queue a non-empty batch; never blocks.  See FileLog.submit for the failures."""
        future: Future[list[int]] = Future()
        with self._lock:
            if self.closing:
                future.set_exception(LogClosed(f"log {self._directory} is closed"))
            elif self.broken is not None:
                future.set_exception(self.broken)
            elif self.fault is not None and time.monotonic() < self._retry_at:
                self.failed += 1  # refused at once: waiting would only hold the caller longer
                future.set_exception(self.fault)
            elif len(self._queue) >= self._max_pending:
                self.rejected += 1
                future.set_exception(LogError("log writer queue full"))
            else:
                self._queue.append((values, future))
                self._work.notify()
        return future

    def close(self) -> bool:
        """Drain the queue, fsync and stop.  Returns False when called from the thread
        itself (a future callback): it cannot wait, the thread finishes on its own."""
        with self._lock:
            self.closing = True
            self._work.notify()
        if threading.current_thread() is self._thread:
            return False
        self._thread.join()
        return True

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # never leave a caller waiting on a dead thread
            logger.exception("file log writer crashed")
            self._fail(LogError(f"log writer crashed: {exc!r}"), ())
        finally:
            if self._fd >= 0:  # -1 after a roll that could not create the next segment
                os.close(self._fd)
            self._fd = -1
            self._on_exit()

    def _step(self) -> bool:
        """Write one group and fsync if the policy says so; False once closed and drained."""
        with self._lock:
            while not self._queue and not self.closing:
                if self.fault is not None:  # idle while failing: probe when the pause ends
                    if (due := self._probe_at - time.monotonic()) <= 0:
                        break
                    self._work.wait(due)
                elif not self._unsynced:
                    self._work.wait()
                elif (due := self._last_sync + self._interval - time.monotonic()) > 0:
                    self._work.wait(due)  # "interval": batches arriving now share the fsync
                else:
                    break
            group: list[Batch] = []
            size = 0
            while self._queue and size < MAX_GROUP_BYTES:
                group.append(self._queue.popleft())
                size += framing.encoded_size(group[-1][0])
            closing = self.closing
        refusal = self.broken or (self.fault if time.monotonic() < self._retry_at else None)
        if refusal is not None:
            for _, future in group:
                if not future.done():
                    self.failed += 1
                    reject(future, refusal)
            return bool(group) or not closing
        try:
            if self.fault is not None:
                self._recover(probe=not group)
            if group:
                self._write_group(group)
            if self._unsynced and (
                self._policy == "batch" or closing or time.monotonic() >= self._last_sync + self._interval
            ):
                self._sync()
        except Exception as exc:
            self._faulted(exc, [future for _, future in group])
        return bool(group) or not closing or bool(self._unsynced)

    def _write_group(self, group: list[Batch]) -> None:
        parts: list[bytes] = []
        size = 0
        parts_first = self._next_offset
        ts = int(self._clock() * 1000)
        for values, future in group:
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while waiting: never written
            batch_size = framing.encoded_size(values)
            if self._write_pos + size > 0 and self._write_pos + size + batch_size > self._segment_bytes:
                self._write(parts, parts_first, ts)
                parts, size = [], 0
                self._roll()
                parts_first = self._next_offset
            first = self._next_offset
            try:
                size += framing.encode_into(parts, values, first, ts)
            except ValueError as exc:  # a record too large for a frame: fail this batch only
                future.set_exception(LogError(str(exc)))
                continue
            self._next_offset = first + len(values)
            self._unsynced.append((future, first, len(values)))
        self._write(parts, parts_first, ts)

    def _write(self, parts: list[bytes], first_offset: int, ts: int) -> None:
        """Write encoded frames (the first holds ``first_offset``) to the active segment."""
        if not parts:
            return
        data = memoryview(b"".join(parts))
        active = self._active
        active.last_ts = ts
        index = active.index
        if index is not None and (not index or self._write_pos - index[-1][1] >= CHUNK):
            index.append((first_offset, self._write_pos))  # readers only look below the end
        if self._fd < 0:
            raise LogError(f"no segment open for writing in {self._directory}")
        while data:
            written = self._disk.write(self._fd, data)
            data = data[written:]
            self._write_pos += written
            self.bytes_written += written

    def _sync(self) -> None:
        """fdatasync, report the new durable end, then resolve the futures it covers."""
        self._disk.fdatasync(self._fd)  # appends only: the new size is flushed, mtime need not be
        self._last_sync = time.monotonic()
        acked, self._unsynced = self._unsynced, []
        self._on_durable(self._active, self._write_pos, self._next_offset, len(acked), sum(n for _, _, n in acked))
        if self.fault is not None:
            self._recovered()
        for future, first, n in acked:
            future.set_result(list(range(first, first + n)))

    def _roll(self) -> None:
        """Seal the active segment (fsynced first) and start one at the next offset."""
        if self._unsynced or self._write_pos != self._active.size:
            self._sync()
        os.close(self._fd)
        # From here on the sealed segment is never written again, even if creating the
        # next one fails: its end is the next segment's base.  A stale descriptor number
        # could be reused by another open() meanwhile, hence -1.
        self._fd = -1
        self._start_segment()

    def _start_segment(self) -> None:
        """Create (or, after a failed roll, reuse while empty) the segment at the next offset."""
        base = self._next_offset
        segment = Segment(base, segment_path(self._directory, base), 0, base)
        segment.index = []
        fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size:  # only an earlier failed roll may have left it, empty
                raise LogError(f"{segment.path} already holds data: the log directory is inconsistent")
            fsync_dir(self._directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._active, self._write_pos = segment, 0
        self._on_roll(segment)

    def _faulted(self, exc: Exception, group: list[Future[list[int]]]) -> None:
        """A write, fsync or roll failed: fail what it covered, cut back, pause (see module docstring)."""
        failed = [future for future, _, _ in self._unsynced] + group
        self._unsynced = []
        error = LogError(f"write to {self._directory} failed ({exc}): not stored; retrying in {self._retry_s:g}s")
        error.__cause__ = exc
        now = time.monotonic()
        with self._lock:
            if self.fault is None:
                self.fault_since = now
                logger.error("file log: %s", error)
            self.fault = error
            self._retry_at = now + self._retry_s
            self._probe_at = now + max(self._retry_s, MIN_PROBE_S)
            self.faults += 1
        failed = [future for future in dict.fromkeys(failed) if not future.done()]
        self.failed += len(failed)
        for future in failed:
            reject(future, error)
        try:  # best effort now; _recover() does it again before the next write
            self._cut_back()
        except OSError:
            pass

    def _cut_back(self) -> None:
        """Cut the active segment back to its durable end and forget what was written past it.

        Unacknowledged bytes must neither stay to be read as records after a restart nor
        sit before the next frames: the next write starts at the durable end again.
        """
        active = self._active
        self._write_pos, self._next_offset = active.size, active.end
        if active.index:  # entries past the durable end may now point into nothing
            active.index = [e for e in active.index if e[1] < active.size or e == (active.end, active.size)]
        if self._fd >= 0:
            self._disk.ftruncate(self._fd, active.size)
            self._disk.fdatasync(self._fd)

    def _recover(self, *, probe: bool) -> None:
        """Before the first attempt after a fault: reopen what a failed roll left closed,
        cut back, and when no batch waits (``probe``) check for room on the disk.

        Raises:
            OSError, LogError: still failing (the caller pauses again).
        """
        if self._fd < 0:  # a roll sealed the last segment but could not start the next
            self._start_segment()
        self._cut_back()
        if probe:
            self._disk.has_room(self._fd, self._active.size)
            self._recovered()

    def _recovered(self) -> None:
        with self._lock:
            if self.fault is None:
                return
            took = time.monotonic() - (self.fault_since or 0.0)
            self.fault = self.fault_since = None
            self._retry_at = self._probe_at = float("-inf")
            self.recoveries += 1
        logger.warning("file log: writes work again after %.1fs of failures", took)

    def _fail(self, error: LogError, group: Iterable[Future[list[int]]]) -> None:
        """The thread crashed: fail every unacknowledged batch and refuse appends for good."""
        failed = [future for future, _, _ in self._unsynced] + list(group)
        self._unsynced = []
        with self._lock:
            self.broken = error
            failed += [future for _, future in self._queue]
            self._queue.clear()
        failed = [future for future in dict.fromkeys(failed) if not future.done()]
        self.failed += len(failed)
        for future in failed:
            reject(future, error)
        if self._fd >= 0:
            try:  # unacknowledged bytes must not come back as records after a reopen
                self._disk.ftruncate(self._fd, self._active.size)
            except OSError:
                pass
