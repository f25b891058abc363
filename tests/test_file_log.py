"""The embedded file log: the shared contract plus what only files have (frames, torn
tails, segments, retention, fsync policies, crashes)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from log_contract import TIMEOUT, LogContract

from adaptd.streams.log import CorruptLog, LogClosed, LogError, StreamLog, framing, open_log
from adaptd.streams.log.file import FileLog
from adaptd.streams.log.segment import Segment

REPO = Path(__file__).resolve().parents[1]


class TestFileLogContract(LogContract):
    def open_log(self, path: Path) -> StreamLog:
        return FileLog(path)


class FakeClock:
    """Seconds since the epoch that only move when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += hours * 3600


class Opener:
    """Opens FileLogs on one directory and closes every one of them at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[FileLog] = []

    def __call__(self, **options: object) -> FileLog:
        log = FileLog(self.path, **options)  # type: ignore[arg-type]
        self.opened.append(log)
        return log

    def reopen(self, **options: object) -> FileLog:
        """Close what is open, then open the directory again."""
        self.close_all()
        return self(**options)

    def close_all(self) -> None:
        for log in self.opened:
            log.close()


@pytest.fixture
def make_log(tmp_path: Path) -> Iterator[Opener]:
    """``make_log(**options)`` opens ``tmp_path/log``; all are closed after the test."""
    opener = Opener(tmp_path / "log")
    yield opener
    opener.close_all()


def segments_of(log: FileLog) -> list[Path]:
    return sorted(log.path.glob("*.seg"))


def fill(log: FileLog, batches: int, per_batch: int = 10, size: int = 100) -> list[bytes]:
    """Append ``batches`` batches of recognisable values; return all values in order."""
    values = []
    for b in range(batches):
        batch = [(b"%06d:" % (b * per_batch + r)).ljust(size, b".") for r in range(per_batch)]
        log.append(batch, timeout=TIMEOUT)
        values += batch
    return values


# ---------------------------------------------------------------------- framing


def test_frames_round_trip_with_offsets_and_timestamps() -> None:
    values = [b"", b"a", os.urandom(500)]
    buf = framing.encode(values, 7, 1234)
    assert len(buf) == framing.encoded_size(values) == 3 * framing.HEADER_SIZE + 501
    got, stamps = [], []
    assert framing.decode(buf, 0, 7, 10, got, stamps) == len(buf)
    assert got == values and stamps == [1234] * 3
    assert framing.scan(buf, 0, 7) == framing.Scan(len(buf), 10, 1234, 0, None)


def test_decoding_stops_before_a_frame_the_buffer_cuts_short() -> None:
    buf = framing.encode([b"first", b"second"], 0, 1)
    cut = buf[:-3]
    got: list[bytes] = []
    end = framing.decode(cut, 0, 0, 10, got, [])
    assert got == [b"first"]
    assert framing.frame_size_at(cut, end) == framing.HEADER_SIZE + len(b"second")
    assert framing.scan(cut, 0, 0).need == framing.HEADER_SIZE + len(b"second")


def test_a_flipped_payload_bit_or_a_wrong_offset_is_a_frame_error() -> None:
    buf = bytearray(framing.encode([b"payload"], 0, 1))
    buf[-1] ^= 1
    with pytest.raises(framing.FrameError, match="CRC"):
        framing.decode(bytes(buf), 0, 0, 1, [], [])
    assert "CRC" in (framing.scan(bytes(buf), 0, 0).error or "")
    with pytest.raises(framing.FrameError, match="offset"):
        framing.decode(framing.encode([b"x"], 5, 1), 0, 4, 1, [], [])


# ---------------------------------------------------------------------- files and recovery


def test_segments_are_named_by_their_first_offset(make_log: Opener) -> None:
    log = make_log(segment_bytes=4096)
    fill(log, 30)
    names = [p.name for p in segments_of(log)]
    assert names[0] == "00000000000000000000.seg" and len(names) > 3
    for path in segments_of(log):
        first = framing.HEADER.unpack_from(path.read_bytes(), 0)[2]
        assert path.name == f"{first:020d}.seg"
        assert path.stat().st_size <= 4096


def test_reads_cross_segment_boundaries_in_one_call_and_step_by_step(make_log: Opener) -> None:
    log = make_log(segment_bytes=4096)
    values = fill(log, 30)
    assert [r.value for r in log.read(0, 10_000)] == values
    stepped, position = [], 0
    for _ in range(len(values)):
        batch = log.read(position, 13)
        if not batch:
            break
        stepped += [r.value for r in batch]
        position = batch[-1].offset + 1
    assert stepped == values


def test_random_reads_in_segments_of_an_earlier_run_find_their_offset(make_log: Opener) -> None:
    values = fill(make_log(segment_bytes=4096), 30)
    log = make_log.reopen(segment_bytes=4096)  # old segments have no index until needed
    for offset in (155, 3, 299, 0, 150, 42, 299):
        assert log.read(offset, 1)[0].value == values[offset]


def test_sequential_reads_use_the_cursor_not_a_search(make_log: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(segment_bytes=4096)
    fill(log, 30)
    searches = []
    original = Segment.scan
    monkeypatch.setattr(Segment, "scan", lambda self, *a, **k: searches.append(a) or original(self, *a, **k))
    position = 0
    for _ in range(100):
        batch = log.read(position, 7)
        if not batch:
            break
        position = batch[-1].offset + 1
    assert position == 300
    assert searches == []  # offset 0 starts its segment; from there the cursor leads


def test_a_torn_tail_is_cut_on_open_and_appends_continue_after_the_good_records(
    make_log: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log()
    values = fill(log, 5)
    log.close()
    segment = segments_of(log)[-1]
    good_size = segment.stat().st_size
    next_frame = framing.encode([b"never acknowledged"], len(values), 1)
    with open(segment, "ab") as f:
        f.write(next_frame[: len(next_frame) - 5] + b"garbage")  # a torn frame, then junk
    with caplog.at_level(logging.WARNING):
        log = make_log()
    assert log.stats().truncated_bytes == len(next_frame) + 2
    assert segment.name in caplog.text and str(len(next_frame) + 2) in caplog.text
    assert segment.stat().st_size == good_size
    assert [r.value for r in log.read(0, 1000)] == values
    assert log.append([b"next"], timeout=TIMEOUT) == [len(values)]


def test_a_tail_frame_with_a_bad_crc_is_cut(make_log: Opener) -> None:
    log = make_log()
    values = fill(log, 2)
    log.close()
    segment = segments_of(log)[-1]
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # last byte of the last record's payload
    segment.write_bytes(bytes(data))
    log = make_log()
    assert log.stats().truncated_bytes == framing.HEADER_SIZE + len(values[-1])
    assert log.end_offset() == len(values) - 1
    assert [r.value for r in log.read(0, 1000)] == values[:-1]
    assert log.append([b"replacement"], timeout=TIMEOUT) == [len(values) - 1]


def test_garbage_in_the_middle_of_an_older_segment_refuses_the_open_and_changes_nothing(make_log: Opener) -> None:
    log = make_log(segment_bytes=4096)
    fill(log, 30)
    log.close()
    first = segments_of(log)[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=first.name):
        make_log(segment_bytes=4096)
    assert first.read_bytes() == bytes(data)


def test_a_second_writer_on_the_same_directory_is_refused(make_log: Opener) -> None:
    log = make_log()
    with pytest.raises(LogError, match="in use"):
        FileLog(log.path)
    log.close()
    assert make_log().end_offset() == 0


def test_a_read_only_log_reads_a_snapshot_and_changes_nothing(make_log: Opener) -> None:
    log = make_log()
    values = fill(log, 3)
    segment = segments_of(log)[-1]
    with open(segment, "ab") as f:
        f.write(b"partial frame being written")
    reader = FileLog(log.path, read_only=True)
    try:
        assert [r.value for r in reader.read(0, 1000)] == values
        with pytest.raises(LogError, match="read-only"):
            reader.submit([b"x"]).result(TIMEOUT)
        with pytest.raises(LogError, match="read-only"):
            reader.commit("g", 0)
        assert segment.read_bytes().endswith(b"partial frame being written")
    finally:
        reader.close()
    with pytest.raises(LogError, match="no log"):
        FileLog(log.path / "missing", read_only=True)


def test_the_factory_opens_a_file_log_under_the_data_dir(tmp_path: Path) -> None:
    log = open_log("file", tmp_path, segment_bytes=8192)
    try:
        assert isinstance(log, FileLog) and log.path == tmp_path / "log"
    finally:
        log.close()


# ---------------------------------------------------------------------- retention


def test_size_retention_deletes_oldest_segments_but_never_the_active_one(make_log: Opener) -> None:
    log = make_log(segment_bytes=4096, retention_bytes=10_000)
    values = fill(log, 60)
    sizes = [p.stat().st_size for p in segments_of(log)]
    assert sum(sizes) <= 10_000 + 4096 and log.stats().segments_deleted > 0
    start = log.start_offset()
    assert start > 0 and segments_of(log)[0].name == f"{start:020d}.seg"
    assert [r.value for r in log.read(0, 10_000)] == values[start:]  # below start reads from start
    assert log.read(0, 1)[0].offset == start
    log.close()
    log = make_log(segment_bytes=4096, retention_bytes=1)
    assert log.enforce_retention() >= 1
    assert len(segments_of(log)) == 1 and log.end_offset() == len(values)  # the active one stays


def test_age_retention_uses_the_injected_clock(make_log: Opener) -> None:
    clock = FakeClock()
    log = make_log(segment_bytes=4096, clock=clock)
    fill(log, 10)
    old_end = log.end_offset()
    clock.advance(hours=2)
    fill(log, 10)
    log = make_log.reopen(segment_bytes=4096, retention_hours=1.0, clock=clock)  # ages unknown until scanned
    assert log.enforce_retention() >= 1
    start = log.start_offset()
    assert 0 < start <= old_end
    # Old records may stay only in the first segment left, beside newer ones.
    bases = [int(p.stem) for p in segments_of(log)]
    old = [r.offset for r in log.read(start, 10_000) if r.timestamp_ms < int(clock.now * 1000)]
    assert not old or max(old) < bases[1]
    clock.advance(hours=2)
    log.enforce_retention()
    assert len(segments_of(log)) == 1


def test_retention_keeps_segments_a_group_has_not_read(make_log: Opener) -> None:
    log = make_log(segment_bytes=4096)
    values = fill(log, 30)
    log.commit("projector", 40)
    log.commit("alerts", 250)
    log.close()
    log = make_log(segment_bytes=4096, retention_bytes=1)
    log.enforce_retention()
    assert 0 < log.start_offset() <= 40  # offsets from 40 on are all still here
    assert [r.value for r in log.read(40, 10_000)] == values[40:]
    log.commit("projector", 250)
    log.enforce_retention()
    assert 40 < log.start_offset() <= 250


# ---------------------------------------------------------------------- writer


def test_interval_fsync_shares_fsyncs_and_acks_only_durable_records(make_log: Opener) -> None:
    log = make_log(fsync="interval", fsync_interval_ms=50)
    early_acks: list[int] = []

    def check(future) -> None:  # runs on the writer thread right after the ack
        if log.end_offset() <= future.result()[-1]:
            early_acks.append(future.result()[-1])

    futures = [log.submit([b"%d" % i]) for i in range(40)]
    for future in futures:
        future.add_done_callback(check)
    assert [f.result(TIMEOUT) for f in futures] == [[i] for i in range(40)]
    assert not early_acks
    assert log.stats().fsyncs < 40 and log.stats().batches == 40


def test_a_full_queue_fails_the_batch_at_once_without_blocking(make_log: Opener) -> None:
    entered, release = threading.Event(), threading.Event()

    def stalling_clock() -> float:  # the writer reads the clock once per group: hold it there
        entered.set()
        release.wait(TIMEOUT)
        return time.time()

    log = make_log(max_pending_batches=2, clock=stalling_clock)
    first = log.submit([b"0"])
    assert entered.wait(TIMEOUT)  # the writer holds batch 0, the queue is empty
    queued = [log.submit([b"1"]), log.submit([b"2"])]
    started = time.monotonic()
    refused = log.submit([b"3"])
    assert time.monotonic() - started < 1.0
    with pytest.raises(LogError, match="log writer queue full"):
        refused.result(0)
    assert log.stats().extra["rejected_batches"] == 1
    release.set()
    assert [f.result(TIMEOUT) for f in [first, *queued]] == [[0], [1], [2]]


def test_a_failed_fsync_fails_the_batch_without_hanging_and_appends_work_again_without_a_reopen(
    make_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(fault_retry_ms=60_000)
    log.append([b"kept"], timeout=TIMEOUT)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_fsync)
    with pytest.raises(LogError, match="Input/output"):
        log.append([b"lost"], timeout=TIMEOUT)
    with pytest.raises(LogError, match="Input/output"):  # refused at once while the fault is retried
        log.append([b"refused"], timeout=TIMEOUT)
    assert log.stats().extra["failed_batches"] >= 2
    assert "Input/output" in (log.write_fault() or "")
    monkeypatch.undo()
    log.close()
    log = make_log(fault_retry_ms=0)
    assert [r.value for r in log.read(0)] == [b"kept"]  # the unacknowledged bytes were dropped
    monkeypatch.setattr(os, "fdatasync", broken_fsync)
    with pytest.raises(LogError, match="Input/output"):
        log.append([b"lost again"], timeout=TIMEOUT)
    monkeypatch.undo()
    assert log.append([b"stored"], timeout=TIMEOUT) == [1]  # the same log, no reopen
    assert log.write_fault() is None
    assert [r.value for r in log.read(0)] == [b"kept", b"stored"]


def test_cancelled_batches_are_not_written_and_non_bytes_are_refused(make_log: Opener) -> None:
    entered, release = threading.Event(), threading.Event()

    def stalling_clock() -> float:
        entered.set()
        release.wait(TIMEOUT)
        return time.time()

    log = make_log(clock=stalling_clock)
    first = log.submit([b"a"])
    assert entered.wait(TIMEOUT)
    cancelled = log.submit([b"never"])
    assert cancelled.cancel()
    last = log.submit([b"b"])
    release.set()
    assert first.result(TIMEOUT) == [0] and last.result(TIMEOUT) == [1]
    assert [r.value for r in log.read(0)] == [b"a", b"b"]
    with pytest.raises(TypeError):
        log.submit(["text"])  # type: ignore[list-item]


def test_close_from_a_future_callback_does_not_deadlock(make_log: Opener) -> None:
    log = make_log()
    future = log.submit([b"a"])
    future.add_done_callback(lambda _: log.close())
    assert future.result(TIMEOUT) == [0]
    assert log.wait(5, timeout=TIMEOUT) is False  # returns once closed
    with pytest.raises(LogClosed):
        log.submit([b"b"]).result(TIMEOUT)


def test_committing_leaves_no_temporary_files(make_log: Opener) -> None:
    log = make_log()
    for offset in range(5):
        log.commit("projector", offset)
    assert sorted(p.name for p in (log.path / "positions").iterdir()) == ["projector.pos"]
    assert (log.path / "positions" / "projector.pos").read_text() == "4\n"


# ---------------------------------------------------------------------- crash

CHILD = """
import sys
from collections import deque
from pathlib import Path
from adaptd.streams.log.file import FileLog

log = FileLog(Path(sys.argv[1]), segment_bytes=64 * 1024)
in_flight = deque()
for i in range(10**9):
    in_flight.append(log.submit([b"value-%d-%d" % (i, j) for j in range(5)]))
    if len(in_flight) >= 8:  # keep batches in flight so the kill lands mid-write
        for offset, j in zip(in_flight.popleft().result(), range(5)):
            print(offset, "value-%d-%d" % (offset // 5, j), flush=True)
"""


def test_every_acknowledged_offset_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "log"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, child.kill)  # bounds the readline loop below
    watchdog.start()
    acked: dict[int, bytes] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            offset, value = line.split()
            acked[int(offset)] = value.encode()
            if len(acked) >= 3000:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT)
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(TIMEOUT)
    assert len(acked) >= 3000, "the child stopped before acknowledging enough records"
    log = FileLog(path, segment_bytes=64 * 1024)
    try:
        assert log.end_offset() > max(acked)
        records = {r.offset: r.value for r in log.read(0, log.end_offset())}
        assert all(records.get(offset) == value for offset, value in acked.items())
        assert log.append([b"after"], timeout=TIMEOUT) == [log.end_offset() - 1]
    finally:
        log.close()


# ---------------------------------------------------------------------- bulk reads


def test_framing_can_hand_out_payloads_as_views_without_copies() -> None:
    values = [b"", b"a", os.urandom(500)]
    buf = framing.encode(values, 7, 1234)
    got: list[memoryview] = []
    assert framing.decode(buf, 0, 7, 10, got, [], views=True) == len(buf)
    assert all(isinstance(v, memoryview) for v in got) and [bytes(v) for v in got] == values


def test_read_batch_returns_what_read_returns_as_flat_buffers(make_log: Opener) -> None:
    log = make_log(segment_bytes=4096)
    values = fill(log, 30)
    whole = log.read_batch(0, 10_000)
    assert whole.values() == values and list(whole.offsets) == list(range(len(values)))
    assert whole.bounds[0] == 0 and whole.bounds[-1] == len(whole.data) == sum(map(len, values))
    assert [r.timestamp_ms for r in log.read(0, 10_000)] == list(whole.timestamps)
    assert whole.records() == log.read(0, 10_000)
    stepped, position = [], 0
    while len(batch := log.read_batch(position, 13)):  # crosses segments, uses the cursor
        stepped += batch.values()
        position = batch.offsets[-1] + 1
    assert stepped == values
    log = make_log.reopen(segment_bytes=4096)  # random offsets in segments of an earlier run
    for offset in (155, 3, 299, 0, 150):
        assert log.read_batch(offset, 2).values() == values[offset:offset + 2]
    assert len(log.read_batch(300, 5)) == 0 and len(log.read_batch(0, 0)) == 0
    with pytest.raises(ValueError):
        log.read_batch(-1, 5)
    tail = whole.since(290)
    assert tail.values() == values[290:] and list(tail.offsets) == list(range(290, 300))
    assert whole.since(0) is whole and len(whole.since(10_000)) == 0


def test_read_batch_checks_every_frame_crc(make_log: Opener) -> None:
    log = make_log()
    fill(log, 5)
    active = segments_of(log)[-1]
    with open(active, "r+b") as f:  # in place, as a bad sector would: the next read sees it
        f.seek(framing.HEADER_SIZE * 4 + 100 * 3 + framing.HEADER_SIZE + 7)  # inside record 3's payload
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    assert len(log.read_batch(0, 3)) == 3  # the frames before it are fine
    with pytest.raises(LogError, match="CRC"):
        log.read_batch(0, 50)


def test_the_default_read_batch_wraps_read() -> None:
    from adaptd.daemon.testing.memory_log import MemoryLog

    log = MemoryLog()
    log.append([b"a", b"bc", b""])
    batch = log.read_batch(1, 10)
    assert batch.values() == [b"bc", b""] and list(batch.offsets) == [1, 2] and batch.partition == 0
    assert len(log.read_batch(3, 10)) == 0
