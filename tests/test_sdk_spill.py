"""Specs of the SDK's spill directory: order, bounds, torn tails, sharing between processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from conftest import wait_until

from adaptd.adapters import Client, InMemoryExporter
from adaptd.adapters.spill import Spill, default_spill_dir

ROOT = Path(__file__).resolve().parents[1]




def lines(start: int, n: int, pad: int = 0) -> list[bytes]:
    return [orjson.dumps({"seq": i, "pad": "x" * pad}) for i in range(start, start + n)]


def drain(spill: Spill, max_events: int = 1000, limit: int = 1000) -> list[int]:
    """Read and ack everything available, returning the sequence numbers in order."""
    out: list[int] = []
    for _ in range(limit):
        chunk = spill.next_chunk(max_events)
        if not chunk:
            return out
        out += [orjson.loads(line)["seq"] for line in chunk]
        spill.ack(len(chunk))
    raise AssertionError("spill did not run dry")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ndjson"))


def test_spilled_events_come_back_oldest_first_and_acked_segments_are_deleted(tmp_path):
    spill = Spill(tmp_path, max_bytes=10_000, segment_bytes=300)
    assert spill.next_chunk(10) is None and not spill.has_backlog()
    for start in range(0, 30, 10):
        assert spill.append(lines(start, 10)) == 10
    assert spill.has_backlog() and len(segments(tmp_path)) > 1
    first = spill.next_chunk(4)
    assert [orjson.loads(x)["seq"] for x in first] == [0, 1, 2, 3]
    assert spill.next_chunk(4) == first  # not acked yet: the same chunk again
    assert drain(spill, max_events=7) == list(range(30))
    assert segments(tmp_path) == [] and spill.bytes == 0 and not spill.has_backlog()


def test_chunks_respect_a_byte_budget_but_always_hold_one_event(tmp_path):
    spill = Spill(tmp_path)
    spill.append(lines(0, 5, pad=100))
    assert len(spill.next_chunk(100, max_bytes=250)) == 2
    assert len(spill.next_chunk(100, max_bytes=10)) == 1


def test_a_torn_last_line_left_by_a_crash_is_ignored(tmp_path):
    good = b"\n".join(lines(0, 3)) + b"\n"
    (tmp_path / f"{1:020d}-1-aaaaaa.ndjson").write_bytes(good + b'{"seq": 3, "pa')
    assert drain(Spill(tmp_path)) == [0, 1, 2]
    assert segments(tmp_path) == []


def test_past_max_bytes_the_oldest_segments_are_dropped_and_counted(tmp_path):
    spill = Spill(tmp_path, max_bytes=2000, segment_bytes=500)
    for start in range(0, 100, 10):  # ~3 KB in all
        spill.append(lines(start, 10, pad=10))
    assert spill.bytes <= 2000
    assert sum(p.stat().st_size for p in segments(tmp_path)) <= 2000
    kept = drain(spill)
    assert spill.dropped > 0 and spill.dropped + len(kept) == 100
    assert kept == list(range(100 - len(kept), 100))  # the newest survive, in order


def test_a_batch_larger_than_the_bound_is_dropped_and_counted(tmp_path):
    spill = Spill(tmp_path, max_bytes=100)
    assert spill.append(lines(0, 5, pad=50)) == 0
    assert spill.dropped == 5 and segments(tmp_path) == []


def test_write_failures_are_counted_not_raised(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    spill = Spill(not_a_dir / "spill")
    assert spill.append(lines(0, 3)) == 0
    assert spill.dropped == 3 and spill.next_chunk(10) is None


def test_a_segment_another_process_is_writing_is_left_alone(tmp_path):
    writer, reader = Spill(tmp_path), Spill(tmp_path)  # two owners, as two processes
    writer.append(lines(0, 3))
    assert reader.next_chunk(10) is None  # the writer holds its segment's lock
    writer.close()
    assert drain(reader) == [0, 1, 2]


def test_a_segment_another_process_is_resending_is_skipped(tmp_path):
    old = Spill(tmp_path, segment_bytes=100)
    old.append(lines(0, 5))
    old.append(lines(5, 5))
    old.close()
    a, b = Spill(tmp_path), Spill(tmp_path)
    chunk_a, chunk_b = a.next_chunk(100), b.next_chunk(100)
    assert chunk_a and chunk_b and not set(chunk_a) & set(chunk_b)  # different segments
    a.ack(len(chunk_a))
    b.ack(len(chunk_b))
    assert segments(tmp_path) == []


def test_the_default_spill_dir_is_per_url_and_token(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTD_SPILL_DIR", str(tmp_path))
    a = default_spill_dir("http://127.0.0.1:7710", None)
    assert a.parent == tmp_path
    assert a == default_spill_dir("http://127.0.0.1:7710", None)
    assert a != default_spill_dir("http://127.0.0.1:7710", "t1") != default_spill_dir("http://h:1", "t1")


@pytest.mark.timeout(60)
def test_a_spill_left_by_a_previous_process_is_resent_with_its_ids(tmp_path):
    # A process that cannot reach its daemon spills and exits (atexit flush, no shutdown).
    script = textwrap.dedent(
        f"""
        import socket, uuid_utils
        from adaptd.adapters import Client
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        c = Client(url=f"http://127.0.0.1:{{port}}", spill_dir={str(tmp_path)!r}, max_retries=0)
        for i in range(20):
            i_d = str(uuid_utils.uuid7())
            c.emit("execution", program="qa", seq=i, id=i_d)
            print(i_d)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=45)
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 20 and segments(tmp_path)

    ex = InMemoryExporter()
    client = Client(exporter=ex, spill_dir=tmp_path, schedule_delay_ms=20)
    try:
        assert wait_until(lambda: client.stats()["resent"] == 20, timeout=10), client.stats()
        assert [e["id"] for e in ex.events] == ids
        assert [e["seq"] for e in ex.events] == list(range(20))
        assert segments(tmp_path) == []
    finally:
        client.shutdown(2)
