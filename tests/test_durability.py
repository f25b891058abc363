"""Invariant 1: no acknowledged event is lost, whatever happens to the daemon process."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import duckdb
import httpx
from conftest import DaemonProcess

from adaptd.streams.events import new_id

TARGET_EVENTS = 50_000
KILLS = 5
BATCH = 500


def _batch(n: int) -> list[dict[str, object]]:
    return [{"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "execution", "program": "durable",
             "route": f"r{i % 4}", "duration_ms": float(i % 97)} for i in range(n)]


def test_acked_events_survive_kill_9(daemon_factory, tmp_path: Path) -> None:
    daemon: DaemonProcess = daemon_factory("kill9").start()
    acked: list[str] = []
    stop = threading.Event()
    errors: list[str] = []

    def load() -> None:
        # Posts until the target is acked; a batch whose answer was lost is re-sent with
        # the same ids, as the SDK does, so the daemon must dedupe it.
        deadline = time.monotonic() + 240
        with httpx.Client(timeout=10) as client:
            while len(acked) < TARGET_EVENTS or not stop.is_set():
                if time.monotonic() > deadline:
                    errors.append("loader ran out of time")
                    return
                batch = _batch(BATCH)
                for _ in range(2000):
                    try:
                        answer = client.post(f"{daemon.url}/v1/events", json=batch)
                    except httpx.TransportError:
                        time.sleep(0.02)
                        continue
                    if answer.status_code == 200:
                        assert answer.json()["accepted"] == len(batch)
                        acked.extend(e["id"] for e in batch)
                        break
                    time.sleep(0.02)
                if stop.is_set() and len(acked) >= TARGET_EVENTS:
                    return

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    rng = random.Random(20261122)
    for kill in range(KILLS):
        # Kill at a random moment while batches are in flight.
        time.sleep(rng.uniform(0.3, 2.5))
        daemon.kill9()
        daemon.start(timeout=60)
    stop.set()
    loader.join(timeout=300)
    assert not loader.is_alive() and not errors, errors
    assert len(acked) >= TARGET_EVENTS

    # A graceful stop lets the projector catch up with everything in the log.
    assert daemon.stop() == 0, daemon.output()[-3000:]
    with duckdb.connect(str(daemon.data_dir / "adaptd.duckdb"), read_only=True) as db:
        db.register("acked_ids", _arrow_ids(acked))
        missing = db.execute(
            "SELECT count(*) FROM acked_ids a ANTI JOIN executions e ON e.id = a.id::UUID").fetchone()[0]
        dupes = db.execute("SELECT count(*) FROM (SELECT id FROM executions GROUP BY id HAVING count(*) > 1)").fetchone()[0]
    assert missing == 0, f"{missing} acked events missing after {KILLS} kill -9"
    assert dupes == 0


def _arrow_ids(ids: list[str]):
    import pyarrow as pa

    return pa.table({"id": pa.array(ids, pa.string())})
