"""Retention and export of the DuckDB read model.

- Retention with an injected clock on a real store drops the rows older than each
  table's days and keeps the rest, while the projector keeps projecting.
- A real daemon applies ``[retention]`` on its own (every ``interval_s``) and on
  ``adaptd retention apply``; only admins may.
- ``adaptd export`` writes one tenant's table to Parquet (read back by DuckDB and pyarrow)
  or NDJSON, bounded by ``--since`` / ``--until``; fixable failures exit 2 with one line.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from conftest import DaemonProcess, free_port, run_cli, wait_until

from adaptd.daemon.cli.export import TABLES
from adaptd.daemon.http.export import Table
from adaptd.daemon.readmodel.export_queries import EXPORT_TABLES
from adaptd.daemon.readmodel.retention_queries import apply_ceiling, apply_retention, cutoffs
from adaptd.daemon.readmodel.store import Store
from adaptd.streams.log.base import Record

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
ADMIN, USER = "tok-exp-admin-1f0e", "tok-exp-user-77ab"
TENANTS = f"""
[[tenants]]
name = "ops"
tokens = ["{ADMIN}"]
admin = true

[[tenants]]
name = "acme"
tokens = ["{USER}"]
"""


def execution(ts: dt.datetime, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": "execution", "ts": ts.isoformat(), "tenant": tenant, "source": "test",
            "program": "qa", "duration_ms": 1.0, **fields}


def records(events: list[dict[str, Any]], start: int) -> list[Record]:
    return [Record(start + i, orjson.dumps(e), 0, 1_700_000_000_000 + start + i) for i, e in enumerate(events)]


def test_cutoffs_are_days_before_the_clock_and_refuse_a_naive_clock() -> None:
    assert cutoffs({"executions": 30, "lm_calls": 0.5}, NOW) == {
        "executions": NOW - dt.timedelta(days=30), "lm_calls": NOW - dt.timedelta(hours=12)}
    assert cutoffs({}, NOW) == {}
    with pytest.raises(ValueError, match="timezone"):
        cutoffs({"executions": 1}, NOW.replace(tzinfo=None))


def test_retention_with_a_fake_clock_drops_old_rows_and_keeps_new_ones_while_projection_continues(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        old = [execution(NOW - dt.timedelta(days=40, seconds=i)) for i in range(2500)]
        kept = [execution(NOW - dt.timedelta(days=29, seconds=i)) for i in range(500)]
        calls = [{"id": str(uuid.uuid4()), "kind": "lm_call", "ts": (NOW - dt.timedelta(days=40)).isoformat(),
                  "tenant": "acme", "source": "test", "model": "m"} for _ in range(100)]
        store.project(records(old + kept + calls, 0))
        # the projector keeps projecting new (current) rows during the deletion
        fresh = [execution(NOW - dt.timedelta(seconds=i)) for i in range(3000)]
        done = threading.Event()

        def project() -> None:
            for start in range(0, len(fresh), 100):
                store.project(records(fresh[start:start + 100], 3100 + start))
            done.set()

        writer = threading.Thread(target=project)
        writer.start()
        deleted = apply_retention(store, {"executions": 30}, NOW, batch_rows=100)
        writer.join(60)
        assert done.is_set()
        assert deleted == {"executions": 2500}
        rows = store.query("executions", "SELECT id FROM executions")
        assert {r["id"] for r in rows} == {e["id"] for e in kept + fresh}
        # a table not named keeps everything; a second run finds nothing more
        assert store.counts()["lm_calls"] == 100
        assert apply_retention(store, {"executions": 30}, NOW, batch_rows=100) == {"executions": 0}
        assert store.position() == 3100 + len(fresh)
    finally:
        store.close()


def test_a_row_ceiling_keeps_the_newest_rows_of_every_tenant(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        rows = [execution(NOW - dt.timedelta(minutes=i), tenant=("acme", "beta")[i % 2]) for i in range(1000)]
        store.project(records(rows, 0))
        assert apply_ceiling(store, {"executions": 300}, batch_rows=100) == {"executions": 700}
        left = {r["id"] for r in store.query("executions", "SELECT id FROM executions")}
        assert left == {e["id"] for e in rows[:300]}  # the newest 300, both tenants'
        assert apply_ceiling(store, {"executions": 300, "lm_calls": 5}) == {"executions": 0, "lm_calls": 0}
    finally:
        store.close()


def test_retention_settings_refuse_unknown_tables_and_non_positive_days() -> None:
    from pydantic import ValidationError

    from adaptd.daemon.config import Settings

    with pytest.raises(ValidationError, match="unknown table.*executionz"):
        Settings(retention={"days": {"executionz": 3}})
    with pytest.raises(ValidationError, match="positive number of days"):
        Settings(retention={"days": {"executions": 0}})
    with pytest.raises(ValidationError, match="max_rows of feedback must be a positive number of rows"):
        Settings(retention={"max_rows": {"feedback": 0}})


def test_the_cli_the_api_and_the_read_model_export_the_same_tables() -> None:
    assert TABLES == EXPORT_TABLES == typing.get_args(Table)


def post(url: str, token: str, events: list[dict[str, Any]]) -> None:
    body = [{k: v for k, v in e.items() if k not in ("tenant",)} for e in events]
    answer = httpx.post(url + "/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


def count(url: str, token: str) -> int:
    answer = httpx.get(url + "/v1/executions", params={"limit": 1000},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return len(answer.json()["items"])


def test_the_daemon_applies_retention_every_interval_on_its_own(tmp_path: Path) -> None:
    config = TENANTS + "\n[retention]\ndays = { executions = 30 }\ninterval_s = 0.5\n"
    daemon = DaemonProcess(tmp_path / "data", config_text=config, env={"ADAPTD_TEST_TOKEN": ADMIN}).start()
    try:
        now = dt.datetime.now(dt.UTC)
        post(daemon.url, USER, [execution(now - dt.timedelta(days=31, minutes=i)) for i in range(20)]
             + [execution(now - dt.timedelta(days=2, minutes=i)) for i in range(5)])
        status = wait_until(lambda: (s := httpx.get(daemon.url + "/v1/retention", timeout=10,
                                                    headers={"Authorization": f"Bearer {ADMIN}"}).json())
                            ["deleted_total"].get("executions", 0) >= 20 and s, timeout=30)
        assert status["days"] == {"executions": 30} and status["runs"] >= 2
        assert count(daemon.url, USER) == 5
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon with retention for lm_calls (7 days) and feedback (3 rows), applied on
    demand (the interval is long)."""
    root = tmp_path_factory.mktemp("export")
    config = TENANTS + "\n[retention]\ndays = { lm_calls = 7 }\nmax_rows = { feedback = 3 }\ninterval_s = 86400\n"
    d = DaemonProcess(root / "data", config_text=config, env={"ADAPTD_TEST_TOKEN": ADMIN}).start()
    try:
        yield d
    finally:
        d.stop()


def cli(daemon: DaemonProcess, token: str, *args: str) -> Any:
    return run_cli(*args, "--url", daemon.url, "--token", token)


def test_adaptd_retention_apply_deletes_old_rows_and_needs_an_admin(daemon: DaemonProcess) -> None:
    now = dt.datetime.now(dt.UTC)
    calls = [{"id": str(uuid.uuid4()), "kind": "lm_call", "ts": (now - dt.timedelta(days=days)).isoformat(),
              "model": "m", "program": "retained"} for days in (10, 9, 8, 1)]
    notes = [{"id": str(uuid.uuid4()), "kind": "feedback", "ts": (now - dt.timedelta(minutes=i)).isoformat(),
              "execution_id": str(uuid.uuid4()), "program": "retained", "score": i / 10} for i in range(5)]
    post(daemon.url, USER, calls + notes)

    def stored(path: str) -> list[dict[str, Any]]:
        return httpx.get(daemon.url + path, params={"program": "retained"}, timeout=10,
                         headers={"Authorization": f"Bearer {USER}"}).json()["items"]

    wait_until(lambda: len(stored("/v1/lm_calls")) == 4 and len(stored("/v1/feedback")) == 5, timeout=30)
    refused = cli(daemon, USER, "retention", "apply")
    assert refused.returncode == 1 and "not an admin" in refused.stderr and refused.stdout == ""
    result = cli(daemon, ADMIN, "retention", "apply")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["lm_calls"].split()[1] == "3" and "older than" in lines["lm_calls"], result.stdout
    assert lines["feedback"].split()[1] == "2" and "beyond 3 rows" in lines["feedback"], result.stdout
    assert [c["id"] for c in stored("/v1/lm_calls")] == [calls[-1]["id"]]
    assert {n["id"] for n in stored("/v1/feedback")} == {n["id"] for n in notes[:3]}  # the newest three
    again = json.loads(cli(daemon, ADMIN, "retention", "apply", "--json").stdout)
    assert again["deleted"] == {"feedback": 0, "lm_calls": 0}


def test_export_writes_the_tenants_rows_to_parquet_and_ndjson_read_back_equal(daemon: DaemonProcess,
                                                                                tmp_path: Path) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    mine = [execution(t0 + dt.timedelta(seconds=i), program="exported", attrs={"n": i}) for i in range(300)]
    theirs = [execution(t0 + dt.timedelta(seconds=i), program="exported") for i in range(50)]
    post(daemon.url, USER, mine)
    post(daemon.url, ADMIN, theirs)
    wait_until(lambda: json.loads(cli(daemon, USER, "executions", "--program", "exported", "-n", "1000",
                                      "--json").stdout)["items"].__len__() == 300, timeout=30)

    parquet = tmp_path / "out" / "executions.parquet"
    parquet.parent.mkdir()
    result = cli(daemon, USER, "export", "--table", "executions", "--format", "parquet", "-o", str(parquet))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "exported" in result.stderr
    table = pq.read_table(parquet)
    ours = [r for r in table.to_pylist() if r["program"] == "exported"]
    assert {r["id"] for r in ours} == {e["id"] for e in mine}
    assert {r["tenant"] for r in table.to_pylist()} == {"acme"}
    assert sorted(json.loads(r["attrs"])["n"] for r in ours) == list(range(300))
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    with duckdb.connect() as con:
        n = con.execute("SELECT count(*) FROM read_parquet(?) WHERE program = 'exported'", [str(parquet)]).fetchone()
    assert n == (300,)
    assert not list(parquet.parent.glob("*.part"))

    # NDJSON to stdout, bounded by event time: [t0 + 100 s, t0 + 200 s)
    since, until = (t0 + dt.timedelta(seconds=100)).isoformat(), (t0 + dt.timedelta(seconds=200)).isoformat()
    result = cli(daemon, USER, "export", "--table", "executions", "--format", "ndjson", "--since", since,
                 "--until", until)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["id"] for r in lines} == {e["id"] for e in mine[100:200]}
    assert all(r["ts"].endswith("Z") and r["attrs"]["n"] in range(100, 200) for r in lines)
    # the admin's tenant exports its own rows only
    admin_file = tmp_path / "ops.parquet"
    assert cli(daemon, ADMIN, "export", "--table", "executions", "-o", str(admin_file)).returncode == 0
    assert {r["id"] for r in pq.read_table(admin_file).to_pylist()} == {e["id"] for e in theirs}


def test_export_failures_print_one_line_exit_2_for_bad_values_and_1_when_the_daemon_is_down(daemon: DaemonProcess, tmp_path: Path) -> None:
    cases = [
        (("export", "--table", "executions"), "pass -o FILE"),
        (("export", "--table", "executions", "-o", str(tmp_path / "no" / "x.parquet")), "does not exist"),
        (("export", "--table", "executions", "-o", str(tmp_path / "x.parquet"), "--since", "yesterday"), "422"),
        (("export", "--table", "executions", "-o", str(tmp_path / "x.parquet"), "--since", "2026-12-02T00:00:00Z",
          "--until", "2026-12-01T00:00:00Z"), "must be after since"),
    ]
    for args, words in cases:
        result = cli(daemon, USER, *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("adaptd: error:") and words in lines[0], (args, lines)
    assert not (tmp_path / "x.parquet").exists() and not list(tmp_path.glob("*.part"))
    down = run_cli("export", "--table", "executions", "--format", "ndjson", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach the daemon" in down.stderr
    usage = cli(daemon, USER, "export", "--table", "nope", "-o", str(tmp_path / "y"))
    assert usage.returncode == 2 and "Invalid value for '--table'" in usage.stderr
