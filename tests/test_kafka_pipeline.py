"""The scale-out pipeline end to end on the mock cluster: ingest (`adaptd up --log kafka://`)
-> Kafka -> two Faust workers (`adaptd worker`) -> derived topics -> projector -> DuckDB.

One workload runs twice: through the embedded daemon (file log, in-process processors)
and through Kafka, where the worker holding the busiest partition is killed with SIGKILL
mid-stream.  The Kafka run must lose nothing, count nothing twice, and leave the same
DuckDB tables as the embedded run, signals included.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until
from kafka_broker import WorkerProcess, kafka_bootstrap  # noqa: F401

from adaptd.streams.kafka.log import KafkaLog

PROGRAMS = ("checkout", "qa", "triage")
WINDOWS = ("10s", "1m", "1h")
#: Tables compared row for row (without log_offset: offsets differ between a file log
#: and Kafka partitions; projector_state holds those offsets only).
TABLES = ("executions", "lm_calls", "feedback", "route_decisions", "signals", "adaptations", "optimizer_runs",
          "dead_letters", "perf_windows")
BATCH = 500


def make_workload(start: dt.datetime) -> list[dict]:
    """checkout at 10/s for 330 s with 1% errors (past the anomaly detectors' warm-up),
    then 20 s at 30% (an error burst, so signals); qa and triage at 1/s.  Sorted by time; every program's last
    event has the same time, so every partition's watermark ends where the global one does."""
    rng = random.Random(8)
    events = []

    def execution(program: str, t: float, error_rate: float) -> dict:
        failed = rng.random() < error_rate
        return {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "kind": "execution",
                "program": program, "module": "answer", "route": "gpt-4o-mini",
                "ts": (start + dt.timedelta(seconds=t)).isoformat(), "status": "error" if failed else "ok",
                "error_type": "RateLimitError" if failed else None, "duration_ms": rng.lognormvariate(5, 0.3)}

    ticks = 350 * 10
    for i in range(ticks):
        t = i / 10
        events.append(execution("checkout", t, 0.01 if t < 330 else 0.30))
        if i % 10 == 0 or i == ticks - 1:
            events += [execution("qa", t, 0.02), execution("triage", t, 0.02)]
    return events


def post(client: httpx.Client, events: list[dict]) -> None:
    answer = client.post("/v1/events", content=orjson.dumps(events))
    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text


def progress(client: httpx.Client) -> dict[str, int]:
    """What the daemon's DuckDB holds of the derived events, through its API."""
    seen = {}
    for program in PROGRAMS:
        for window in WINDOWS:
            items = client.get("/v1/history", params={"program": program, "window": window, "limit": 1000}).json()
            seen[f"{program}/{window}"] = len(items["items"])
    seen["signals"] = len(client.get("/v1/signals", params={"limit": 1000}).json()["items"])
    return seen


def table_diffs(db_a: Path, db_b: Path) -> list[str]:
    """Rows of ``TABLES`` in one database and not the other (multisets, log_offset aside)."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{db_a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{db_b}' AS b (READ_ONLY)")
        diffs = []
        for table in TABLES:
            for this, other in (("a", "b"), ("b", "a")):
                only = (f"SELECT * EXCLUDE (log_offset) FROM {this}.{table}"
                        f" EXCEPT ALL SELECT * EXCLUDE (log_offset) FROM {other}.{table}")
                count = con.execute(f"SELECT count(*) FROM ({only})").fetchone()[0]
                if count:
                    diffs.append(f"{table}: {count} row(s) only in {this}")
        return diffs
    finally:
        con.close()


@pytest.fixture(scope="module")
def workload() -> list[dict]:
    return make_workload(dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=20))


def run_embedded(data_dir: Path, workload: list[dict]) -> dict[str, Any]:
    """The workload through the embedded daemon: its DuckDB file and what it derived."""
    daemon = DaemonProcess(data_dir).start(timeout=90)
    try:
        with httpx.Client(base_url=daemon.url, timeout=60) as client:
            for i in range(0, len(workload), BATCH):
                post(client, workload[i:i + BATCH])

            def caught_up() -> bool:
                stats = client.get("/v1/stats").json()
                return stats["processors"]["lag"] == 0 and stats["projector_lag"] == 0

            wait_until(caught_up, timeout=60, interval=0.1)
            derived = progress(client)
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
    return {"db": daemon.data_dir / "adaptd.duckdb", "progress": derived}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,  # noqa: F811
         workload: list[dict]) -> dict[str, Any]:
    """The workload through the embedded daemon, then through Kafka and two workers (booted
    meanwhile); the worker holding the busiest partition is SIGKILLed once the first
    batches were processed, while the rest is being ingested."""
    root = tmp_path_factory.mktemp("kafka")
    namespace = f"pipe-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{kafka_bootstrap}/{namespace}"
    daemon = DaemonProcess(root / "data", env={"ADAPTD_LOG__URL": url})
    workers = {name: WorkerProcess(url, root / name) for name in ("a", "b")}
    events = KafkaLog(kafka_bootstrap, f"{namespace}.events")
    try:
        # One worker joins first, the second later (one rebalance at a time: the mock
        # cluster's group coordinator has answered SyncGroup with InvalidRequest when two
        # members joined at once on an overloaded machine).
        workers["a"].start()
        daemon.start(timeout=90)
        wait_until(lambda: workers["a"].assigned() == [0, 1, 2, 3], timeout=90, interval=0.2)
        workers["b"].start()
        embedded = run_embedded(root / "embedded", workload)  # while b boots and joins

        def split() -> bool:  # both workers joined and the partitions are divided between them
            a, b = workers["a"].assigned(), workers["b"].assigned()
            return bool(a and b and sorted(a + b) == [0, 1, 2, 3])

        wait_until(split, timeout=90, interval=0.2)
        with httpx.Client(base_url=daemon.url, timeout=60) as client:
            first = 2 * BATCH
            for i in range(0, first, BATCH):
                post(client, workload[i:i + BATCH])
            busiest = max(range(events.partitions), key=events.end_offset)
            wait_until(lambda: progress(client)["checkout/10s"] > 0, timeout=60, interval=0.2)
            victim = next(w for w in workers.values() if busiest in (w.assigned() or []))
            survivor = next(w for w in workers.values() if w is not victim)
            post(client, workload[first:first + BATCH])
            victim.kill9()
            for i in range(first + BATCH, len(workload), BATCH):
                post(client, workload[i:i + BATCH])
            wait_until(lambda: progress(client) == embedded["progress"], timeout=120, interval=0.5)
            takeover = survivor.assigned()
        survivor.stop()
        assert daemon.stop() == 0
    finally:
        events.close()
        for w in workers.values():
            w.stop(timeout=10)
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
    return {"embedded": embedded, "db": daemon.data_dir / "adaptd.duckdb", "busiest": busiest,
            "takeover": takeover}


def test_a_killed_worker_s_partitions_move_to_the_other_and_no_event_is_lost_or_counted_twice(
    runs: dict[str, Any], workload: list[dict]
) -> None:
    assert runs["takeover"] == [0, 1, 2, 3]  # the survivor holds every partition
    con = duckdb.connect(str(runs["db"]), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM executions").fetchone() == (len(workload),) * 2
        windows, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM perf_windows").fetchone()
        assert windows == distinct > 0
        # Every closed 1-minute window counts each of its executions exactly once.
        counted = dict(con.execute("SELECT program, sum(count) FROM perf_windows WHERE window_size = '1m'"
                                   " GROUP BY program").fetchall())
        last_end = con.execute("SELECT max(window_end) FROM perf_windows WHERE window_size = '1m'").fetchone()[0]
    finally:
        con.close()
    for program in PROGRAMS:
        sent = sum(1 for e in workload if e["program"] == program and dt.datetime.fromisoformat(e["ts"]) < last_end)
        assert counted[program] == sent


def test_the_kafka_pipeline_leaves_the_same_duckdb_tables_as_the_embedded_mode_signals_included(
    runs: dict[str, Any]
) -> None:
    embedded = runs["embedded"]
    assert embedded["progress"]["signals"] > 0  # the workload does raise signals
    assert table_diffs(embedded["db"], runs["db"]) == []
