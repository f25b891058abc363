"""The DuckDB read model: migrations, exactly-once projection, dead letters, queries, projector."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import types
import typing
import uuid
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from adaptd.daemon.readmodel.migrations import EVENT_TABLES, LATEST_VERSION, MigrationError, migrate
from adaptd.daemon.readmodel.projector import Projector
from adaptd.daemon.readmodel.store import Store
from adaptd.daemon.testing import MemoryLog
from adaptd.streams.events import KINDS, DeadLetter, new_id
from adaptd.streams.log.base import Record

REPO = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def event(kind: str = "execution", **fields: Any) -> dict[str, Any]:
    """A valid event dict of ``kind`` as the daemon writes it (JSON-ready)."""
    base: dict[str, Any] = {"id": str(new_id()), "ts": T0.isoformat(), "kind": kind, "tenant": "acme", "source": "test"}
    required = {
        "execution": {"program": "qa", "duration_ms": 10.0},
        "lm_call": {"model": "gpt"},
        "feedback": {"execution_id": str(new_id()), "score": 1.0},
        "route_decision": {"program": "qa", "route": "a", "policy_version": 3, "probability": 0.25},
        "signal": {"signal_type": "anomaly", "explanation": {"z": 4.2}},
        "adaptation": {"action": "route", "caused_by": [str(new_id())], "details": {"share": 0.1}},
        "optimizer_run": {"job_id": "j1", "program": "qa", "optimizer": "MIPROv2", "status": "running"},
        "window": {"window_size": "1m", "window_start": T0.isoformat(), "window_end": T0.isoformat()},
        "dead_letter": {"reason": "bad", "payload": "{}"},
    }.get(kind, {})
    return {**base, **required, **fields}


def records(events: list[Any], start: int = 0) -> list[Record]:
    """Log records of ``events`` (dicts are JSON-encoded, bytes kept) from offset ``start``."""
    return [Record(start + i, e if isinstance(e, bytes) else orjson.dumps(e), 0, 1_700_000_000_000 + start + i)
            for i, e in enumerate(events)]


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "db.duckdb")
    yield s
    s.close()


# ---------------------------------------------------------------- migrations


def test_migrations_are_recorded_and_idempotent_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    Store(path).close()
    Store(path).close()
    con = duckdb.connect(str(path))
    assert con.execute("SELECT version FROM schema_migrations").fetchall() == [(v,) for v in range(1, LATEST_VERSION + 1)]
    assert migrate(con) == []
    con.close()


def test_a_database_from_a_newer_adaptd_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (?, now())", [LATEST_VERSION + 1])
    con.close()
    with pytest.raises(MigrationError, match="newer"):
        Store(path)


def _duckdb_type(annotation: Any) -> str:
    """The column type the schema promises for a model field's annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _duckdb_type(args[0])
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _duckdb_type(inner)
    if origin is typing.Literal:
        return "VARCHAR"
    if origin in (dict, list) or annotation in (dict, list):
        return "JSON"
    return {uuid.UUID: "UUID", dt.datetime: "TIMESTAMP WITH TIME ZONE", str: "VARCHAR", int: "BIGINT",
            float: "DOUBLE", bool: "BOOLEAN"}[annotation]


def test_every_model_field_has_a_column_of_the_right_type(store: Store) -> None:
    """Fails when a model gains a field without a migration adding its column."""
    with store._cursor() as cur:
        rows = cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns").fetchall()
    columns = {(t, c): d for t, c, d in rows}
    models = {**{EVENT_TABLES[k]: m for k, m in KINDS.items()}, "dead_letters": DeadLetter}
    missing = []
    for table, model in models.items():
        for name, info in model.model_fields.items():
            if table == "dead_letters" and name == "kind":
                continue
            if columns.get((table, name)) != _duckdb_type(info.annotation):
                missing.append(f"{table}.{name}: {columns.get((table, name))} != {_duckdb_type(info.annotation)}")
        assert columns.get((table, "log_offset")) == "BIGINT"
    assert missing == []
    assert set(EVENT_TABLES) == set(KINDS)


# ---------------------------------------------------------------- projection


def test_every_kind_is_projected_with_typed_columns_and_defaults(store: Store) -> None:
    evs = [event(k) for k in (*KINDS, "dead_letter")]
    evs[0].pop("tenant")  # absent fields take the model's default
    result = store.project(records(evs))
    assert result.next_offset == len(evs) and store.position() == len(evs)
    assert set(result.inserted) == {*EVENT_TABLES.values(), "dead_letters"}
    row = store.get("executions", evs[0]["id"])
    assert row["tenant"] == "default" and row["status"] == "ok" and row["attrs"] == {}
    assert row["ts"] == "2026-11-22T10:00:00+00:00" and row["log_offset"] == 0 and row["duration_ms"] == 10.0
    assert store.get("signals", evs[4]["id"])["explanation"] == {"z": 4.2}
    assert store.get("adaptations", evs[5]["id"])["caused_by"] == evs[5]["caused_by"]
    assert store.get("route_decisions", evs[3]["id"])["policy_version"] == 3
    assert store.get("dead_letters", evs[-1]["id"])["reason"] == "bad"
    assert store.counts()["dead_letters"] == 1 == store.dead_letter_count()


def test_projecting_the_same_records_twice_or_after_reopen_keeps_one_row_per_id(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    batch = records([event() for _ in range(50)])
    with Store(path) as s:
        s.project(batch)
        again = s.project(batch)
        assert again.skipped == 50 and again.inserted == {}
    with Store(path) as s:
        assert s.position() == 50
        s.project(batch[10:])
        assert s.counts()["executions"] == 50


def test_a_resent_event_at_a_later_offset_is_skipped_as_a_duplicate(store: Store) -> None:
    first = [event() for _ in range(20)]
    store.project(records(first))
    # Same ids again (below and mixed with the largest id seen) plus new ones.
    again = [first[3], event(), first[0], event()]
    result = store.project(records(again, start=20))
    assert result.duplicates == 2 and result.inserted == {"executions": 2}
    assert store.counts()["executions"] == 22
    assert store.get("executions", first[3]["id"])["log_offset"] == 3


def test_duplicate_ids_inside_one_batch_keep_the_first_offset(store: Store) -> None:
    e = event()
    later = {**e, "program": "other"}
    result = store.project(records([e, event(), later]))
    assert result.duplicates == 1 and store.counts()["executions"] == 2
    row = store.get("executions", e["id"])
    assert row["program"] == "qa" and row["log_offset"] == 0


def test_records_below_the_position_are_skipped(store: Store) -> None:
    evs = [event() for _ in range(10)]
    store.project(records(evs[5:], start=5))
    assert store.position() == 10
    result = store.project(records(evs))  # a crash between log and DB re-delivers older records
    assert result.skipped == 10 and store.counts()["executions"] == 5


def test_bad_records_are_dead_lettered_and_the_rest_of_the_batch_kept(store: Store) -> None:
    good = [event(), event("lm_call")]
    missing_program = event()
    del missing_program["program"]
    bad: list[Any] = [b'{"id": ', b"\xff\xfe not utf-8", b"[1, 2]", orjson.dumps({**event(), "id": "nope"}),
                      orjson.dumps(missing_program), orjson.dumps(event("teleport"))]
    batch = records([good[0], *bad, good[1]])
    result = store.project(batch)
    assert result.inserted == {"executions": 1, "lm_calls": 1, "dead_letters": 6}
    assert store.position() == 8
    letters = store.dead_letters("", limit=10) + store.dead_letters("acme", limit=10)
    reasons = {r["log_offset"]: r["reason"] for r in letters}
    assert reasons == {
        1: "projector: malformed JSON",
        2: "projector: not UTF-8 text",
        3: 'projector: not a JSON object with a string "kind"',
        4: 'projector: missing or invalid "id"',
        5: 'projector: missing or invalid "program"',
        6: "projector: unknown kind teleport",
    }
    assert {r["tenant"] for r in letters if r["log_offset"] >= 4} == {"acme"}
    assert next(r for r in letters if r["log_offset"] == 1)["payload"] == '{"id": '
    # Re-projecting dead-letters nothing twice (ids are derived from the offset).
    store.project(records([b"{oops"], start=8))
    assert store.project(records([b"{oops"], start=8)).skipped == 1
    assert store.dead_letter_count() == 7


def test_project_refuses_records_of_two_partitions(store: Store) -> None:
    with pytest.raises(ValueError, match="partition"):
        store.project([Record(0, b"{}", 0), Record(0, b"{}", 1)])
    assert store.project([]).records == 0


# ---------------------------------------------------------------- queries


def test_executions_filters_and_keyset_pagination(store: Store) -> None:
    evs = [event(ts=(T0 + dt.timedelta(seconds=i // 2)).isoformat(), status="error" if i % 3 == 0 else "ok",
                 route=f"r{i % 2}") for i in range(25)]
    store.project(records([*evs, event(tenant="other")]))
    seen, cursor = [], None
    while True:
        page, cursor = store.executions("acme", program="qa", limit=10, cursor=cursor)
        seen += page
        if cursor is None:
            break
    assert len(seen) == 25 and len({r["id"] for r in seen}) == 25
    assert [(r["ts"], r["id"]) for r in seen] == sorted(((r["ts"], r["id"]) for r in seen), reverse=True)
    errors, _ = store.executions("acme", status="error", limit=1000)
    assert len(errors) == 9
    window, _ = store.executions("acme", since=T0 + dt.timedelta(seconds=2), until="2026-11-22T10:00:04Z")
    assert len(window) == 4
    assert len(store.executions("acme", route="r1")[0]) == 12
    assert store.executions("nobody") == ([], None)
    assert len(store.executions("acme", limit=5000)[0]) == 25  # clamped to 1000
    with pytest.raises(ValueError, match="cursor"):
        store.executions("acme", cursor="garbage")


def test_program_summary_counts_top_level_runs(store: Store) -> None:
    parent = event(duration_ms=100.0, tokens_in=10, tokens_out=5, cost_usd=0.5)
    evs = [parent, event(status="error", duration_ms=300.0), event(duration_ms=200.0),
           event(module="m", parent_id=parent["id"], duration_ms=99.0), event(program="b")]
    store.project(records(evs))
    summary = {r["program"]: r for r in store.program_summary("acme")}
    qa = summary["qa"]
    assert qa["executions"] == 3 and qa["errors"] == 1 and qa["error_rate"] == pytest.approx(1 / 3)
    assert qa["p50_duration_ms"] == 200.0 and qa["tokens"] == 15 and qa["cost_usd"] == 0.5
    assert qa["first_ts"] == qa["last_ts"] == "2026-11-22T10:00:00+00:00"
    assert set(summary) == {"qa", "b"} and store.program_summary("nobody") == []


def test_get_rejects_unknown_tables_and_returns_none_for_unknown_ids(store: Store) -> None:
    assert store.get("executions", uuid.uuid4()) is None
    with pytest.raises(ValueError):
        store.get("schema_migrations", uuid.uuid4())


# ---------------------------------------------------------------- projector


def test_projector_follows_the_log_commits_and_drains_on_stop(tmp_path: Path) -> None:
    log, store = MemoryLog(), Store(tmp_path / "db.duckdb")
    projector = Projector(log, store, batch=7, poll_s=0.05)
    projector.start()
    offsets = log.append([orjson.dumps(event()) for _ in range(30)])
    assert projector.wait_for(offsets[-1], timeout=10)
    assert projector.lag() == 0 and log.committed("projector") == 30
    log.append([orjson.dumps(event()) for _ in range(500)])
    assert projector.stop(timeout=10)
    assert store.position() == 530 and log.committed("projector") == 530
    assert store.counts()["executions"] == 530 and projector.errors == 0
    store.close()


def test_a_poisoned_record_is_dead_lettered_and_the_projector_keeps_running(tmp_path: Path) -> None:
    log, store = MemoryLog(), Store(tmp_path / "db.duckdb")
    real = store.project

    def project(batch):
        if any(b"poison" in r.value for r in batch):
            raise duckdb.ConversionException("cannot project poison")
        return real(batch)

    real_batch = store.project_batch

    def project_batch(batch):  # the projector reads RecordBatches; one by one it uses project
        if b"poison" in batch.data:
            raise duckdb.ConversionException("cannot project poison")
        return real_batch(batch)

    store.project = project  # type: ignore[method-assign]
    store.project_batch = project_batch  # type: ignore[method-assign]
    projector = Projector(log, store, batch=100, poll_s=0.05)
    projector.start()
    log.append([orjson.dumps(event()), orjson.dumps(event(program="poison")), orjson.dumps(event())])
    assert projector.wait_for(2, timeout=10)
    assert store.counts()["executions"] == 2
    (letter,) = store.dead_letters("", limit=5)
    assert letter["log_offset"] == 1 and "cannot project poison" in letter["reason"]
    assert projector.errors == 2 and projector.is_alive()
    projector.stop(timeout=5)
    store.close()


def test_a_failing_database_is_retried_and_nothing_is_dead_lettered(tmp_path: Path) -> None:
    log, store = MemoryLog(), Store(tmp_path / "db.duckdb")
    real, failures = store.project_batch, [2]

    def project_batch(batch):
        if failures[0]:
            failures[0] -= 1
            raise duckdb.IOException("disk on fire")
        return real(batch)

    store.project_batch = project_batch  # type: ignore[method-assign]
    projector = Projector(log, store, batch=100, poll_s=0.05, retry_s=0.05)
    projector.start()
    log.append([orjson.dumps(event()) for _ in range(5)])
    assert projector.wait_for(4, timeout=10)
    assert projector.errors == 2 and "disk on fire" in (projector.last_error or "")
    assert store.counts()["executions"] == 5 and store.dead_letter_count() == 0
    assert projector.stop(timeout=5)
    store.close()


def test_reads_run_while_the_projector_writes(tmp_path: Path) -> None:
    log, store = MemoryLog(), Store(tmp_path / "db.duckdb")
    projector = Projector(log, store, batch=200, poll_s=0.05)
    projector.start()
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(30):
                store.executions("acme", limit=50)
                store.program_summary("acme")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(10):
        log.append([orjson.dumps(event()) for _ in range(200)])
    for t in threads:
        t.join()
    assert projector.wait_for(1999, timeout=20)
    projector.stop(timeout=5)
    assert failures == [] and store.counts()["executions"] == 2000
    store.close()


# ---------------------------------------------------------------- crash safety

_CHILD = """
import sys, uuid, orjson
from adaptd.daemon.readmodel.store import Store
from adaptd.streams.log.base import Record
NS = uuid.UUID(int=7)
store = Store(sys.argv[1])
while True:
    start = store.position()
    batch = [Record(o, orjson.dumps({"id": str(uuid.uuid5(NS, str(o))), "ts": "2026-11-22T10:00:00Z",
             "kind": "execution", "tenant": "acme", "program": "crash"}), 0, 0) for o in range(start, start + 97)]
    store.project(batch)
    print(store.position(), flush=True)
"""


def test_sigkill_while_projecting_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None
        for _ in range(2 + round_):  # a few committed batches, then die mid-stream
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        with Store(path) as s:
            position = s.position()
            with s._cursor() as cur:
                rows = cur.execute("SELECT log_offset FROM executions ORDER BY log_offset").fetchall()
            offsets = [o for (o,) in rows]
            assert offsets == list(range(position)), f"round {round_}: rows and position disagree"
            # Re-delivering everything from 0 changes nothing.
            values = [orjson.dumps({"id": str(uuid.uuid5(uuid.UUID(int=7), str(o))), "ts": "2026-11-22T10:00:00Z",
                                    "kind": "execution", "tenant": "acme", "program": "crash"}) for o in range(position)]
            assert s.project([Record(o, v) for o, v in enumerate(values)]).skipped == position
            assert s.counts()["executions"] == position
    with Store(path) as s:  # nor do the same events re-sent at new offsets (an SDK retry)
        resent = s.project([Record(position + o, v) for o, v in enumerate(values[:50])])
        assert resent.duplicates == 50 and resent.inserted == {} and s.counts()["executions"] == position


def test_the_configured_memory_limit_reaches_duckdb_and_a_tiny_one_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "limited.duckdb", memory_limit_mb=300)
    try:
        with store._cursor() as cur:
            limit = cur.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    finally:
        store.close()
    assert limit == "286.1 MiB", limit  # DuckDB shows 300 MB (10^6) in MiB
    with pytest.raises(ValueError, match="at least 64"):
        Store(tmp_path / "tiny.duckdb", memory_limit_mb=8)


def test_the_write_ahead_log_is_checkpointed_while_projecting_so_it_stays_bounded(tmp_path: Path) -> None:
    """A result left pending on the store's connection kept a transaction open, DuckDB then
    skipped every automatic checkpoint, and the WAL (and the memory of its rows) grew with
    everything projected: 40 MB after 200k events, ~300 MB of RSS after 1M."""
    store = Store(tmp_path / "wal.duckdb")
    wal = tmp_path / "wal.duckdb.wal"
    try:
        with store._cursor() as cur:  # a small threshold, so a few batches cross it many times
            cur.execute("SET wal_autocheckpoint = '256KB'")
        sizes = []
        for batch in range(8):
            store.project(records([event() for _ in range(2_000)], start=batch * 2_000))
            sizes.append(wal.stat().st_size if wal.exists() else 0)
    finally:
        store.close()
    assert max(sizes) < 4 * 256 * 1024, sizes  # without checkpoints it would be the sum of all batches
