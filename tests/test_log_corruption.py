"""A damaged log never costs an acknowledged record: only a true torn tail is cut.

Bytes are flipped at seeded random positions of the active segment and of a sealed one.
Every such open must refuse with the segment, byte and offset named and change nothing;
`adaptd log verify` must find the same damage; a torn tail (the only damage a crash
makes) is still cut so the daemon starts.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from adaptd.streams.log import CorruptLog, framing
from adaptd.streams.log.file import FileLog
from adaptd.streams.log.verify import verify_log

TIMEOUT = 10.0
SEGMENT_BYTES = 8192
POSITIONS = 25  # per kind of segment: 50 flipped positions over this file


def write_log(path: Path, batches: int = 40, per_batch: int = 5) -> list[bytes]:
    log = FileLog(path, segment_bytes=SEGMENT_BYTES)
    values = []
    try:
        for b in range(batches):
            batch = [(b"%06d:" % (b * per_batch + r)).ljust(120, b"x") for r in range(per_batch)]
            log.append(batch, timeout=TIMEOUT)
            values += batch
    finally:
        log.close()
    return values


def flip(segment: Path, position: int) -> None:
    data = bytearray(segment.read_bytes())
    data[position] ^= 0x5A
    segment.write_bytes(bytes(data))


def body_positions(segment: Path, count: int, seed: int) -> list[int]:
    """Seeded positions in a segment's frames, before its last frame (whose damage is
    indistinguishable from a torn write and is cut by design)."""
    size = segment.stat().st_size
    last_frame = framing.HEADER_SIZE + 120
    return random.Random(seed).sample(range(0, size - last_frame), count)


def segments(log_dir: Path) -> list[Path]:
    return sorted(log_dir.glob("*.seg"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    root = tmp_path_factory.mktemp("pristine")
    values = write_log(root / "log")
    assert len(segments(root / "log")) >= 3
    return root / "log", values


def copy_log(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "LOCK":
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("which", ["active", "sealed"])
def test_a_flipped_byte_anywhere_but_the_torn_tail_refuses_the_open_and_changes_nothing(
    which: str, pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, _ = pristine
    index = -1 if which == "active" else 0
    target = segments(source)[index]
    for n, position in enumerate(body_positions(target, POSITIONS, seed=hash(which) & 0xFFFF)):
        log_dir = copy_log(source, tmp_path / f"{which}-{n}" / "log")
        segment = segments(log_dir)[index]
        flip(segment, position)
        damaged = segment.read_bytes()
        with pytest.raises(CorruptLog) as refused:
            FileLog(log_dir, segment_bytes=SEGMENT_BYTES)
        assert refused.value.segment == str(segment)
        assert "adaptd log verify" in str(refused.value)
        assert segment.read_bytes() == damaged, f"byte {position}: the open changed the segment"
        frames, findings = verify_log(log_dir)
        assert [(f.segment, f.kind) for f in findings] == [(segment, "corrupt")], f"byte {position}"
        assert findings[0].position <= position


def test_a_torn_tail_is_still_cut_and_every_earlier_record_reads_back(
    pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, values = pristine
    log_dir = copy_log(source, tmp_path / "torn" / "log")
    last = segments(log_dir)[-1]
    frame = framing.encode([b"never acknowledged"], len(values), 1)
    with open(last, "ab") as f:
        f.write(frame[:-7])  # a crash in the middle of writing the next frame
    assert [f.kind for f in verify_log(log_dir)[1]] == ["torn_tail"]
    log = FileLog(log_dir, segment_bytes=SEGMENT_BYTES)
    try:
        assert log.stats().truncated_bytes == len(frame) - 7
        assert [r.value for r in log.read(0, 10_000)] == values
    finally:
        log.close()


def test_log_verify_exits_0_on_a_clean_log_and_1_naming_the_damage(
    pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, values = pristine
    data_dir = tmp_path / "data"
    log_dir = copy_log(source, data_dir / "log")
    cmd = [sys.executable, "-m", "adaptd.daemon.cli", "log", "verify", "--data-dir", str(data_dir)]
    clean = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert f"{len(values)} valid frames; 0 corrupt" in clean.stdout
    sealed = segments(log_dir)[1]
    flip(sealed, 300)
    damaged = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert damaged.returncode == 1
    assert f"corrupt: {sealed}" in damaged.stdout


def test_the_daemon_refuses_to_start_on_a_corrupt_segment_and_says_what_to_run(
    pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, _ = pristine
    data_dir = tmp_path / "data"
    log_dir = copy_log(source, data_dir / "log")
    active = segments(log_dir)[-1]
    flip(active, 200)
    before = active.read_bytes()
    up = subprocess.run([sys.executable, "-m", "adaptd.daemon.cli", "up", "--data-dir", str(data_dir), "--port", "0"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 2
    assert active.name in up.stderr and "adaptd log verify --data-dir" in up.stderr
    assert active.read_bytes() == before


def test_a_read_model_ahead_of_a_shorter_log_refuses_to_start_instead_of_skipping(daemon_factory) -> None:
    """Records lost from the log's end (an old backup restored, a file cut by hand) would
    leave the projector's stored position past the end, and it would silently skip that
    many of the next acknowledged events. The daemon names the gap and refuses."""
    import httpx

    from adaptd.streams.events import new_id

    daemon = daemon_factory("data").start()
    events = [{"id": str(new_id()), "ts": "2026-12-05T10:00:00Z", "kind": "execution", "program": "qa",
               "duration_ms": 10.0} for _ in range(20)]
    with httpx.Client(timeout=10.0) as client:
        assert client.post(f"{daemon.url}/v1/events", json=events).json()["accepted"] == 20
        wait_until(lambda: client.get(f"{daemon.url}/v1/stats").json().get("projector_lag") == 0)
    assert daemon.stop() == 0
    active = segments(daemon.data_dir / "log")[-1]
    data = active.read_bytes()
    # Keep only the frames before the last two: a clean but shorter log.
    pos, offsets = 0, []
    while pos < len(data):
        offsets.append(pos)
        pos += framing.frame_size_at(data, pos) or len(data)
    active.write_bytes(data[: offsets[-2]])
    up = subprocess.run([sys.executable, "-m", "adaptd.daemon.cli", "up", "--data-dir", str(daemon.data_dir),
                         "--port", "0"], capture_output=True, text=True, timeout=120)
    assert up.returncode == 2
    assert "but the log ends at offset" in up.stderr and "adaptd replay" in up.stderr
