"""The SDK against a real daemon: nothing is lost while the daemon is down."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import DaemonProcess, free_port, wait_until

from adaptd.adapters import Client
from adaptd.streams.events import new_id


def _stored_ids(url: str, program: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(100):
            params = {"program": program, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/executions", params=params).json()
            ids += [row["id"] for row in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
    return ids


def test_events_emitted_while_the_daemon_is_down_arrive_once_it_is_back(daemon_factory, tmp_path: Path) -> None:
    daemon: DaemonProcess = daemon_factory("sdk")
    daemon.port = free_port()
    client = Client(daemon.url, spill_dir=tmp_path / "spill", schedule_delay_ms=20, max_retries=1,
                    retry_backoff_s=0.01, offline_max_backoff_s=0.2, export_timeout_s=2)
    try:
        down = [str(new_id()) for _ in range(600)]
        for eid in down:
            client.emit("execution", id=eid, program="sdk-outage", duration_ms=1.0)
        # Nothing listens yet: the batches go to the spill file, the host is never blocked.
        assert client.flush(timeout=30)
        assert client.stats()["spilled"] >= 1

        daemon.start()
        up = [str(new_id()) for _ in range(400)]
        for eid in up:
            client.emit("execution", id=eid, program="sdk-outage", duration_ms=2.0)
        assert client.flush(timeout=30)

        expected = set(down + up)
        stored = wait_until(lambda: (ids := _stored_ids(daemon.url, "sdk-outage")) and set(ids) >= expected and ids,
                            timeout=60, interval=0.2)
        assert len(stored) == len(expected) == len(set(stored))
        assert client.stats()["resent"] >= 1
    finally:
        client.shutdown(timeout=5)
