"""Windows of quiet live traffic close on wall time: the daemon's clock appends ticks to
the log, the watermark counts them like events, processors and tables never see them,
and replay reproduces the closes they caused."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import duckdb
import httpx
import orjson
from conftest import ev, run_cli, wait_until

from adaptd.daemon.readmodel.replay import replay, tables_equal
from adaptd.streams.log.file import FileLog
from adaptd.streams.processors.base import from_us, to_us
from adaptd.streams.processors.history.processor import HistoryProcessor
from adaptd.streams.processors.runtime import rerun
from adaptd.streams.processors.ticker import Ticker, tick_record

LATENESS_S = 1.0


def test_ticks_come_only_for_live_traffic_that_went_quiet_and_stop_after_the_horizon() -> None:
    t = Ticker(horizon_s=100.0)
    assert not t.due(1000.0, None, None) and not t.due(1000.0, 999.0, None)  # nothing seen / after a restart
    assert not t.due(1000.0, 999.9, 0.1)  # not quiet yet
    assert t.due(1000.0, 999.0, 0.1)
    assert not t.due(1000.0, 999.0, 3600.0)  # a backfill an hour old is not live: no ticks
    assert not t.due(1101.0, 1000.0, 0.1)  # past the horizon every window is closed
    t.last_tick_s = 1000.0
    assert not t.due(1000.2, 999.0, 0.1) and t.due(1000.25, 999.0, 0.1)  # fast while newly quiet
    t.last_tick_s = 1070.0
    assert not t.due(1075.0, 1000.0, 0.1) and t.due(1080.0, 1000.0, 0.1)  # slow after a minute


def _tick_at(ts: dt.datetime) -> bytes:
    record = orjson.loads(tick_record(ts.timestamp()))
    assert from_us(to_us(record["ts"])) == ts and "tenant" not in record
    return orjson.dumps(record)


def test_a_tick_moves_the_watermark_in_log_order_whatever_the_batching_and_is_stored_nowhere(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "log")
    try:
        events = [ev("execution", t) for t in (1, 2, 3)]
        log.append([orjson.dumps({**e, "ts": e["ts"].isoformat()}) for e in events])
        log.append([_tick_at(events[0]["ts"] + dt.timedelta(seconds=19))])  # wm -> t=15
        late = ev("execution", 12)  # after the tick: its 10-s window [10, 20) is not yet closed
        closed = ev("execution", 8)  # its window [0, 10) was closed by the tick: late
        log.append([orjson.dumps({**e, "ts": e["ts"].isoformat()}) for e in (late, closed)])
        runs = [rerun(log, [HistoryProcessor(["10s"])], max_future_s=None, batch=b) for b in (1, 2, 3, 100)]
        assert all(r == runs[0] for r in runs[1:])
        windows = [o for o in runs[0] if o["kind"] == "window"]
        # Only the tick closed [0, 10): without it the watermark would be at t=7.
        assert [(w["window_start"][11:19], w["count"]) for w in windows] == [("10:00:00", 3)]
        replay(log, tmp_path / "replayed.duckdb")
        con = duckdb.connect(str(tmp_path / "replayed.duckdb"), read_only=True)
        try:
            assert con.execute("SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM executions)"
                               ).fetchone() == (0, 5)
        finally:
            con.close()
    finally:
        log.close()


def test_a_quiet_programs_window_closes_within_lateness_plus_one_second_and_replay_reproduces_it(
        daemon_factory, tmp_path: Path) -> None:
    config = f"[processors]\nlateness_s = {LATENESS_S}\nhistory_windows = [\"2s\", \"10s\"]\ndrift_enabled = false\n"
    daemon = daemon_factory(config_text=config).start()
    now = dt.datetime.now(dt.UTC)
    body = [{"id": e["id"], "kind": "execution", "program": "qa", "ts": now.isoformat()} for e in
            (ev("execution", 0) for _ in range(5))]
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        assert client.post("/v1/events", json=body).status_code == 200
        window_end = math.floor(now.timestamp() / 2) * 2 + 2

        def closed() -> list:
            items = client.get("/v1/history", params={"program": "qa", "window": "2s"}).json()["items"]
            return items if sum(i["count"] for i in items) == 5 else []

        wait_until(closed, timeout=30, interval=0.02)
        seen = time.time()
        stats = client.get("/v1/stats").json()["processors"]
    # The close was caused by ticks (no other event came), within lateness + 1 s of the end.
    assert stats["ticks"] >= 1
    assert seen - window_end <= LATENESS_S + 1.0, seen - window_end
    assert daemon.stop() == 0
    copy = tmp_path / "copy.duckdb"
    result = run_cli("replay", "--config", str(daemon.config), "--data-dir", str(daemon.data_dir), "--into", str(copy))
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)["derived"]
    assert check["equal"] and check["live"] == check["rerun"] >= 1, check
    assert tables_equal(daemon.data_dir / "adaptd.duckdb", copy) == []
