"""Invariant 2: rebuilding the read model from the log gives the same tables as live projection."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import orjson
import pytest

from adaptd.daemon.readmodel.projector import Projector
from adaptd.daemon.readmodel.replay import replay, tables_equal
from adaptd.daemon.readmodel.store import Store
from adaptd.daemon.testing import MemoryLog
from adaptd.streams.events import KINDS, new_id

try:
    from test_store import event
except ImportError:  # tests/ imported as a package
    from tests.test_store import event


def _messy_stream(n: int, seed: int = 7) -> list[bytes]:
    """Every kind, re-sent events, dead letters and records only the projector rejects."""
    rnd = random.Random(seed)
    kinds = [*KINDS, "dead_letter"]
    sent: list[bytes] = []
    for i in range(n):
        roll = rnd.random()
        if roll < 0.05 and sent:
            sent.append(rnd.choice(sent))  # an SDK retry: same id, later offset
        elif roll < 0.06:
            sent.append(rnd.choice([b'{"id": ', b"\xff\xfe", b"[]", orjson.dumps(event("teleport"))]))
        else:
            kind = rnd.choice(kinds)
            sent.append(orjson.dumps(event(kind, program=f"p{i % 5}", attrs={"i": i})
                                     if kind in ("execution", "optimizer_run", "route_decision") else event(kind)))
    return sent


def _live(tmp_path: Path, values: list[bytes], chunks: int = 25) -> tuple[MemoryLog, Path]:
    """Project ``values`` with the live Projector thread, appended in small uneven chunks."""
    log, path = MemoryLog(), tmp_path / "live.duckdb"
    store = Store(path)
    projector = Projector(log, store, batch=97, poll_s=0.02)
    projector.start()
    rnd = random.Random(1)
    cuts = sorted(rnd.sample(range(1, len(values)), chunks - 1))
    for a, b in zip([0, *cuts], [*cuts, len(values)]):
        log.append(values[a:b])
    assert projector.wait_for(len(values) - 1, timeout=30)
    assert projector.stop(timeout=10)
    store.close()
    return log, path


def test_replay_equals_live(tmp_path: Path) -> None:
    values = _messy_stream(2000)
    log, live = _live(tmp_path, values)
    stats = replay(log, tmp_path / "replayed.duckdb", batch=1000)
    assert stats.events == len(values) and stats.next_offsets == {0: len(values)}
    assert stats.dead_letters > 0 and stats.duplicates > 0 and stats.events_per_s > 0
    assert tables_equal(live, tmp_path / "replayed.duckdb") == []
    # Other batch sizes give the same tables too.
    replay(log, tmp_path / "small.duckdb", batch=333)
    assert tables_equal(tmp_path / "replayed.duckdb", tmp_path / "small.duckdb") == []


def test_replay_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    log = MemoryLog()
    log.append([orjson.dumps(event()) for _ in range(5)])
    into = tmp_path / "out.duckdb"
    replay(log, into)
    with pytest.raises(FileExistsError, match="exists"):
        replay(log, into)
    log.append([orjson.dumps(event())])
    assert replay(log, into, overwrite=True).events == 6
    with Store(into) as s:
        assert s.counts()["executions"] == 6 and s.position() == 6
    assert not list(tmp_path.glob("*.replaying*"))


def test_replay_of_an_empty_log_builds_an_empty_database(tmp_path: Path) -> None:
    stats = replay(MemoryLog(), tmp_path / "empty.duckdb")
    assert stats.events == 0
    with Store(tmp_path / "empty.duckdb") as s:
        assert set(s.counts().values()) == {0} and s.position() == 0


def test_tables_equal_reports_each_difference(tmp_path: Path) -> None:
    log = MemoryLog()
    log.append([orjson.dumps(event()) for _ in range(10)])
    replay(log, tmp_path / "a.duckdb")
    replay(log, tmp_path / "b.duckdb")
    assert tables_equal(tmp_path / "a.duckdb", tmp_path / "b.duckdb") == []
    con = duckdb.connect(str(tmp_path / "b.duckdb"))
    con.execute("UPDATE executions SET duration_ms = 1 WHERE log_offset = 3")
    con.execute("DELETE FROM executions WHERE log_offset = 5")
    con.execute("CREATE TABLE extra (x INTEGER)")
    con.close()
    diffs = tables_equal(tmp_path / "a.duckdb", tmp_path / "b.duckdb")
    assert any(d.startswith("executions: 2 row(s) only in a") for d in diffs)
    assert any(d.startswith("executions: 1 row(s) only in b") for d in diffs)
    assert "extra: missing in a" in diffs
    with pytest.raises(FileNotFoundError):
        tables_equal(tmp_path / "a.duckdb", tmp_path / "nope.duckdb")


def test_replay_from_the_file_log(tmp_path: Path) -> None:
    file_log = pytest.importorskip("adaptd.streams.log.file")
    values = _messy_stream(500, seed=3)
    log = file_log.FileLog(tmp_path / "log")
    try:
        log.append(values)
        live = Store(tmp_path / "live.duckdb")
        projector = Projector(log, live, batch=50, poll_s=0.02)
        projector.start()
        assert projector.wait_for(len(values) - 1, timeout=30)
        assert projector.stop(timeout=10)
        assert log.committed("projector") == len(values)
        live.close()
        stats = replay(log, tmp_path / "replayed.duckdb")
    finally:
        log.close()
    assert stats.events == len(values)
    assert tables_equal(tmp_path / "live.duckdb", tmp_path / "replayed.duckdb") == []


def test_new_ids_sort_after_old_ones_so_the_fast_insert_path_is_taken(tmp_path: Path) -> None:
    """Not an invariant, a performance premise: UUIDv7 ids ascend, so most batches skip ON CONFLICT."""
    assert new_id() < new_id()
