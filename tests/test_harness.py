"""The one harness (``adaptd.daemon.testing``) that tests, benchmarks and the demo start
daemons with: what it promises its users."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from adaptd.daemon.config import Settings
from adaptd.daemon.testing import DaemonError, DaemonProcess, InProcessDaemon, MemoryLog, wait_until
from adaptd.streams.events import new_id


def _execution(program: str) -> dict[str, object]:
    return {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "execution", "program": program,
            "duration_ms": 12.0}


def _stored(url: str, program: str, n: int) -> bool:
    items = httpx.get(f"{url}/v1/executions", params={"program": program, "limit": 100}, timeout=5).json()["items"]
    return len(items) >= n


def test_an_in_process_daemon_serves_real_http_and_hands_its_data_dir_to_a_subprocess(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", log_level="warning")
    with InProcessDaemon(settings) as daemon:
        assert daemon.url.startswith("http://127.0.0.1:")
        answer = httpx.post(f"{daemon.url}/v1/events", json=[_execution("qa") for _ in range(3)], timeout=10)
        assert answer.status_code == 200 and answer.json()["accepted"] == 3
        wait_until(lambda: _stored(daemon.url, "qa", 3), timeout=20)
        assert daemon.runtime.stats()["events_acked"] == 3
    # Stopping ran the lifespan exit: the log and DuckDB were closed, so a process can open them.
    with DaemonProcess(tmp_path / "data") as again:
        assert _stored(again.url, "qa", 3)


def test_a_daemon_that_refuses_to_start_raises_with_the_reason_from_its_log(tmp_path: Path) -> None:
    bad = DaemonProcess(tmp_path / "data", config_text="[limits]\nmax_batch_events = -1\n")
    with pytest.raises(DaemonError, match="max_batch_events"):
        bad.start(timeout=30)
    assert bad.proc is not None and bad.proc.poll() is not None


def test_a_restarted_daemon_keeps_its_port(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "data").start()
    try:
        url = daemon.url
        daemon.kill9()
        daemon.start()
        assert daemon.url == url
        assert httpx.get(f"{url}/v1/health", timeout=5).status_code == 200
    finally:
        daemon.stop()


def test_the_memory_log_wakes_a_waiting_reader_on_append() -> None:
    log = MemoryLog()
    assert log.read(0) == [] and not log.wait(0, timeout=0.01)
    woke: list[bool] = []
    reader = threading.Thread(target=lambda: woke.append(log.wait(0, timeout=10)))
    reader.start()
    assert log.submit([b"a", b"b"]).result(timeout=1) == [0, 1]
    reader.join(timeout=10)
    assert woke == [True]
    assert [r.value for r in log.read(1)] == [b"b"]
