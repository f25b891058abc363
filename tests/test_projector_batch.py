"""The bulk projection path: ``Store.project_batch`` over a ``RecordBatch`` stores exactly
what ``Store.project`` over the same records stores, whatever the batch boundaries."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from test_store import event, records

from adaptd.daemon.readmodel.replay import tables_equal
from adaptd.daemon.readmodel.store import Store
from adaptd.streams.events import new_id
from adaptd.streams.log.base import RecordBatch


def mixed_events() -> list:
    """Valid events of several kinds plus every way a record can be rejected or repeated."""
    shared = str(new_id())
    resent = event(program="resent")
    evs: list = [event(), event("lm_call"), event("feedback"), event("signal"), event("adaptation")]
    evs += [resent, event(program="x"), resent]  # re-sent id, same tenant: stored once
    evs += [event(id=shared, tenant="acme"), event(id=shared, tenant="globex")]  # two tenants: twice
    evs += [b"\xff\xfe not utf-8", b'{"kind": "execution", "id": ', b"[1, 2]", event("no_such_kind")]
    missing = event()
    del missing["program"]
    evs += [missing, event("dead_letter"), event("lm_call"), event(ts="not a time")]
    return evs


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_project_batch_stores_what_project_stores(tmp_path: Path, size: int) -> None:
    recs = records(mixed_events(), start=5)
    with Store(tmp_path / "a.duckdb") as a:
        a.project(recs)
    with Store(tmp_path / "b.duckdb") as b:
        results = [b.project_batch(RecordBatch.from_records(recs[i:i + size])) for i in range(0, len(recs), size)]
        assert b.position() == recs[-1].offset + 1
        counts = b.counts()
    assert tables_equal(tmp_path / "a.duckdb", tmp_path / "b.duckdb") == []
    assert counts["executions"] == 5  # event(), resent, x, and the shared id under two tenants
    assert counts["dead_letters"] == 7  # 6 rejected records and one dead-letter event
    assert sum(r.duplicates for r in results) == 1


def test_project_batch_skips_what_is_below_the_position(tmp_path: Path) -> None:
    recs = records([event() for _ in range(10)])
    with Store(tmp_path / "db.duckdb") as store:
        store.project_batch(RecordBatch.from_records(recs[:6]))
        again = store.project_batch(RecordBatch.from_records(recs))
        assert again.skipped == 6 and again.inserted == {"executions": 4} and again.next_offset == 10
        assert store.project_batch(RecordBatch.from_records(recs[:3])).skipped == 3
        assert store.counts()["executions"] == 10 and store.position() == 10
        assert store.project_batch(RecordBatch.from_records([])).records == 0


def test_project_batch_refuses_offsets_out_of_order(tmp_path: Path) -> None:
    recs = records([orjson.dumps(event()) for _ in range(3)])
    with Store(tmp_path / "db.duckdb") as store, pytest.raises(ValueError, match="ascending"):
        store.project_batch(RecordBatch.from_records([recs[1], recs[0], recs[2]]))
