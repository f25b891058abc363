"""A damaged log never costs an acknowledged record: only a true torn tail is cut.

Bytes are flipped at seeded random positions of the active segment and of a sealed one.
Every such open must refuse with the segment, byte and offset named and change nothing;
`adaptd log verify` must find the same damage; a torn tail (the only damage a crash
makes) is still cut so the daemon starts.

`adaptd log repair` then moves the unreadable bytes to ``log/quarantine`` and keeps
every other record at its offset (a placeholder holds each lost offset), at as many
seeded positions again, and end to end against a real daemon: it refuses to start,
verify finds the damage, repair quarantines it, the restarted daemon holds every
acknowledged event but the quarantined ones, and projects the events acknowledged after.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from adaptd.streams.log import CorruptLog, LogError, framing
from adaptd.streams.log.file import FileLog
from adaptd.streams.log.repair import repair_log
from adaptd.streams.log.verify import verify_log

TIMEOUT = 10.0
SEGMENT_BYTES = 8192
POSITIONS = 25  # per kind of segment: 50 flipped positions over this file
#: Fixed seeds (``hash(str)`` would change with every interpreter).
SEEDS = {"active": 1401, "sealed": 1402}


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
    for n, position in enumerate(body_positions(target, POSITIONS, seed=SEEDS[which])):
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


# -- repair ---------------------------------------------------------------------------


def placeholder(offset: int, reason: str, file: Path, ts: int) -> bytes:
    return b"LOST %d" % offset


@pytest.mark.parametrize("which", ["active", "sealed"])
def test_repair_quarantines_the_damaged_frame_and_keeps_every_other_record_at_its_offset(
    which: str, pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, values = pristine
    index = -1 if which == "active" else 1
    target = segments(source)[index]
    for n, position in enumerate(body_positions(target, POSITIONS, seed=SEEDS[which] + 7)):
        log_dir = copy_log(source, tmp_path / f"{which}-{n}" / "log")
        segment = segments(log_dir)[index]
        flip(segment, position)
        damaged = segment.read_bytes()
        cuts = repair_log(log_dir, placeholder)
        assert [(c.segment, c.kind) for c in cuts] == [(str(segment), "corrupt")], f"byte {position}: {cuts}"
        (cut,) = cuts
        assert cut.position <= position < cut.position + cut.length, f"byte {position}: {cut}"
        lost = range(cut.first_offset, cut.end_offset)
        assert 1 <= len(lost) <= 2, f"byte {position}: lost {list(lost)}"
        quarantined = Path(cut.quarantine_file)
        assert quarantined.parent == log_dir / "quarantine"
        assert quarantined.read_bytes() == damaged[cut.position:cut.position + cut.length]
        note = json.loads(quarantined.with_suffix(".json").read_text())
        assert (note["first_offset"], note["end_offset"], note["reason"]) == (lost.start, lost.stop, cut.reason)
        assert verify_log(log_dir)[1] == [], f"byte {position}: still damaged after repair"
        log = FileLog(log_dir, segment_bytes=SEGMENT_BYTES)
        try:
            records = log.read(0, 10_000)
        finally:
            log.close()
        expected = [b"LOST %d" % o if o in lost else v for o, v in enumerate(values)]
        assert [r.offset for r in records] == list(range(len(values))), f"byte {position}: offsets moved"
        assert [r.value for r in records] == expected, f"byte {position}"
        assert repair_log(log_dir, placeholder) == [], "a second repair finds nothing"


def test_repair_quarantines_a_torn_tail_without_a_placeholder(
    pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, values = pristine
    log_dir = copy_log(source, tmp_path / "torn" / "log")
    frame = framing.encode([b"never acknowledged"], len(values), 1)
    with open(segments(log_dir)[-1], "ab") as f:
        f.write(frame[:-7])
    (cut,) = repair_log(log_dir, placeholder)
    assert (cut.kind, cut.length, cut.first_offset, cut.end_offset) == ("torn_tail", len(frame) - 7, len(values),
                                                                        len(values))
    log = FileLog(log_dir, segment_bytes=SEGMENT_BYTES)
    try:
        assert log.stats().truncated_bytes == 0
        assert [r.value for r in log.read(0, 10_000)] == values
    finally:
        log.close()


def test_repair_refuses_a_log_that_is_open(pristine: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    source, _ = pristine
    log_dir = copy_log(source, tmp_path / "open" / "log")
    log = FileLog(log_dir, segment_bytes=SEGMENT_BYTES)
    try:
        with pytest.raises(LogError, match="in use"):
            repair_log(log_dir, placeholder)
    finally:
        log.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adaptd.daemon.cli", *args], capture_output=True, text=True,
                          timeout=120)


def frames_by_offset(segment_bytes: bytes, base: int) -> dict[int, bytes]:
    values: list[bytes] = []
    framing.decode(segment_bytes, 0, base, 1 << 20, values, [])
    return {base + i: v for i, v in enumerate(values)}


def executions(n: int, tag: str) -> list[dict[str, object]]:
    from adaptd.streams.events import new_id

    return [{"id": str(new_id()), "ts": "2026-12-05T10:00:00Z", "kind": "execution", "program": "qa",
             "duration_ms": 10.0, "attrs": {"tag": tag}} for _ in range(n)]


def stored_execution_ids(client) -> set[str]:
    ids: set[str] = set()
    cursor = None
    for _ in range(100):
        page = client.get("/v1/executions", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
        ids |= {row["id"] for row in page["items"]}
        cursor = page.get("next_cursor")
        if not cursor:
            return ids
    raise AssertionError("too many pages")


@pytest.mark.parametrize("seed", [14, 15, 16])
def test_a_corrupt_log_stops_the_daemon_until_repair_and_every_other_acknowledged_event_is_projected(
    daemon_factory, seed: int
) -> None:
    """A byte flipped in a sealed and in the active segment; the read model is deleted
    too, so the repaired log alone must rebuild every acknowledged event but the
    quarantined ones (the processors' snapshot and the consumer positions are kept: they
    must still mean the same records)."""
    import httpx

    daemon = daemon_factory("data", config_text="[log]\nsegment_bytes = 8192\n").start()
    acked: list[str] = []
    with httpx.Client(base_url=daemon.url, timeout=10.0) as client:
        for n in range(30):
            batch = executions(10, f"before-{n}")
            assert client.post("/v1/events", json=batch).json()["accepted"] == 10
            acked += [e["id"] for e in batch]
        wait_until(lambda: client.get("/v1/stats").json()["projector_lag"] == 0)
    assert daemon.stop() == 0
    data_dir = daemon.data_dir
    log_segments = segments(data_dir / "log")
    assert len(log_segments) >= 3
    damaged = {log_segments[1]: None, log_segments[-1]: None}
    rng = random.Random(seed)
    for segment in damaged:
        damaged[segment] = segment.read_bytes()
        flip(segment, rng.randrange(framing.HEADER_SIZE, len(damaged[segment]) - 600))
    (data_dir / "adaptd.duckdb").unlink()

    up = cli("up", "--data-dir", str(data_dir), "--port", "0")
    assert up.returncode == 2 and log_segments[1].name in up.stderr and "adaptd log repair" in up.stderr, up.stderr
    verify = cli("log", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 1, verify.stdout
    assert all(f"corrupt: {segment}" in verify.stdout for segment in damaged), verify.stdout
    repair = cli("log", "repair", "--data-dir", str(data_dir))
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert repair.stdout.count("quarantined ") == 2 and "0 corrupt" in repair.stdout, repair.stdout
    assert cli("log", "verify", "--data-dir", str(data_dir)).returncode == 0

    notes = [json.loads(p.read_text()) for p in (data_dir / "log" / "quarantine").glob("*.json")]
    assert sorted(n["segment"] for n in notes) == sorted(map(str, damaged))
    lost: set[str] = set()
    for note in notes:
        segment = Path(note["segment"])
        by_offset = frames_by_offset(damaged[segment], int(segment.stem))
        events = [json.loads(by_offset[o]) for o in range(note["first_offset"], note["end_offset"])]
        assert events, note
        lost |= {e["id"] for e in events if e.get("kind") == "execution"}

    daemon.start()
    with httpx.Client(base_url=daemon.url, timeout=10.0) as client:
        after = executions(10, "after")
        assert client.post("/v1/events", json=after).json()["accepted"] == 10
        wait_until(lambda: client.get("/v1/stats").json()["projector_lag"] == 0, timeout=20)
        stored = stored_execution_ids(client)
        assert client.get("/v1/stats").json()["projector_errors"] == 0, "a placeholder did not project cleanly"
    expected = (set(acked) - lost) | {e["id"] for e in after}
    assert stored == expected, f"missing {len(expected - stored)} acknowledged events; {len(lost)} quarantined"
    assert daemon.stop() == 0


def test_replay_of_a_corrupt_log_exits_with_a_clear_message_not_a_traceback(
    pristine: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    source, _ = pristine
    data_dir = tmp_path / "data"
    log_dir = copy_log(source, data_dir / "log")
    sealed = segments(log_dir)[1]
    flip(sealed, 500)
    replay = cli("replay", "--data-dir", str(data_dir), "--into", str(tmp_path / "rebuilt.duckdb"))
    assert replay.returncode == 2
    assert "Traceback" not in replay.stderr, replay.stderr
    assert replay.stderr.startswith("adaptd: error: cannot replay") and sealed.name in replay.stderr
    assert "adaptd log repair" in replay.stderr


def test_a_live_tail_that_meets_a_corrupt_frame_ends_with_an_error_event(tmp_path: Path) -> None:
    import httpx
    from conftest import InProcessDaemon

    from adaptd.daemon.config import load_settings

    settings = load_settings(None, data_dir=tmp_path / "data", log={"segment_bytes": 4096})
    with InProcessDaemon(settings) as daemon, httpx.Client(base_url=daemon.url, timeout=10.0) as client:
        for n in range(10):
            assert client.post("/v1/events", json=executions(10, f"b{n}")).json()["accepted"] == 10
        first = segments(tmp_path / "data" / "log")[0]
        with open(first, "r+b") as f:  # in place, as a bad sector would: the daemon reads it next
            f.seek(first.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x5A]))
        with client.stream("GET", "/v1/stream", params={"from_offset": 0}) as response:
            assert response.status_code == 200
            body = b""
            for chunk in response.iter_bytes():  # ends by itself: the tail closes after the error
                body += chunk
                assert len(body) < 10_000_000
    events = [block for block in body.decode().split("\n\n") if block.strip()]
    assert events[-1].startswith("event: error\ndata: "), events[-3:]
    detail = json.loads(events[-1].split("data: ", 1)[1])["detail"]
    assert "corrupt frame" in detail and first.name in detail
