"""The stream log interface every backend implements (file, kafka).

A log is an ordered sequence of opaque byte records per partition, each with a logical
offset, strictly increasing per partition: consecutive (0, 1, 2, ...) for the file log
and a plain Kafka log, with a gap after each message for the daemon's packed Kafka log
(``adaptd.streams.kafka.packing``).  Writers append batches and are told the
offsets only once the batch is durable; readers poll from an offset and never block;
consumer groups store their position durably.
"""

from __future__ import annotations

import abc
from array import array
from bisect import bisect_left
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import accumulate


class LogError(Exception):
    """The log could not do what was asked (closed, full, I/O error)."""


class CorruptLog(LogError):
    """A damaged frame that is not a torn tail: acknowledged records may lie after it.

    Nothing was cut. ``segment`` is the file, ``position`` the byte of the damaged frame,
    ``offset`` the offset that frame should carry; the message names the command that
    reports every damaged frame (``adaptd log verify``).
    """

    def __init__(self, segment: str, position: int, offset: int, reason: str, data_dir: str) -> None:
        super().__init__(
            f"corrupt frame in {segment} at byte {position} (offset {offset}): {reason}. "
            f"This is not a torn tail (valid frames follow it), so nothing was cut and the log "
            f"will not open. Run `adaptd log verify --data-dir {data_dir}` for a report of every "
            f"damaged frame, then restore the segment from a backup, or run `adaptd log repair "
            f"--data-dir {data_dir}` (daemon stopped) to move the unreadable bytes to {data_dir}/log/quarantine "
            f"and keep every readable record at its offset."
        )
        self.segment, self.position, self.offset, self.reason = segment, position, offset, reason


class LogClosed(LogError):
    """The log has been closed; nothing more can be appended."""


@dataclass(slots=True)
class Record:
    """One record read back from the log (treat as read-only).

    Not frozen on purpose: a frozen dataclass's __init__ costs ~3x more, and read() builds
    one per record on the hot path of projection and replay.
    """

    offset: int
    value: bytes
    partition: int = 0
    timestamp_ms: int = 0


@dataclass(slots=True)
class RecordBatch:
    """Records of one partition read in one call, held as flat buffers (treat as read-only).

    Bulk readers (projector, replay) take a batch this way so that no Python object is
    made per record: ``data`` holds the payloads back to back, ``bounds`` their limits
    (``bounds[i]:bounds[i + 1]`` is record ``i``; ``bounds[0] == 0``), ``offsets`` and
    ``timestamps`` one int64 each.  The three arrays are ``array('q')``, so they hand
    their memory to Arrow or numpy without a copy.  An empty batch has ``bounds == [0]``.
    """

    partition: int
    offsets: array
    data: bytes
    bounds: array
    timestamps: array

    def __len__(self) -> int:
        return len(self.offsets)

    def value(self, i: int) -> bytes:
        """The payload of record ``i`` (a new bytes object)."""
        return self.data[self.bounds[i]:self.bounds[i + 1]]

    def values(self) -> list[bytes]:
        """Every payload as bytes (one object per record: for the slow paths only)."""
        data, bounds = self.data, self.bounds
        return [data[bounds[i]:bounds[i + 1]] for i in range(len(self.offsets))]

    def records(self) -> list[Record]:
        """The batch as :class:`Record` objects (one per record: for the slow paths only)."""
        return list(map(Record, self.offsets, self.values(), [self.partition] * len(self), self.timestamps))

    def since(self, offset: int) -> RecordBatch:
        """The records at or after ``offset`` (offsets ascend); ``self`` when that is all."""
        i = bisect_left(self.offsets, offset)
        if i == 0:
            return self
        start = self.bounds[i]
        return RecordBatch(self.partition, self.offsets[i:], self.data[start:],
                           array("q", (b - start for b in self.bounds[i:])), self.timestamps[i:])

    @classmethod
    def of(cls, partition: int, offsets: array, chunks: list, timestamps: array) -> RecordBatch:
        """A batch from payload pieces (bytes or memoryviews, joined in one copy)."""
        return cls(partition, offsets, b"".join(chunks), array("q", accumulate(map(len, chunks), initial=0)),
                   timestamps)

    @classmethod
    def from_records(cls, records: list[Record], partition: int | None = None) -> RecordBatch:
        """A batch holding ``records`` (in their order; they share one partition).

        Raises:
            ValueError: the records come from more than one partition.
        """
        if partition is None:
            partition = records[0].partition if records else 0
        if any(r.partition != partition for r in records):
            raise ValueError("a RecordBatch holds records of one partition")
        return cls.of(partition, array("q", [r.offset for r in records]), [r.value for r in records],
                      array("q", [r.timestamp_ms for r in records]))


@dataclass(slots=True)
class LogStats:
    """Counters a backend exposes (what it cut, dropped or retained is visible)."""

    appended: int = 0
    batches: int = 0
    fsyncs: int = 0
    bytes_written: int = 0
    truncated_bytes: int = 0
    segments_deleted: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class StreamLog(abc.ABC):
    """A durable, append-only, partitioned record log."""

    #: Number of partitions; offsets are per partition.
    partitions: int = 1

    @abc.abstractmethod
    def submit(self, values: list[bytes], keys: list[bytes] | None = None) -> Future[list[int]]:
        """Queue a batch for appending.

        Args:
            values: the records, in order.  An empty list resolves at once to ``[]``.
            keys: optional partition keys, one per value (records with the same key keep
                their order).  Backends with one partition ignore them.

        Returns:
            A future that resolves to the offset of each record once the whole batch is
            durable (fsynced, or acknowledged by the broker), or fails with LogError.
        """

    def append(
        self, values: list[bytes], keys: list[bytes] | None = None, timeout: float | None = None
    ) -> list[int]:
        """Append a batch and block until it is durable; return the records' offsets."""
        return self.submit(values, keys).result(timeout)

    @abc.abstractmethod
    def read(self, offset: int, max_records: int = 1000, partition: int = 0) -> list[Record]:
        """Return up to ``max_records`` durable records starting at ``offset``.

        Never blocks: returns ``[]`` when nothing at or after ``offset`` is durable yet.
        An offset below the log start (removed by retention) reads from the log start.
        """

    def read_batch(self, offset: int, max_records: int = 1000, partition: int = 0) -> RecordBatch:
        """Like :meth:`read`, as one :class:`RecordBatch` (empty when ``read`` gives ``[]``).

        The default wraps ``read``; backends override it to skip the per-record objects.
        Same errors as ``read``.
        """
        return RecordBatch.from_records(self.read(offset, max_records, partition), partition)

    @abc.abstractmethod
    def end_offset(self, partition: int = 0) -> int:
        """The offset the next durable record will have (the high watermark)."""

    @abc.abstractmethod
    def start_offset(self, partition: int = 0) -> int:
        """The lowest offset still held (after retention)."""

    def wait(self, offset: int, timeout: float, partition: int = 0) -> bool:
        """Wait until a record at ``offset`` is durable or ``timeout`` seconds pass.

        Returns True when ``end_offset(partition) > offset``.  The default polls; backends
        override it with a condition variable.
        """
        import time

        deadline = time.monotonic() + timeout
        while self.end_offset(partition) <= offset:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.01, remaining))
        return True

    @abc.abstractmethod
    def commit(self, group: str, offset: int, partition: int = 0) -> None:
        """Durably store ``group``'s position (the next offset it will read)."""

    @abc.abstractmethod
    def committed(self, group: str, partition: int = 0) -> int | None:
        """``group``'s stored position, or None if it never committed."""

    @abc.abstractmethod
    def stats(self) -> LogStats:
        """Current counters."""

    def write_fault(self) -> str | None:
        """Why appends fail right now (a disk fault being retried), None when they work.

        For readiness checks.  Backends that cannot tell return None.
        """
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Finish pending appends (they still resolve), make them durable, release files.

        Idempotent.  Appends submitted after close fail with LogClosed.
        """

    def __enter__(self) -> StreamLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
