"""A full or failing disk costs only the batches it hit, and the daemon recovers by itself.

ENOSPC and EIO are injected through the log's ``Disk`` (a partial write, then the error,
as a filling disk does), and, where this machine lets an unprivileged user mount one, a
real 2 MB tmpfs is filled under a real daemon.  While the disk fails: ingest answers 503
with Retry-After, ``/v1/ready`` answers 503 naming the log, ``/v1/health`` stays 200.
When space returns: acknowledgements resume without a restart, every acknowledged event
is in the log (no half-written frame left behind) and in DuckDB, and none of the refused
ones is.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import REPO, free_port, wait_until

from adaptd.daemon.config import load_settings
from adaptd.daemon.http.app import create_app
from adaptd.daemon.runtime import Runtime
from adaptd.streams.log import LogError
from adaptd.streams.log.disk import Disk
from adaptd.streams.log.file import FileLog
from adaptd.streams.log.verify import verify_log

TIMEOUT = 10.0


class FaultyDisk(Disk):
    """The real disk, until ``full`` or ``failing_sync`` is set.

    Full: a write puts half its bytes on disk, the next raises ENOSPC (a disk filling in
    the middle of a frame); the space probe raises ENOSPC.  Failing sync: fdatasync raises
    EIO after the bytes were written.
    """

    def __init__(self) -> None:
        self.full = threading.Event()
        self.failing_sync = threading.Event()
        self._half_written = False

    def write(self, fd: int, data: memoryview) -> int:
        if self.full.is_set():
            if not self._half_written and len(data) > 1:
                self._half_written = True
                return os.write(fd, data[: len(data) // 2])
            self._half_written = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.failing_sync.is_set():
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)

    def has_room(self, fd: int, at: int) -> bool:
        if self.full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().has_room(fd, at)


def outcome(log: FileLog, values: list[bytes]) -> list[int] | None:
    """The batch's offsets once acknowledged, None when the log refused it."""
    try:
        return log.submit(values).result(TIMEOUT)
    except LogError:
        return None


def test_a_full_disk_fails_only_the_batches_it_hit_and_the_log_appends_again_by_itself(tmp_path: Path) -> None:
    disk = FaultyDisk()
    log = FileLog(tmp_path / "log", disk=disk, fault_retry_ms=50)
    try:
        acked = [b"a", b"b", b"c"]
        assert outcome(log, acked) == [0, 1, 2]
        disk.full.set()
        assert outcome(log, [b"x" * 300, b"y" * 300]) is None  # half a frame reached the disk
        fault = wait_until(log.write_fault)
        assert "No space left on device" in fault
        assert outcome(log, [b"refused while failing"]) is None
        assert log.stats().extra["write_failing"] == 1
        disk.full.clear()
        wait_until(lambda: log.write_fault() is None, timeout=TIMEOUT)  # the idle probe found room
        assert outcome(log, [b"d"]) == [3], "offsets go on from the last acknowledged record"
        acked.append(b"d")
        assert [r.value for r in log.read(0)] == acked
        stats = log.stats()
        assert stats.extra["write_recoveries"] == 1 and stats.extra["write_failing"] == 0
    finally:
        log.close()
    assert verify_log(tmp_path / "log")[1] == [], "a half-written frame was left in the segment"
    reopened = FileLog(tmp_path / "log")
    try:
        assert reopened.stats().truncated_bytes == 0
        assert [r.value for r in reopened.read(0)] == acked
    finally:
        reopened.close()


def test_a_failed_fsync_drops_the_bytes_it_did_not_make_durable_and_the_next_batch_is_stored(tmp_path: Path) -> None:
    disk = FaultyDisk()
    log = FileLog(tmp_path / "log", disk=disk, fault_retry_ms=0)
    try:
        assert outcome(log, [b"kept"]) == [0]
        disk.failing_sync.set()
        assert outcome(log, [b"lost"]) is None  # written, but never durable: cut back
        disk.failing_sync.clear()
        assert outcome(log, [b"next"]) == [1]
        assert [r.value for r in log.read(0)] == [b"kept", b"next"]
    finally:
        log.close()
    reopened = FileLog(tmp_path / "log")
    try:
        assert [r.value for r in reopened.read(0)] == [b"kept", b"next"]
        assert reopened.stats().truncated_bytes == 0
    finally:
        reopened.close()


def test_under_a_storm_of_faults_across_segment_rolls_the_log_holds_exactly_the_acknowledged_records(
    tmp_path: Path,
) -> None:
    """Seeded: 300 batches, the disk full or its fsync failing at random moments, small
    segments so faults also hit rolls. Every acknowledged record reads back in order,
    consecutively numbered, and nothing refused does, before and after a reopen."""
    rng = random.Random(1414)
    disk = FaultyDisk()
    log = FileLog(tmp_path / "log", disk=disk, fault_retry_ms=0, segment_bytes=4096)
    acked: list[bytes] = []
    refused = 0
    try:
        for n in range(300):
            for flag, chance in ((disk.full, 0.2), (disk.failing_sync, 0.1)):
                flag.set() if rng.random() < chance else flag.clear()
            batch = [b"%04d-%d:" % (n, i) + b"v" * rng.randrange(0, 400) for i in range(rng.randrange(1, 5))]
            offsets = outcome(log, batch)
            if offsets is None:
                refused += 1
            else:
                assert offsets == list(range(len(acked), len(acked) + len(batch)))
                acked += batch
        disk.full.clear()
        disk.failing_sync.clear()
        assert refused > 40 and len(acked) > 300, (refused, len(acked))
        assert [r.value for r in log.read(0, 10_000)] == acked
    finally:
        log.close()
    assert verify_log(tmp_path / "log")[1] == []
    reopened = FileLog(tmp_path / "log", segment_bytes=4096)
    try:
        assert [r.value for r in reopened.read(0, 10_000)] == acked
        assert reopened.stats().extra["segments"] > 5
    finally:
        reopened.close()


def test_a_segment_roll_that_fails_is_retried_and_never_writes_past_the_sealed_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the next segment fails (its directory entry cannot be made durable): the
    batch fails, the sealed segment stays sealed, and the next batch starts the segment."""
    from adaptd.streams.log import writer

    real_fsync_dir = writer.fsync_dir
    failing = threading.Event()

    def fsync_dir(path: Path) -> None:
        if failing.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync_dir(path)

    monkeypatch.setattr(writer, "fsync_dir", fsync_dir)
    log = FileLog(tmp_path / "log", fault_retry_ms=0, segment_bytes=4096)
    acked: list[bytes] = []
    try:
        while log.stats().extra["segments"] == 1 and len(acked) < 100:
            batch = [b"%03d" % len(acked) + b"r" * 300]
            assert outcome(log, batch) is not None
            acked += batch
        sealed_size = sorted((tmp_path / "log").glob("*.seg"))[0].stat().st_size
        failing.set()
        refused = 0
        for n in range(15):  # enough to need the next roll
            batch = [b"f%02d" % n + b"r" * 300]
            if outcome(log, batch) is None:
                refused += 1
            else:
                acked += batch
        assert refused >= 1 and log.write_fault() is not None
        failing.clear()
        assert outcome(log, [b"after"]) is not None
        acked.append(b"after")
        assert [r.value for r in log.read(0, 1000)] == acked
    finally:
        log.close()
    files = sorted((tmp_path / "log").glob("*.seg"))
    assert files[0].stat().st_size == sealed_size and all(f.stat().st_size <= 4096 for f in files)
    assert verify_log(tmp_path / "log")[1] == []
    reopened = FileLog(tmp_path / "log", segment_bytes=4096)
    try:
        assert [r.value for r in reopened.read(0, 1000)] == acked
    finally:
        reopened.close()


# -- against a running daemon ------------------------------------------------------------


def execution(tag: str) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "ts": "2026-12-05T10:00:00Z", "kind": "execution", "program": "qa",
            "duration_ms": 12.5, "attrs": {"tag": tag}}


def stored_ids(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    cursor = None
    for _ in range(100):  # pages of 1000: far more than any test here posts
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/executions", params=params).json()
        ids |= {row["id"] for row in page["items"]}
        cursor = page.get("next_cursor")
        if not cursor:
            return ids
    raise AssertionError("too many pages")


def caught_up(client: httpx.Client) -> bool:
    stats = client.get("/v1/stats").json()
    return stats["projector_lag"] == 0


@pytest.fixture
def faulty_daemon(tmp_path: Path) -> Iterator[tuple[str, FaultyDisk]]:
    """A real runtime and HTTP server in this process, its log on a FaultyDisk."""
    settings = load_settings(None, data_dir=tmp_path / "data")
    disk = FaultyDisk()
    log = FileLog(tmp_path / "data" / "log", disk=disk, fault_retry_ms=100)
    runtime = Runtime(settings, log=log)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, runtime), host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=30)
        assert server.started, "the in-process daemon did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", disk
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_daemon_answers_503_while_the_disk_is_full_and_acknowledges_again_without_a_restart(
    faulty_daemon: tuple[str, FaultyDisk],
) -> None:
    url, disk = faulty_daemon
    acked: set[str] = set()
    refused: set[str] = set()
    with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        for n in range(5):
            batch = [execution(f"before-{n}") for _ in range(20)]
            assert client.post("/v1/events", json=batch).json()["accepted"] == 20
            acked |= {e["id"] for e in batch}
        assert client.get("/v1/ready").status_code == 200

        disk.full.set()
        for n in range(3):
            batch = [execution(f"full-{n}") for _ in range(20)]
            answer = client.post("/v1/events", json=batch)
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] and "No space left on device" in answer.json()["detail"]
            refused |= {e["id"] for e in batch}
        ready = client.get("/v1/ready")
        assert ready.status_code == 503 and ready.json()["reasons"][0].startswith("log: appends fail")
        assert client.get("/v1/health").status_code == 200, "liveness must not flap with the disk"

        disk.full.clear()  # space returns; nobody restarts anything
        wait_until(lambda: client.get("/v1/ready").status_code == 200, timeout=15)
        for n in range(3):
            batch = [execution(f"after-{n}") for _ in range(20)]
            assert client.post("/v1/events", json=batch).status_code == 200
            acked |= {e["id"] for e in batch}
        wait_until(lambda: caught_up(client), timeout=15)
        ids = stored_ids(client)
        stats = client.get("/v1/stats").json()
    assert ids == acked, f"lost {len(acked - ids)} acknowledged, stored {len(ids & refused)} refused"
    assert stats["log_write_faults"] >= 1 and stats["log_write_failing"] is None


# -- a real full file system -------------------------------------------------------------


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                            capture_output=True, timeout=30)
    return result.returncode == 0


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        for _ in range(10_000):  # 640 MB: far more than the tmpfs holds
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    raise AssertionError(f"{path} never filled up")


def test_on_a_real_full_tmpfs_the_daemon_refuses_with_503_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    mount = tmp_path / "small"
    mount.mkdir()
    port = free_port()
    # The daemon runs in a mount namespace of its own where `mount` is a 2 MB tmpfs that
    # holds the log; this process reaches that file system through /proc/PID/root.
    script = 'mount -t tmpfs -o size=2m tmpfs "$1" && shift && exec "$@"'
    out = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mount), sys.executable, "-m", "adaptd.daemon.cli", "up",
         "--data-dir", str(tmp_path / "data"), "--port", str(port), "--log", f"file://{mount}/log"],
        cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "ADAPTD_LOG__FAULT_RETRY_MS": "100"},
    )
    inside = Path(f"/proc/{proc.pid}/root{mount}")
    acked: set[str] = set()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:

            def up() -> bool:
                assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
                try:
                    return client.get("/v1/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, timeout=30, interval=0.05)
            assert (inside / "log").is_dir(), "the log is not on the tmpfs"
            batch = [execution("before") for _ in range(20)]
            assert client.post("/v1/events", json=batch).status_code == 200
            acked |= {e["id"] for e in batch}

            fill(inside / "filler")
            statuses = []
            for n in range(200):  # the segment's last page may still take a few small batches
                batch = [execution(f"full-{n}") for _ in range(20)]
                answer = client.post("/v1/events", json=batch)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    acked |= {e["id"] for e in batch}
                else:
                    assert answer.status_code == 503 and "Retry-After" in answer.headers, answer.text
                    break
            assert statuses[-1] == 503, f"never refused on a full disk: {statuses[-5:]}"
            assert client.get("/v1/ready").status_code == 503
            assert client.get("/v1/health").status_code == 200

            (inside / "filler").unlink()
            wait_until(lambda: client.get("/v1/ready").status_code == 200, timeout=20, interval=0.1)
            batch = [execution("after") for _ in range(20)]
            assert client.post("/v1/events", json=batch).status_code == 200
            acked |= {e["id"] for e in batch}
            wait_until(lambda: caught_up(client), timeout=20)
            assert stored_ids(client) == acked
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.close()
