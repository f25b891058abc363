"""The whole anomaly path in a real daemon: ingest -> log -> processors -> signal events ->
DuckDB (/v1/signals) and the alert sinks."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import duckdb
import httpx
import orjson
from conftest import run_cli, wait_until

from adaptd.daemon.readmodel.replay import tables_equal
from adaptd.streams.events import new_id

RATE = 20  # requests per second of event time


def _executions(start: dt.datetime, seconds: int, error_rate: float, rng: random.Random) -> list[dict]:
    out = []
    for i in range(seconds * RATE):
        failed = rng.random() < error_rate
        out.append({
            "id": str(new_id()), "kind": "execution", "program": "checkout", "module": "answer",
            "route": "gpt-4o-mini", "ts": (start + dt.timedelta(seconds=i / RATE)).isoformat(),
            "status": "error" if failed else "ok", "error_type": "RateLimitError" if failed else None,
            "duration_ms": rng.lognormvariate(5, 0.3),
        })  # fmt: skip
    return out


def test_an_error_burst_becomes_one_signal_in_duckdb_and_in_the_alert_file(daemon_factory, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.ndjson"
    config = tmp_path / "adaptd.toml"
    config.write_text(f'[[alerts.files]]\npath = "{alerts}"\n')
    daemon = daemon_factory("signals", config=config).start()
    rng = random.Random(7)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=20)
    steady = _executions(start, 600, 0.01, rng)  # 10 min at 1% errors
    burst_start = start + dt.timedelta(seconds=600)
    burst = _executions(burst_start, 20, 0.30, rng)  # then 30% errors
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        for i in range(0, len(steady) + len(burst), 2000):
            answer = client.post("/v1/events", content=orjson.dumps((steady + burst)[i:i + 2000]))
            assert answer.status_code == 200 and not answer.json()["rejected"]

        def opened() -> list[dict] | None:
            items = client.get("/v1/signals", params={"program": "checkout", "state": "open"}).json()["items"]
            return [s for s in items if s["metric"] == "error_rate"] or None

        (signal,) = wait_until(opened, timeout=60)
    assert signal["signal_type"] == "anomaly" and signal["route"] == "gpt-4o-mini"
    fired_at = dt.datetime.fromisoformat(signal["ts"])
    assert dt.timedelta(0) <= fired_at - burst_start <= dt.timedelta(seconds=5)
    delivered = wait_until(lambda: [orjson.loads(line) for line in alerts.read_text().splitlines()]
                           if alerts.exists() else None, timeout=30)  # fmt: skip
    assert [s["id"] for s in delivered if s["state"] == "open"] == [signal["id"]]

    # Replay equals live: the log alone rebuilds the same tables, signals included, and
    # re-running the processors reproduces every derived event the daemon appended.
    assert daemon.stop() == 0
    copy = tmp_path / "replayed.duckdb"
    replayed = run_cli("replay", "--data-dir", str(daemon.data_dir), "--into", str(copy), "--config", str(config))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert tables_equal(daemon.data_dir / "adaptd.duckdb", copy) == []
    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM signals WHERE id = ?", [signal["id"]]).fetchone() == (1,)
