"""The contract every StreamLog backend keeps, written once.

A backend's test module subclasses :class:`LogContract` and says how to open its log::

    class TestFileLogContract(LogContract):
        def open_log(self, path: Path) -> StreamLog:
            return FileLog(path)

``path`` names one log: opening the same path again must give the same log (a backend
without files maps it to, e.g., a topic name), a new path a new, empty log.  Only
partition 0 and the public interface are used.  Nothing here sleeps to wait for work:
futures are awaited and ``wait`` is used, always with a timeout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adaptd.streams.log import LogClosed, LogError, Record, StreamLog

TIMEOUT = 10.0


class LogContract:
    """Abstract contract suite: subclasses implement :meth:`open_log`."""

    def open_log(self, path: Path) -> StreamLog:
        """Open (creating if needed) the log named by ``path``."""
        raise NotImplementedError

    @pytest.fixture
    def open_at(self, tmp_path: Path) -> Iterator[Callable[..., StreamLog]]:
        """Open logs under ``tmp_path`` by name; all are closed after the test."""
        opened: list[StreamLog] = []

        def open_(name: str = "log") -> StreamLog:
            log = self.open_log(tmp_path / name)
            opened.append(log)
            return log

        yield open_
        for log in opened:
            log.close()

    @pytest.fixture
    def log(self, open_at: Callable[..., StreamLog]) -> StreamLog:
        return open_at()

    # ------------------------------------------------------------------ appending

    def test_append_returns_consecutive_offsets_once_durable(self, log: StreamLog) -> None:
        assert log.append([b"a", b"b", b"c"], timeout=TIMEOUT) == [0, 1, 2]
        assert log.end_offset() == 3
        assert log.append([b"d"], timeout=TIMEOUT) == [3]
        assert log.end_offset() == 4

    def test_an_empty_batch_resolves_to_no_offsets(self, log: StreamLog) -> None:
        assert log.submit([]).result(TIMEOUT) == []
        assert log.end_offset() == 0

    def test_batches_submitted_without_waiting_get_offsets_in_submission_order(self, log: StreamLog) -> None:
        batches = [[b"%d-%d" % (i, j) for j in range(i % 3 + 1)] for i in range(50)]
        futures = [log.submit(batch) for batch in batches]
        offsets = [o for f in futures for o in f.result(TIMEOUT)]
        assert offsets == list(range(len(offsets)))
        assert [r.value for r in log.read(0, len(offsets))] == [v for batch in batches for v in batch]

    def test_a_batch_read_holds_exactly_the_records_a_plain_read_gives(self, log: StreamLog) -> None:
        values = [b"v%03d" % i + b"x" * (i % 7) for i in range(60)]
        log.append(values[:25], timeout=TIMEOUT)
        log.append(values[25:], timeout=TIMEOUT)
        for offset, count in ((0, 60), (0, 10), (17, 20), (59, 5), (60, 5)):
            plain = log.read(offset, count)
            batch = log.read_batch(offset, count)
            assert batch.values() == [r.value for r in plain], (offset, count)
            assert [r.offset for r in batch.records()] == [r.offset for r in plain], (offset, count)
            assert len(batch) == len(plain)

    def test_concurrent_submitters_get_unique_consecutive_offsets(self, log: StreamLog) -> None:
        threads, batches, size = 8, 25, 4
        results: dict[bytes, list[int]] = {}
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            try:
                for b in range(batches):
                    values = [b"t%d-b%d-r%d" % (t, b, r) for r in range(size)]
                    offsets = log.append(values, timeout=TIMEOUT)
                    results[values[0]] = offsets
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(TIMEOUT * 3)
        assert not errors and not any(w.is_alive() for w in workers)
        every = sorted(o for offsets in results.values() for o in offsets)
        assert every == list(range(threads * batches * size))
        for first_value, offsets in results.items():
            assert offsets == list(range(offsets[0], offsets[0] + size))  # a batch is contiguous
            assert log.read(offsets[0], 1)[0].value == first_value

    def test_values_round_trip_byte_for_byte(self, log: StreamLog) -> None:
        values = [b"", b"\x00" * 7, os.urandom(1000), "ünïcode".encode(), os.urandom(1 << 19)]
        offsets = log.append(values, timeout=TIMEOUT)
        assert [r.value for r in log.read(offsets[0], len(values))] == values

    def test_stats_count_acknowledged_records(self, log: StreamLog) -> None:
        log.append([b"x"] * 5, timeout=TIMEOUT)
        log.append([b"y"] * 2, timeout=TIMEOUT)
        assert log.stats().appended == 7

    # ------------------------------------------------------------------ reading

    def test_an_empty_log_reads_nothing(self, log: StreamLog) -> None:
        assert log.read(0) == []
        assert log.start_offset() == log.end_offset() == 0

    def test_read_returns_records_with_offsets_in_order(self, log: StreamLog) -> None:
        log.append([b"a", b"b", b"c"], timeout=TIMEOUT)
        records = log.read(0, 10)
        assert [(r.offset, r.value, r.partition) for r in records] == [(0, b"a", 0), (1, b"b", 0), (2, b"c", 0)]
        assert all(isinstance(r, Record) and r.timestamp_ms > 0 for r in records)

    def test_read_never_blocks_and_is_empty_past_the_end(self, log: StreamLog) -> None:
        log.append([b"a", b"b"], timeout=TIMEOUT)
        started = time.monotonic()
        assert log.read(2) == []
        assert log.read(1000) == []
        assert time.monotonic() - started < 1.0

    def test_read_returns_at_most_max_records(self, log: StreamLog) -> None:
        log.append([b"%d" % i for i in range(10)], timeout=TIMEOUT)
        assert [r.offset for r in log.read(0, 3)] == [0, 1, 2]
        assert log.read(0, 0) == []
        assert [r.offset for r in log.read(8, 100)] == [8, 9]

    def test_sequential_reads_resume_where_the_previous_ended(self, log: StreamLog) -> None:
        for i in range(20):
            log.append([b"%d" % (i * 5 + j) for j in range(5)], timeout=TIMEOUT)
        seen: list[Record] = []
        position = 0
        for _ in range(100):  # bounded: 100 reads of 7 are far more than 100 records
            batch = log.read(position, 7)
            if not batch:
                break
            seen += batch
            position = batch[-1].offset + 1
        assert [r.value for r in seen] == [b"%d" % i for i in range(100)]

    def test_read_from_any_offset_starts_there(self, log: StreamLog) -> None:
        log.append([b"%d" % i for i in range(50)], timeout=TIMEOUT)
        for offset in (49, 0, 17, 33, 17):
            assert [r.value for r in log.read(offset, 2)] == [b"%d" % o for o in range(offset, min(offset + 2, 50))]

    def test_read_offsets_interleave_with_appends(self, log: StreamLog) -> None:
        log.append([b"a"], timeout=TIMEOUT)
        assert [r.value for r in log.read(0)] == [b"a"]
        assert log.read(1) == []
        log.append([b"b"], timeout=TIMEOUT)
        assert [r.value for r in log.read(1)] == [b"b"]

    def test_wait_returns_once_the_offset_is_durable(self, log: StreamLog) -> None:
        appender = threading.Thread(target=lambda: log.append([b"late"], timeout=TIMEOUT))
        appender.start()
        try:
            assert log.wait(0, timeout=TIMEOUT) is True
            assert log.end_offset() > 0
        finally:
            appender.join(TIMEOUT)

    def test_wait_gives_up_after_the_timeout(self, log: StreamLog) -> None:
        log.append([b"a"], timeout=TIMEOUT)
        assert log.wait(0, timeout=0.01) is True
        started = time.monotonic()
        assert log.wait(1, timeout=0.05) is False
        assert time.monotonic() - started < 5.0

    # ------------------------------------------------------------------ durability

    def test_appended_records_survive_reopen(self, open_at: Callable[..., StreamLog]) -> None:
        log = open_at()
        log.append([b"a", b"b"], timeout=TIMEOUT)
        log.close()
        again = open_at()
        assert [(r.offset, r.value) for r in again.read(0)] == [(0, b"a"), (1, b"b")]
        assert again.append([b"c"], timeout=TIMEOUT) == [2]

    def test_close_resolves_every_batch_submitted_before_it(self, open_at: Callable[..., StreamLog]) -> None:
        log = open_at()
        futures = [log.submit([b"%d" % i]) for i in range(100)]
        log.close()
        assert [f.result(TIMEOUT) for f in futures] == [[i] for i in range(100)]
        assert open_at().end_offset() == 100

    def test_submit_after_close_fails_with_log_closed(self, log: StreamLog) -> None:
        log.close()
        log.close()  # idempotent
        future = log.submit([b"late"])
        with pytest.raises(LogClosed):
            future.result(TIMEOUT)
        assert issubclass(LogClosed, LogError)

    # ------------------------------------------------------------------ positions

    def test_a_group_that_never_committed_has_no_position(self, log: StreamLog) -> None:
        assert log.committed("projector") is None

    def test_commit_stores_the_position_per_group(self, log: StreamLog) -> None:
        log.append([b"a", b"b", b"c"], timeout=TIMEOUT)
        log.commit("projector", 2)
        log.commit("alerts", 1)
        log.commit("projector", 3)
        assert log.committed("projector") == 3
        assert log.committed("alerts") == 1

    def test_committed_position_survives_reopen(self, open_at: Callable[..., StreamLog]) -> None:
        log = open_at()
        log.append([b"a", b"b"], timeout=TIMEOUT)
        log.commit("projector", 2)
        log.close()
        assert open_at().committed("projector") == 2

    @pytest.mark.parametrize("group", ["", "../escape", "a/b", ".hidden", "x" * 200, "nul\x00"])
    def test_unsafe_group_names_are_refused_with_value_error(self, log: StreamLog, group: str) -> None:
        with pytest.raises(ValueError, match="group"):
            log.commit(group, 0)
        with pytest.raises(ValueError, match="group"):
            log.committed(group)
