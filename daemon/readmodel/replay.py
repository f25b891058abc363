"""Rebuild the DuckDB read model from the log alone, and compare two databases.

``replay`` runs the very code the live projector runs (``project_safely`` over
``Store.project_batch``, fed by the log's bulk ``read_batch``), only with bigger batches,
so "replay equals live" holds by construction; ``tables_equal`` checks it.

``check_derived`` re-runs the processors over the source events of the log and compares
what they produce with the derived events the live processors appended (same ids, same
values), which is what makes the derived tables replayable too.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson

from adaptd.daemon.readmodel.migrations import PROJECTED_TABLES
from adaptd.daemon.readmodel.projector import project_safely
from adaptd.daemon.readmodel.store import DEAD_LETTER_MAX_AGE_DAYS, Store, one_row
from adaptd.streams.log.base import RecordBatch, StreamLog
from adaptd.streams.processors.runtime import rerun

#: Columns that order each table's rows when reporting differences.
_KEYS = {"projector_state": '"partition"'}
_EXAMPLES = 3


@dataclass(slots=True)
class ReplayStats:
    """What a replay did."""

    path: str
    #: Records read from the log (events, dead letters and undecodable records).
    events: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    #: Rows inserted per table.
    inserted: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    dead_letters: int = 0
    #: Dead letters deleted because they outlived ``dead_letter_max_age_days``.
    expired: int = 0
    #: Records ``Store.project`` failed on (then dead-lettered one by one).
    errors: int = 0
    #: Per partition, the first offset the log still held (retention may have cut older).
    start_offsets: dict[int, int] = field(default_factory=dict)
    #: Per partition, the position reached.
    next_offsets: dict[int, int] = field(default_factory=dict)


def replay(log: StreamLog, into: Path, *, batch: int = 100_000, overwrite: bool = False,
           dead_letter_max_age_days: float = DEAD_LETTER_MAX_AGE_DAYS) -> ReplayStats:
    """Build a fresh DuckDB file at ``into`` from every record ``log`` holds.

    The database is built beside ``into`` and renamed into place only when complete,
    so an interrupted replay never leaves a half-built file (nor destroys the old one).

    Args:
        log: the log to read (not modified; no consumer position is committed).
        into: the DuckDB file to create.
        batch: records per transaction (bigger is faster, and costs memory:
            about 1 KB per record).
        overwrite: replace ``into`` if it exists.
        dead_letter_max_age_days: as the live store's (``Store``): the same value expires the
            same dead letters, so the tables match the live ones.

    Returns:
        Counts and throughput.  An empty log gives an empty, migrated database.

    Raises:
        FileExistsError: ``into`` exists and ``overwrite`` is False.
        duckdb.Error: the database could not be written.
        streams.log.LogError: the log could not be read.
    """
    into = Path(into)
    if into.exists() and not overwrite:
        raise FileExistsError(f"{into} exists: pass overwrite=True (--overwrite) or choose another path")
    into.parent.mkdir(parents=True, exist_ok=True)
    building = into.with_name(into.name + ".replaying")
    _remove_db(building)
    stats = ReplayStats(path=str(into))
    started = time.perf_counter()
    store = Store(building, bulk=True, dead_letter_max_age_days=dead_letter_max_age_days)
    try:
        for partition in range(log.partitions):
            stats.start_offsets[partition] = log.start_offset(partition)
            for records in _prefetch(log, partition, stats.start_offsets[partition], batch):
                result, errors = project_safely(store, records)
                stats.events += len(records)
                stats.errors += errors
                stats.duplicates += result.duplicates
                stats.dead_letters += result.dead_letters
                stats.expired += result.expired
                for table, n in result.inserted.items():
                    stats.inserted[table] = stats.inserted.get(table, 0) + n
            stats.next_offsets[partition] = store.position(partition)
    except BaseException:
        store.close()
        _remove_db(building)
        raise
    store.close()  # checkpoints: the WAL is folded into the file, which is then complete
    if overwrite:
        _remove_db(into)
    wal = building.with_name(building.name + ".wal")
    if wal.exists():  # only if the final checkpoint could not run; the WAL then belongs to it
        os.replace(wal, into.with_name(into.name + ".wal"))
    os.replace(building, into)
    stats.seconds = time.perf_counter() - started
    stats.events_per_s = stats.events / stats.seconds if stats.seconds > 0 else 0.0
    return stats


def _prefetch(log: StreamLog, partition: int, offset: int, batch: int):
    """Yield RecordBatches of ``partition`` from ``offset`` to the end, reading one batch ahead.

    Decoding the log is Python work and projecting is mostly DuckDB work (which releases
    the GIL), so reading the next batch while one is projected overlaps the two.
    """
    ready: queue.Queue[RecordBatch | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def reader() -> None:
        position = offset
        try:
            while not stop.is_set():
                records = log.read_batch(position, batch, partition)
                if not len(records):
                    break
                position = records.offsets[-1] + 1
                ready.put(records)
            ready.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(exc)

    thread = threading.Thread(target=reader, name="adaptd-replay-reader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader stuck on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


@dataclass(slots=True)
class DerivedCheck:
    """Derived events re-computed from the log against those the live processors appended."""

    #: Distinct derived events (by tenant and id) in the log, from the processors re-run.
    live: int = 0
    #: Distinct derived events the re-run produced.
    rerun: int = 0
    #: Produced by the re-run but not in the log (e.g. the daemon stopped before emitting).
    missing: int = 0
    #: In the log but not produced by the re-run.
    extra: int = 0
    #: Same id, different values (or one id appended twice with different values).
    different: int = 0
    #: Up to 3 ``tenant/id`` keys per kind of difference.
    examples: list[str] = field(default_factory=list)
    #: False when retention cut the log's beginning: the re-run then starts with less.
    complete: bool = True

    @property
    def equal(self) -> bool:
        """The log holds exactly what the re-run produces."""
        return not (self.missing or self.extra or self.different)

    @property
    def consistent(self) -> bool:
        """Nothing in the log contradicts the re-run (``missing`` alone is not a
        contradiction: the log may predate the processors, or they were off)."""
        return not (self.extra or self.different)


def check_derived(log: StreamLog, processors: list, *, lateness_s: float, max_future_s: float | None,
                  batch: int = 50_000) -> DerivedCheck:
    """Re-run fresh ``processors`` over ``log`` and compare with the derived events in it.

    Derived events are recognised by their ``source``: ``adaptd.<processor name>``.

    Raises:
        streams.log.LogError: the log could not be read.
    """
    produced = rerun(log, processors, lateness_s=lateness_s, max_future_s=max_future_s, batch=batch)
    sources = {f"adaptd.{p.name}" for p in processors}
    markers = [f'"source":"{s}"'.encode() for s in sources]
    live: dict[tuple[str, str], dict] = {}
    check = DerivedCheck(complete=all(log.start_offset(p) == 0 for p in range(log.partitions)))
    twice: list[tuple[str, str]] = []
    for partition in range(log.partitions):
        offset = log.start_offset(partition)
        while records := log.read(offset, batch, partition):
            offset = records[-1].offset + 1
            for record in records:
                if not any(m in record.value for m in markers):
                    continue
                try:
                    event = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(event, dict) or event.get("source") not in sources:
                    continue
                key = (str(event.get("tenant")), str(event.get("id")))
                known = live.setdefault(key, event)
                if known != event:
                    twice.append(key)
    again = {(str(e.get("tenant")), str(e["id"])): e for e in produced}
    check.live, check.rerun = len(live), len(again)
    missing = sorted(again.keys() - live.keys())
    extra = sorted(live.keys() - again.keys())
    different = sorted({i for i in again.keys() & live.keys() if again[i] != live[i]} | set(twice))
    check.missing, check.extra, check.different = len(missing), len(extra), len(different)
    for label, ids in (("missing", missing), ("extra", extra), ("different", different)):
        check.examples += [f"{label}: {tenant}/{i}" for tenant, i in ids[:_EXAMPLES]]
    return check


def _remove_db(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def tables_equal(db_a: Path, db_b: Path) -> list[str]:
    """Compare the projected tables of two DuckDB files, row for row.

    Every table of ``PROJECTED_TABLES`` (and any other table except the wall-clock
    ``schema_migrations``, whose versions are compared instead) must exist in both with
    the same columns and exactly the same rows (as multisets, compared by value).

    Returns:
        One line per difference (with up to 3 example keys, ordered by key); ``[]``
        when the tables are identical.

    Raises:
        duckdb.Error: a file cannot be opened (missing, locked by a running daemon).
    """
    for path in (db_a, db_b):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH '{_sql_path(db_a)}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{_sql_path(db_b)}' AS b (READ_ONLY)")
        diffs: list[str] = []
        cols = {db: _columns(con, db) for db in ("a", "b")}
        versions = {db: one_row(con.execute(f"SELECT list(version ORDER BY version) FROM {db}.schema_migrations").fetchone())[0]
                    for db in ("a", "b")}
        if versions["a"] != versions["b"]:
            diffs.append(f"schema_migrations: versions {versions['a']} != {versions['b']}")
        tables = sorted((set(cols["a"]) | set(cols["b"]) | set(PROJECTED_TABLES)) - {"schema_migrations"})
        for table in tables:
            if table not in cols["a"] or table not in cols["b"]:
                diffs.append(f"{table}: missing in {'a' if table not in cols['a'] else 'b'}")
            elif cols["a"][table] != cols["b"][table]:
                diffs.append(f"{table}: columns differ: {cols['a'][table]} != {cols['b'][table]}")
            else:
                diffs += _compare_rows(con, table)
        return diffs
    finally:
        con.close()


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _columns(con: duckdb.DuckDBPyConnection, db: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns()"
        " WHERE database_name = ? AND schema_name = 'main' ORDER BY table_name, column_index", [db]
    ).fetchall():
        out.setdefault(table, []).append((column, dtype))
    return out


def _compare_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    key = _KEYS.get(table, "id")
    diffs = []
    for this, other in (("a", "b"), ("b", "a")):
        only = f"(SELECT * FROM {this}.{table} EXCEPT ALL SELECT * FROM {other}.{table})"
        count = one_row(con.execute(f"SELECT count(*) FROM {only}").fetchone())[0]
        if count:
            keys = con.execute(f"SELECT {key} FROM {only} ORDER BY {key} LIMIT {_EXAMPLES}").fetchall()
            diffs.append(f"{table}: {count} row(s) only in {this} (first {key}: {', '.join(str(k[0]) for k in keys)})")
    return diffs
