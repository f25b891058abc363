"""An in-memory ``StreamLog`` (one partition), for projector and replay tests."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from adaptd.streams.log.base import LogStats, Record, StreamLog

#: Append time of offset 0 (ms since the epoch); offset n is appended n ms later.
APPEND_MS_0 = 1_700_000_000_000


class MemoryLog(StreamLog):
    """Records held in a list; offsets are list positions, nothing is ever durable.

    Appends are acknowledged at once; ``wait`` wakes on the next append.
    """

    def __init__(self) -> None:
        self._values: list[bytes] = []
        self._changed = threading.Condition()
        self.commits: dict[tuple[str, int], int] = {}

    def submit(self, values: list[bytes], keys: list[bytes] | None = None) -> Future[list[int]]:
        future: Future[list[int]] = Future()
        with self._changed:
            first = len(self._values)
            self._values.extend(values)
            self._changed.notify_all()
        future.set_result(list(range(first, first + len(values))))
        return future

    def read(self, offset: int, max_records: int = 1000, partition: int = 0) -> list[Record]:
        with self._changed:
            end = min(len(self._values), offset + max_records)
            return [Record(o, self._values[o], 0, APPEND_MS_0 + o) for o in range(offset, end)]

    def end_offset(self, partition: int = 0) -> int:
        return len(self._values)

    def start_offset(self, partition: int = 0) -> int:
        return 0

    def wait(self, offset: int, timeout: float, partition: int = 0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._values) > offset, timeout)

    def commit(self, group: str, offset: int, partition: int = 0) -> None:
        self.commits[(group, partition)] = offset

    def committed(self, group: str, partition: int = 0) -> int | None:
        return self.commits.get((group, partition))

    def stats(self) -> LogStats:
        return LogStats(appended=len(self._values))

    def close(self) -> None:
        pass
