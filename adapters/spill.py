"""The local spill: where batches wait while the daemon is unreachable.

Layout: one directory of NDJSON segment files, one serialized event per line, named
``{time_ns:020d}-{pid}-{random}.ndjson`` so that sorting names gives oldest first.

* A process only ever appends to a segment it created, and holds an exclusive ``flock``
  on it while it does, so two processes never write the same file.
* Every append is one ``write()`` of whole lines to an ``O_APPEND`` file; a crash can only
  leave a torn last line, which readers ignore.
* A reader (this process or any other sharing the directory, including a later one) takes
  the oldest segment it can lock, sends its lines oldest first and deletes the file once
  every line is acknowledged. A crash in between re-sends the segment from its start:
  delivery is at-least-once, and the daemon dedupes by event id.
* The directory is bounded by ``max_bytes``: past it, the oldest segments are deleted
  and their events counted in ``dropped``.

All methods are thread-safe and never raise ``OSError``: failures are logged once per
reason and the events concerned are counted as dropped.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; per-process file names still avoid corruption
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("adaptd.sdk")

SUFFIX = ".ndjson"


def default_spill_dir(url: str | None, token: str | None) -> Path:
    """The spill directory used when none is configured.

    ``$ADAPTD_SPILL_DIR``, else ``$XDG_CACHE_HOME/adaptd/spill``, else
    ``~/.cache/adaptd/spill``, plus a subdirectory keyed by (url, token): the daemon takes
    the tenant from the token, so events spilled under one credential must never be
    re-sent under another, nor to another daemon.
    """
    root = os.environ.get("ADAPTD_SPILL_DIR")
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "adaptd", "spill")
    key = hashlib.blake2b(f"{url}\0{token or ''}".encode(), digest_size=6).hexdigest()
    return Path(root) / key


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking flock on ``fd``; False when someone else holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@dataclass
class _Reader:
    path: Path
    fd: int
    size: int
    lines: list[bytes]
    pos: int = 0


class Spill:
    """A bounded spill directory shared safely by any number of processes."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = 64 * 1024 * 1024,
        *,
        segment_bytes: int | None = None,
        rescan_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        directory: Created on first write (mode 0700); may hold other processes' files.
        max_bytes: Bound on the bytes of all segments in the directory.
        segment_bytes: Size past which a new segment is started; default
            ``max_bytes // 8`` clamped to [512 B, 4 MiB], so dropping the oldest segment
            frees about an eighth of the budget.
        rescan_s: How often to list the directory for files other processes left.
        clock: Monotonic seconds, for the rescan interval.
        """
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(max(max_bytes // 8, 512), 4 * 1024 * 1024)
        self._rescan_s = rescan_s
        self._clock = clock
        self._lock = threading.Lock()
        self._w_fd: int | None = None
        self._w_path: Path | None = None
        self._w_size = 0
        self._reader: _Reader | None = None
        self._total = 0
        self._backlog = False
        self._last_scan = float("-inf")
        self._warned: set[str] = set()
        #: Events lost from the spill: over the bound, or a write that failed.
        self.dropped = 0

    # -- bookkeeping ---------------------------------------------------------------------

    def _warn(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 64:
            self._warned.add(key)
            log.warning(msg, *args)

    def _segments(self) -> list[tuple[Path, int]]:
        """Every segment in the directory with its size, oldest first."""
        out = []
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if entry.name.endswith(SUFFIX):
                        try:
                            out.append((Path(entry.path), entry.stat().st_size))
                        except FileNotFoundError:  # deleted by another process meanwhile
                            pass
        except FileNotFoundError:
            return []
        out.sort(key=lambda ps: ps[0].name)
        return out

    def _scan(self, force: bool = False) -> list[tuple[Path, int]] | None:
        if not force and self._clock() - self._last_scan < self._rescan_s:
            return None
        self._last_scan = self._clock()
        segs = self._segments()
        self._total = sum(size for _, size in segs)
        self._backlog = any(size > 0 for _, size in segs)
        return segs

    @property
    def bytes(self) -> int:
        """Bytes in the directory as last seen (own writes are counted immediately)."""
        return self._total

    def has_backlog(self) -> bool:
        """Whether any spilled event may be waiting (own or another process's)."""
        with self._lock:
            if self._reader is not None:
                return True
            self._scan()
            return self._backlog

    # -- writing -------------------------------------------------------------------------

    def _seal(self) -> None:
        """Close the segment being written (releasing its lock): it becomes readable."""
        if self._w_fd is not None:
            try:
                os.close(self._w_fd)
            except OSError:
                pass
        self._w_fd, self._w_path, self._w_size = None, None, 0

    def _writer(self, need: int) -> int:
        if self._w_fd is not None and self._w_size and self._w_size + need > self.segment_bytes:
            self._seal()
        if self._w_fd is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
            # Lock under a name readers ignore, then rename: a reader must never find
            # (and, being empty, delete) a new segment before its writer holds the lock.
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _try_lock(fd)
                os.rename(tmp, path)
            except OSError:
                os.close(fd)
                raise
            self._w_fd, self._w_path, self._w_size = fd, path, 0
        return self._w_fd

    def append(self, lines: Sequence[builtins.bytes]) -> int:  # builtins: ``bytes`` is a property here
        """Append serialized events (no newlines inside) as whole lines.

        Returns:
            How many were written; the rest (too large for the bound, or an I/O error)
            are counted in ``dropped``. An empty ``lines`` writes nothing and returns 0.
        """
        if not lines:
            return 0
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            if len(data) > self.max_bytes:
                self.dropped += len(lines)
                self._warn("too-large", "adaptd spill: batch of %d bytes exceeds max_spill_bytes", len(data))
                return 0
            try:
                self._scan()
                if self._total + len(data) > self.max_bytes and not self._make_room(len(data)):
                    self.dropped += len(lines)
                    self._warn("full", "adaptd spill: %s is full and held by other processes", self.directory)
                    return 0
                fd = self._writer(len(data))
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as exc:
                self.dropped += len(lines)
                self._warn(f"write:{exc.errno}", "adaptd spill: cannot write to %s: %s", self.directory, exc)
                if self._w_fd is not None:
                    try:  # cut a partial line so the file stays whole lines
                        os.ftruncate(self._w_fd, self._w_size)
                    except OSError:
                        pass
                    self._seal()
                return 0
            self._w_size += len(data)
            self._total += len(data)
            self._backlog = True
            return len(lines)

    def _make_room(self, need: int) -> bool:
        """Delete oldest segments until ``need`` more bytes fit; False if they cannot."""
        for path, size in self._scan(force=True) or []:
            if self._total + need <= self.max_bytes:
                break
            if self._reader is not None and path == self._reader.path:
                self.dropped += len(self._reader.lines) - self._reader.pos
                self._finish_reader()
                continue
            if path == self._w_path:
                self._seal()  # our own segment: we hold its lock through the writer
            lost = self._delete_locked(path)
            if lost is not None:
                self.dropped += lost
                self._total -= size
        return self._total + need <= self.max_bytes

    def _delete_locked(self, path: Path) -> int | None:
        """Delete ``path`` if no other process holds it; returns the events it held."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            if not _try_lock(fd):
                return None
            data = _read_all(fd)
            os.unlink(path)
            return data.count(b"\n")
        except FileNotFoundError:
            return 0
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def next_chunk(self, max_events: int, max_bytes: int | None = None) -> list[builtins.bytes] | None:
        """The oldest spilled events not yet acknowledged: at most ``max_events``, and
        at most ``max_bytes`` of lines (but always at least one event).

        The same chunk is returned again until ``ack()`` is called, so a failed resend is
        simply retried later. Segments other live processes are writing or reading are
        skipped.

        Returns:
            A non-empty list of serialized events, or None when nothing is available.
        """
        with self._lock:
            try:
                if self._reader is None:
                    self._open_oldest()
            except OSError as exc:
                self._warn(f"read:{exc.errno}", "adaptd spill: cannot read %s: %s", self.directory, exc)
                return None
            r = self._reader
            if r is None:
                return None
            chunk = r.lines[r.pos : r.pos + max_events]
            if max_bytes is not None:
                size = 0
                for i, line in enumerate(chunk):
                    size += len(line) + 1
                    if i and size > max_bytes:
                        return chunk[:i]
            return chunk

    def _open_oldest(self) -> None:
        for path, _ in self._scan(force=True) or []:
            if path == self._w_path:
                self._seal()
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                # Locked: another process writes or resends it. A different inode: it was
                # deleted and the name reused between our open and our lock.
                if not _try_lock(fd) or os.fstat(fd).st_ino != os.stat(path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            data = _read_all(fd)
            lines = data.split(b"\n")
            if lines.pop():  # the piece after the last newline: a write cut by a crash
                self._warn("torn", "adaptd spill: ignored a torn last line in %s", path.name)
            lines = [line for line in lines if line]
            self._reader = _Reader(path, fd, len(data), lines)
            if lines:
                return
            self._finish_reader()  # empty segment: just delete it
        self._backlog = False

    def ack(self, n: int) -> None:
        """Mark the first ``n`` events of the current chunk delivered (or given up on).

        A fully acknowledged segment is deleted. Does nothing without a current chunk.
        """
        with self._lock:
            r = self._reader
            if r is None:
                return
            r.pos += n
            if r.pos >= len(r.lines):
                self._finish_reader()

    def _finish_reader(self) -> None:
        r, self._reader = self._reader, None
        if r is None:
            return
        try:
            os.unlink(r.path)  # while still holding the lock: nobody re-reads it
        except OSError:
            pass
        try:
            os.close(r.fd)
        except OSError:
            pass
        self._total = max(0, self._total - r.size)
        self._last_scan = float("-inf")  # look for the next segment on the next call

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close open files (releasing their locks); unsent data stays for later."""
        with self._lock:
            self._seal()
            r, self._reader = self._reader, None
            if r is not None:
                try:
                    os.close(r.fd)
                except OSError:
                    pass

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's files without unlocking them.

        Closing our copy of an fd does not release a flock the parent still holds through
        its own copy, so the parent keeps its segments; the child starts new ones.
        """
        self._lock = threading.Lock()
        for fd in (self._w_fd, self._reader.fd if self._reader else None):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._w_fd, self._w_path, self._w_size, self._reader = None, None, 0, None
        self._last_scan = float("-inf")


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
