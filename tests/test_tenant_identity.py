"""An event is identified by (tenant, id): two tenants that send the same id, or the same
OTLP span, each keep their own event and read only their own; a database of the previous
schema upgrades in place and keeps its rows; dead letters expire after a configured age
measured on the log's clock, in live projection and replay alike.

The HTTP tests run a real ``adaptd up`` with two tenants (``acme`` and ``beta``); the
others use a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until

from adaptd.daemon.config import Settings
from adaptd.daemon.readmodel.migrations import LATEST_VERSION, MIGRATIONS
from adaptd.daemon.readmodel.replay import replay, tables_equal
from adaptd.daemon.readmodel.store import DEAD_LETTER_MAX_AGE_DAYS, EXPIRY_STEP, Store
from adaptd.daemon.testing import MemoryLog
from adaptd.streams.events import new_id
from adaptd.streams.log.base import Record
from adaptd.streams.otel_map import execution_id

ACME, BETA = "tok-acme-identity-0123456789", "tok-beta-identity-0123456789"
CONFIG = f"""
[[tenants]]
name = "acme"
tokens = ["{ACME}"]

[[tenants]]
name = "beta"
tokens = ["{BETA}"]
"""
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
START_NS = 1_763_805_600_000_000_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("identity")
    d = DaemonProcess(root / "data", config_text=CONFIG, env={"ADAPTD_TEST_TOKEN": ACME}).start()
    yield d
    assert d.stop() == 0, d.tail(3000)


def client(daemon: DaemonProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def execution(event_id: str, program: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "execution", "id": event_id, "ts": NOW.isoformat(), "program": program, "status": "ok",
            "duration_ms": 5.0, **fields}


def post(daemon: DaemonProcess, token: str, events: list[dict[str, Any]]) -> None:
    with client(daemon, token) as c:
        answer = c.post("/v1/events", json=events)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(events), answer.text


def executions(daemon: DaemonProcess, token: str, program: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000, **({"program": program} if program else {})}
    with client(daemon, token) as c:
        answer = c.get("/v1/executions", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def projected(daemon: DaemonProcess, token: str, program: str, count: int) -> list[dict[str, Any]]:
    """``program``'s executions of the token's tenant once ``count`` are there (15 s at most)."""
    return wait_until(lambda: (rows := executions(daemon, token, program)) and len(rows) >= count and rows,
                      timeout=15)


# ------------------------------------------------------------------ the same id, two tenants


def test_the_same_event_id_from_two_tenants_is_stored_for_each_and_read_only_by_its_own(daemon) -> None:
    shared = str(new_id())
    post(daemon, BETA, [execution(shared, "same-id-beta")])
    projected(daemon, BETA, "same-id-beta", 1)
    post(daemon, ACME, [execution(shared, "same-id-acme"), execution(str(new_id()), "same-id-sentinel")])
    # The sentinel comes after acme's event in the log: once it is readable, so is that event.
    projected(daemon, ACME, "same-id-sentinel", 1)

    acme = [r for r in executions(daemon, ACME) if r["id"] == shared]
    beta = [r for r in executions(daemon, BETA) if r["id"] == shared]
    assert [(r["tenant"], r["program"]) for r in acme] == [("acme", "same-id-acme")]
    assert [(r["tenant"], r["program"]) for r in beta] == [("beta", "same-id-beta")]
    # Neither tenant sees the other's program at all.
    assert executions(daemon, ACME, "same-id-beta") == []
    assert executions(daemon, BETA, "same-id-acme") == []


def test_a_resent_event_is_still_stored_once_per_tenant(daemon) -> None:
    event_id = str(new_id())
    for _ in range(2):
        post(daemon, ACME, [execution(event_id, "resent-acme")])
    post(daemon, ACME, [execution(str(new_id()), "resent-sentinel")])
    projected(daemon, ACME, "resent-sentinel", 1)
    assert [r["id"] for r in executions(daemon, ACME, "resent-acme")] == [event_id]


# ------------------------------------------------------------------ the same OTLP span, two tenants


def otlp_trace(program: str, trace_id: str, root: str, child: str) -> bytes:
    """An OTLP/JSON request of one root span and one child span."""

    def span(span_id: str, parent: str, name: str) -> dict[str, Any]:
        return {"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
                "startTimeUnixNano": str(START_NS), "endTimeUnixNano": str(START_NS + 2_000_000)}

    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": program}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [span(root, "", "root"), span(child, root, "child")]}],
    }]})


def test_the_same_otlp_span_from_two_tenants_is_stored_for_each_with_links_inside_each(daemon) -> None:
    trace_id, root, child = uuid.uuid4().hex, "00000000000000a1", "00000000000000b2"
    body = otlp_trace("shared-span", trace_id, root, child)
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant, token in (("beta", BETA), ("acme", ACME)):
        with client(daemon, token) as c:
            answer = c.post("/v1/traces", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {}
        rows[tenant] = {r["module"]: r for r in projected(daemon, token, "shared-span", 2)}

    for tenant, by_name in rows.items():
        assert set(by_name) == {"root", "child"}
        assert by_name["root"]["id"] == str(execution_id(trace_id, root, tenant))
        assert by_name["child"]["parent_id"] == by_name["root"]["id"]  # the link resolves within the tenant
        assert by_name["root"]["root_id"] == by_name["root"]["id"]
        assert (by_name["child"]["trace_id"], by_name["child"]["span_id"]) == (trace_id, child)
        assert {r["tenant"] for r in by_name.values()} == {tenant}
    assert {r["id"] for r in rows["acme"].values()}.isdisjoint(r["id"] for r in rows["beta"].values())


# ------------------------------------------------------------------ the store itself


def event_record(offset: int, tenant: str, event_id: str, program: str, ms: int = 0) -> Record:
    value = orjson.dumps({**execution(event_id, program), "tenant": tenant, "source": "test"})
    return Record(offset, value, 0, ms)


def test_get_by_id_returns_only_the_asking_tenants_row(tmp_path: Path) -> None:
    shared = str(new_id())
    with Store(tmp_path / "db.duckdb") as store:
        result = store.project([event_record(0, "beta", shared, "b"), event_record(1, "acme", shared, "a")])
        assert result.inserted == {"executions": 2} and result.duplicates == 0
        assert store.get("executions", shared, tenant="acme")["program"] == "a"
        assert store.get("executions", shared, tenant="beta")["program"] == "b"
        assert store.get("executions", shared, tenant="gamma") is None
        # Re-sent by either tenant (below and above the largest stored id): still one row each.
        again = store.project([event_record(2, "acme", shared, "a2"), event_record(3, "beta", str(new_id()), "n")])
        assert again.duplicates == 1 and store.counts()["executions"] == 3


# ------------------------------------------------------------------ migrating a previous database


def previous_schema_database(path: Path) -> dict[str, str]:
    """A DuckDB file as the adaptd before (tenant, id) made it (schema version 2), with
    rows in an event table, a dead letter and a projector position."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
    for version, statements in MIGRATIONS:
        if version > 2:
            break
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_migrations VALUES (?, current_timestamp)", [version])
    ids = {"execution": str(new_id()), "letter": str(new_id())}
    con.execute("INSERT INTO executions (id, ts, v, tenant, source, attrs, kind, program, status, log_offset)"
                " VALUES (?, ?, 1, 'beta', 'test', '{}', 'execution', 'old', 'ok', 0)", [ids["execution"], NOW])
    con.execute("INSERT INTO dead_letters VALUES (?, ?, 'beta', 'test', 'bad', '{}', 1)", [ids["letter"], NOW])
    con.execute("INSERT INTO projector_state VALUES (0, 2)")
    con.close()
    return ids


def schema(path: Path) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
                              " WHERE table_name <> 'schema_migrations' ORDER BY ALL").fetchall()
        keys = con.execute("SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints()"
                           " WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') ORDER BY ALL").fetchall()
        return [*columns, *keys]
    finally:
        con.close()


def test_a_database_of_the_previous_schema_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    old = tmp_path / "old.duckdb"
    ids = previous_schema_database(old)
    with Store(old, dead_letter_max_age_days=0) as store:
        assert store.position() == 2
        row = store.get("executions", ids["execution"], tenant="beta")
        assert (row["program"], row["log_offset"], row["ts"]) == ("old", 0, NOW.isoformat())
        assert store.get("dead_letters", ids["letter"], tenant="beta")["reason"] == "bad"
        # The old row's id, now sent by another tenant, is stored beside it.
        result = store.project([event_record(2, "acme", ids["execution"], "new")])
        assert result.inserted == {"executions": 1}
        assert store.get("executions", ids["execution"], tenant="acme")["program"] == "new"
    con = duckdb.connect(str(old), read_only=True)
    assert con.execute("SELECT list(version ORDER BY version) FROM schema_migrations").fetchone()[0] == \
        list(range(1, LATEST_VERSION + 1))
    con.close()
    # The upgraded file has exactly the schema a new database gets.
    Store(tmp_path / "new.duckdb").close()
    assert schema(old) == schema(tmp_path / "new.duckdb")
    assert ("executions", "PRIMARY KEY", ["id", "tenant"]) in schema(old)  # the pair, ids first


# ------------------------------------------------------------------ dead-letter expiry


def letter(offset: int, age: dt.timedelta, tenant: str = "acme", clock: dt.datetime = NOW) -> Record:
    """A dead-letter record ``age`` old at ``clock``, appended to the log at ``clock``."""
    value = orjson.dumps({"kind": "dead_letter", "id": str(new_id()), "ts": (clock - age).isoformat(),
                          "tenant": tenant, "source": "test", "reason": f"aged {age}", "payload": "{}"})
    return Record(offset, value, 0, int(clock.timestamp() * 1000))


def test_dead_letters_older_than_the_max_age_expire_and_younger_ones_stay(tmp_path: Path) -> None:
    day = dt.timedelta(days=1)
    with Store(tmp_path / "db.duckdb", dead_letter_max_age_days=7) as store:
        # The log's clock is NOW - 5 days: nothing is 7 days old yet.
        early = NOW - 5 * day
        first = store.project([letter(0, 4 * day, clock=early), letter(1, 2 * day, clock=early)])
        assert first.dead_letters == 2 and first.expired == 0
        # The clock moves to NOW (records appended then): the first two are now 9 days
        # old (expired) and exactly 7 (kept: only older expires); one 10 days old
        # arrives expired already; one 6 days old stays.
        second = store.project([letter(2, 10 * day), letter(3, 6 * day), event_record(4, "acme", str(new_id()), "p",
                                                                                        int(NOW.timestamp() * 1000))])
        assert second.dead_letters == 2 and second.expired == 2
        kept = sorted(r["reason"] for r in store.dead_letters("acme"))
        assert kept == [f"aged {2 * day}", f"aged {6 * day}"]
        assert store.stats() == {"dead_letters_stored": 2, "dead_letters_expired": 2, "dead_letter_max_age_days": 7.0}
        assert store.counts()["executions"] == 1  # events never expire
    with Store(tmp_path / "db.duckdb", dead_letter_max_age_days=0) as store:  # 0: kept forever
        store.project([letter(5, 100 * day)])
        assert store.dead_letter_count() == 3 and store.stats()["dead_letters_expired"] == 0


class ClockLog(MemoryLog):
    """A MemoryLog whose records carry given append times (the injected clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[int] = []

    def read(self, offset: int, max_records: int = 1000, partition: int = 0) -> list[Record]:
        return [Record(r.offset, r.value, 0, self.times[r.offset]) for r in super().read(offset, max_records)]


def test_replay_expires_the_same_dead_letters_as_live_projection(tmp_path: Path) -> None:
    log = ClockLog()
    day = dt.timedelta(days=1)
    for i in range(60):  # one record every 6 hours over 15 days: letters of every age
        clock = NOW - 15 * day + i * 6 * dt.timedelta(hours=1)
        record = letter(i, dt.timedelta(hours=i % 7), tenant=("acme", "beta")[i % 2], clock=clock)
        log.submit([record.value])
        log.times.append(record.timestamp_ms)
    live = Store(tmp_path / "live.duckdb", dead_letter_max_age_days=3)
    for start in range(0, 60, 7):  # live: small batches
        live.project(log.read(start, 7))
    expired = live.expired_dead_letters
    live.close()
    assert 0 < expired < 60
    stats = replay(log, tmp_path / "replayed.duckdb", batch=25, dead_letter_max_age_days=3)
    assert stats.expired == expired
    assert tables_equal(tmp_path / "live.duckdb", tmp_path / "replayed.duckdb") == []


def test_the_default_max_age_is_the_configs() -> None:
    assert Settings().dead_letter_max_age_days == DEAD_LETTER_MAX_AGE_DAYS
    assert dt.timedelta(days=DEAD_LETTER_MAX_AGE_DAYS) > EXPIRY_STEP
