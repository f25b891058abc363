"""The DuckDB read model: projection of log records into tables, and the API's queries.

The projector writes every batch's rows *and* its next log offset in one transaction
(pyeventsourcing's ``ProcessRecorder`` idea), so a crash between the log and the database
replays at most an uncommitted batch, and re-delivered records are no-ops: rows are keyed
by ``(tenant, id)`` (first offset wins; two tenants' equal ids are two events) and records
below the stored position are skipped.

Dead letters expire: a row whose ``ts`` is older than ``dead_letter_max_age_days`` before the
*log's clock* (the newest append time of the records projected so far) is deleted in the
transaction of the batch that moves the clock past it.  The log's clock, not the wall
clock, so that a replay of the same log deletes the same rows ("replay equals live"),
and a test injects time by the records' ``timestamp_ms``.

How a batch becomes rows (one vectorized JSON parse in DuckDB, see
``adaptd.daemon.readmodel.projector.stage_batch``) does not depend on the batch boundaries, so a replay with
other batch sizes builds the same tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson

from adaptd.daemon.readmodel.migrations import DEAD_LETTER_KIND as _DEAD
from adaptd.daemon.readmodel.migrations import EVENT_TABLES, migrate
from adaptd.daemon.readmodel.projector import (
    UNSTORED_KINDS,
    ProjectionPlan,
    ProjectResult,
    dead_letter_rows,
    prepare_writer,
    stage_batch,
    unstage,
)
from adaptd.streams.log.base import Record, RecordBatch

MAX_LIMIT = 1000
#: Batches projected carefully (ON CONFLICT) after one held an already stored id.
_CAREFUL_BATCHES = 8
_QUERY_TABLES = frozenset((*EVENT_TABLES.values(), "dead_letters"))
#: Default of ``dead_letter_max_age_days`` (mirrors ``Settings.dead_letter_max_age_days``).
DEAD_LETTER_MAX_AGE_DAYS = 7.0
#: The expiry cutoff moves in steps of this much log time.  The sweep (one DELETE in the
#: batch's transaction) runs only when the oldest stored dead letter is older than the
#: cutoff: for letters of ordinary age at most once per step, however many batches
#: arrive; never more than once per batch.
EXPIRY_STEP = dt.timedelta(hours=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Store:
    """The read model in one DuckDB file: the projector writes, API handlers read.

    Thread-safe: writes are serialized by a lock on one writer cursor; every read runs
    on its own cursor, so reads proceed while a batch is being projected (DuckDB's MVCC
    shows them the last committed state).
    """

    def __init__(self, path: Path, *, bulk: bool = False,
                 dead_letter_max_age_days: float = DEAD_LETTER_MAX_AGE_DAYS,
                 memory_limit_mb: int | None = None) -> None:
        """Open (creating it if needed) the database at ``path`` and migrate it.

        A file of an older schema is upgraded in place, keeping its rows.

        Args:
            path: the DuckDB file; its directory must exist.
            bulk: for a replay build: let the write-ahead log grow large before it is
                checkpointed (fewer, bigger checkpoints; faster when loading millions).
            dead_letter_max_age_days: dead letters older than this many days (by ``ts``,
                against the log's clock, see the module docstring) are deleted; 0 keeps
                them all.  A replay must use the live store's value to build the same table.
            memory_limit_mb: DuckDB's memory limit for this database (its buffer pool
                and operators; beyond it DuckDB spills to disk or refuses the query);
                None keeps DuckDB's default of 80 % of the machine's RAM.

        Raises:
            ValueError: ``dead_letter_max_age_days`` is negative or ``memory_limit_mb`` < 64.
            duckdb.IOException: the file is locked by another process or unreadable.
            daemon.migrations.MigrationError: the file was written by a newer adaptd.
        """
        if dead_letter_max_age_days < 0:
            raise ValueError(f"dead_letter_max_age_days must be >= 0 (0 keeps them all), got {dead_letter_max_age_days}")
        if memory_limit_mb is not None and memory_limit_mb < 64:
            raise ValueError(f"memory_limit_mb must be at least 64 (None: DuckDB's default), got {memory_limit_mb}")
        self.path = Path(path)
        self._con = duckdb.connect(str(self.path))
        try:
            self._con.execute("SET TimeZone = 'UTC'")
            if memory_limit_mb is not None:
                self._con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
            if bulk:
                self._con.execute("SET wal_autocheckpoint = '1GB'")
            migrate(self._con)
            self._plan = ProjectionPlan(self._con)
            self._positions = dict(
                self._con.execute('SELECT "partition", next_offset FROM projector_state').fetchall()
            )
            # Largest id per table: staged ids above it need no conflict check.
            tables = sorted(_QUERY_TABLES)
            row = one_row(self._con.execute("SELECT " + ", ".join(f"(SELECT max(id) FROM {t})" for t in tables)).fetchone())
            self._max_id: dict[str, uuid.UUID | None] = dict(zip(tables, row))
            # A lower bound of the stored dead letters' ts: no sweep is due while it is
            # not older than the cutoff.
            self._oldest_letter: dt.datetime | None = one_row(self._con.execute(
                "SELECT min(ts) FROM dead_letters").fetchone())[0]
            # Consume the connection's last result: a pending one keeps its read transaction
            # open, and DuckDB then skips every automatic checkpoint, so the WAL (and the
            # memory holding its uncheckpointed rows) would grow with everything projected.
            self._con.execute("SELECT 1").fetchall()
        except BaseException:
            self._con.close()
            raise
        self._writer = self._con.cursor()
        prepare_writer(self._writer)
        self._max_age = dt.timedelta(days=dead_letter_max_age_days) if dead_letter_max_age_days else None
        #: The log's clock: the newest append time projected since open (None: none yet).
        self._clock: dt.datetime | None = None
        #: Dead letters deleted by expiry since the store was opened.
        self.expired_dead_letters = 0
        self._careful_batches = 0
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ projection

    def position(self, partition: int = 0) -> int:
        """The next log offset to project in ``partition`` (0 for a new database)."""
        return self._positions.get(partition, 0)

    def project(self, records: Sequence[Record]) -> ProjectResult:
        """Project ``records`` (one partition) and store the new position, atomically.

        Each record's value is the UTF-8 JSON of one event (or of a dead letter, kind
        ``dead_letter``).  Events go to their kind's table; a ``(tenant, id)`` already
        stored (or seen earlier in the batch) is skipped; records below ``position()``
        are skipped entirely.  A record that is not UTF-8 JSON, has an unknown kind or
        lacks a required field is stored in ``dead_letters`` with the reason, and the rest
        of the batch is projected.  Dead letters that are due expire in the same
        transaction.  The position becomes the last offset + 1.

        Returns:
            What was done; an empty ``records`` does nothing.

        Raises:
            ValueError: the records come from more than one partition.
            RuntimeError: the store is closed.
            duckdb.Error: the database failed (nothing of the batch is stored then).
        """
        result = ProjectResult(records=len(records))
        if not records:
            return result
        partition = records[0].partition
        if any(r.partition != partition for r in records):
            raise ValueError("project() takes records of one partition at a time")
        with self._lock:
            self._check_open()
            position = self._positions.get(partition, 0)
            if min(r.offset for r in records) < position:
                records = [r for r in records if r.offset >= position]
                result.skipped = result.records - len(records)
            return self._project_locked(RecordBatch.from_records(list(records), partition), result)

    def project_batch(self, batch: RecordBatch) -> ProjectResult:
        """:meth:`project` for a batch as the log's ``read_batch`` returns it (offsets
        ascending): the same rows and position, without a Python object per record.

        Returns:
            What was done; an empty batch does nothing.

        Raises:
            ValueError: the offsets do not ascend.
            RuntimeError: the store is closed.
            duckdb.Error: the database failed (nothing of the batch is stored then).
        """
        result = ProjectResult(records=len(batch))
        if not len(batch):
            return result
        offsets = np.frombuffer(batch.offsets, np.int64)
        if len(offsets) > 1 and not bool(np.all(offsets[1:] > offsets[:-1])):
            raise ValueError("project_batch() takes a batch with ascending offsets")
        with self._lock:
            self._check_open()
            position = self._positions.get(batch.partition, 0)
            if batch.offsets[0] < position:
                batch = batch.since(position)
                result.skipped = result.records - len(batch)
            return self._project_locked(batch, result)

    def _project_locked(self, batch: RecordBatch, result: ProjectResult) -> ProjectResult:
        """Project ``batch`` (records below the position already removed) under the lock."""
        position = self._positions.get(batch.partition, 0)
        if not len(batch):
            result.next_offset = position
            return result
        next_offset = max(max(batch.offsets) + 1, position)
        self._write(batch, next_offset, result)
        self._positions[batch.partition] = next_offset
        result.next_offset = next_offset
        return result

    def _write(self, batch: RecordBatch, next_offset: int, result: ProjectResult) -> None:
        cur = self._writer
        try:
            self._stage_and_insert(cur, batch, next_offset, result)
        finally:
            unstage(cur)

    def _stage_and_insert(self, cur: duckdb.DuckDBPyConnection, batch: RecordBatch, next_offset: int,
                          result: ProjectResult) -> None:
        partition = batch.partition
        kinds, letters = stage_batch(cur, self._plan, batch)
        result.unstored = sum(n for kind, n, *_ in kinds if kind in UNSTORED_KINDS)
        kinds = [k for k in kinds if k[0] not in UNSTORED_KINDS]
        tops = {("dead_letters" if kind == _DEAD else EVENT_TABLES[kind]): high for kind, _, _, _, high, _ in kinds}
        if letters:
            top = max(row[0] for row in letters)
            tops["dead_letters"] = max(tops.get("dead_letters") or top, top)
        # Optimistic first: a plain INSERT checks the new ids against the primary key
        # index, while ON CONFLICT scans every stored id (DuckDB plans it as a MERGE with a
        # hash join), which grows with the table.  A re-sent event (rare: SDK retries)
        # makes the plain INSERT fail; the batch is then redone carefully, and the next
        # few batches start carefully.  Either way the same rows end up stored.
        careful = self._careful_batches > 0
        self._careful_batches = max(0, self._careful_batches - 1)
        clock = self._clock_after(batch.timestamps)
        while True:
            try:
                self._transaction(cur, partition, kinds, letters, next_offset, careful, result, clock)
                break
            except duckdb.ConstraintException:
                if careful:
                    raise
                careful, self._careful_batches = True, _CAREFUL_BATCHES
        self._raise_max(tops)

    def _clock_after(self, timestamps: Sequence[int]) -> dt.datetime | None:
        """The log's clock once records with these append ``timestamps`` are projected
        (records without a time: 0)."""
        newest = _EPOCH + dt.timedelta(milliseconds=max(timestamps))
        return newest if self._clock is None else max(self._clock, newest)

    def _cutoff(self, clock: dt.datetime | None) -> dt.datetime | None:
        """Dead letters with ``ts`` before this are expired at ``clock`` (None: none are)."""
        if self._max_age is None or clock is None:
            return None
        bound = clock - self._max_age
        return bound - dt.timedelta(seconds=(bound - _EPOCH).total_seconds() % EXPIRY_STEP.total_seconds())

    def _raise_max(self, tops: dict[str, uuid.UUID]) -> None:
        for table, top in tops.items():
            known = self._max_id.get(table)
            self._max_id[table] = top if known is None else max(known, top)

    def _transaction(self, cur: duckdb.DuckDBPyConnection, partition: int, kinds: list[tuple],
                     letters: list[tuple], next_offset: int, careful: bool, result: ProjectResult,
                     clock: dt.datetime | None) -> None:
        """Insert the staged rows and ``letters``, expire the dead letters that are due at
        ``clock`` and store the position, in one transaction."""
        inserted: dict[str, int] = {}
        duplicates = dead = expired = 0
        oldest = self._oldest_letter
        for kind, *_, staged_oldest in kinds:
            if kind == _DEAD and staged_oldest is not None:
                oldest = staged_oldest if oldest is None else min(oldest, staged_oldest)
        for row in letters:
            oldest = row[1] if oldest is None else min(oldest, row[1])
        cutoff = self._cutoff(clock)
        cur.execute("BEGIN TRANSACTION")
        try:
            for kind, count, repeats, low, high, _ in kinds:
                table = "dead_letters" if kind == _DEAD else EVENT_TABLES[kind]
                added = self._insert(cur, kind, table, repeats, low, high, careful)
                if added:
                    inserted[table] = added
                if kind == _DEAD:
                    dead += added
                else:
                    duplicates += count - added
            if letters:
                before = one_row(cur.execute("SELECT count(*) FROM dead_letters").fetchone())[0]
                cur.executemany("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?)", letters)
                added = one_row(cur.execute("SELECT count(*) FROM dead_letters").fetchone())[0] - before
                dead += added
                if added:
                    inserted["dead_letters"] = inserted.get("dead_letters", 0) + added
            if cutoff is not None and oldest is not None and oldest < cutoff:
                expired = one_row(cur.execute("DELETE FROM dead_letters WHERE ts < ?", [cutoff]).fetchone())[0]
                oldest = one_row(cur.execute("SELECT min(ts) FROM dead_letters").fetchone())[0]
            self._save_position(cur, partition, next_offset)
            cur.execute("COMMIT")
        except BaseException:
            _rollback(cur)
            raise
        self._clock, self._oldest_letter = clock, oldest
        self.expired_dead_letters += expired
        result.inserted, result.duplicates, result.dead_letters = inserted, duplicates, dead
        result.expired = expired

    def _insert(self, cur: duckdb.DuckDBPyConnection, kind: str, table: str, repeats: bool,
                low: uuid.UUID, high: uuid.UUID, careful: bool) -> int:
        """Insert ``kind``'s staged rows (ids ``low``..``high``) into ``table``; return rows added.

        Args:
            repeats: some id occurs twice in the batch: keep each (tenant, id)'s first offset.
            careful: skip (tenant, id)s already stored (else one raises ConstraintException).

        The id range test stays sound with the (tenant, id) key: an id above every stored
        id (of any tenant) cannot collide with any stored (tenant, id).
        """
        sql = self._plan.inserts[kind]
        if not repeats:  # the QUALIFY is a hash aggregate over every column: skip it if useless
            sql = sql.split(" QUALIFY ")[0]
        known = self._max_id.get(table)
        if not careful or known is None or low > known:  # ids above every stored id cannot conflict
            return one_row(cur.execute(sql.replace("@VERB", "").replace("@COND", "")).fetchone())[0]
        if high <= known:
            return one_row(cur.execute(sql.replace("@VERB", "OR IGNORE").replace("@COND", "")).fetchone())[0]
        # UUIDv7 ids arrive mostly ascending: only those below the maximum pay for ON CONFLICT.
        added = one_row(cur.execute(sql.replace("@VERB", "").replace("@COND", "AND id > ?"), [known]).fetchone())[0]
        return added + one_row(cur.execute(sql.replace("@VERB", "OR IGNORE").replace("@COND", "AND id <= ?"),
                                           [known]).fetchone())[0]

    def dead_letter(self, record: Record, reason: str) -> ProjectResult:
        """Store ``record`` as a dead letter with ``reason`` and move past it, atomically.

        For a record ``project`` fails on (the projector's last resort); the row is made
        like those of undecodable records, so a replay that fails the same way matches.
        A record below ``position()`` is skipped.

        Raises:
            RuntimeError: the store is closed.
            duckdb.Error: the database failed (nothing is stored then).
        """
        result = ProjectResult(records=1)
        with self._lock:
            self._check_open()
            position = self._positions.get(record.partition, 0)
            if record.offset < position:
                result.skipped, result.next_offset = 1, position
                return result
            bad = [(record.offset, reason, None, None, None)]
            letters = dead_letter_rows(RecordBatch.from_records([record]), bad)
            self._transaction(self._writer, record.partition, [], letters, record.offset + 1, True, result,
                              self._clock_after([record.timestamp_ms]))
            self._raise_max({"dead_letters": letters[0][0]})
            self._positions[record.partition] = result.next_offset = record.offset + 1
            return result

    def _save_position(self, cur: duckdb.DuckDBPyConnection, partition: int, next_offset: int) -> None:
        # UPDATE costs a quarter of an upsert; the row exists after the partition's first batch.
        if partition in self._positions:
            cur.execute('UPDATE projector_state SET next_offset = ? WHERE "partition" = ?', [next_offset, partition])
        else:
            cur.execute("INSERT INTO projector_state VALUES (?, ?)", [partition, next_offset])

    # ------------------------------------------------------------------ queries

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        self._check_open()
        return self._con.cursor()

    def _rows(self, table: str, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            cur.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [_plain(names, row, self._plan.json_columns.get(table, ())) for row in cur.fetchall()]

    def executions(
        self,
        tenant: str,
        program: str | None = None,
        module: str | None = None,
        route: str | None = None,
        status: str | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        trace_id: str | None = None,
        root_id: uuid.UUID | str | None = None,
        session_id: str | None = None,
        parent_id: uuid.UUID | str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``tenant``'s executions, newest first (by ts, then id).

        Args:
            tenant: only this tenant's rows.
            program, module, route, status, trace_id: exact-match filters (None: any).
            root_id, parent_id: exact match on the column (the DSPy callback sets
                ``root_id`` on every node of a tree; OTLP only on root spans, so use
                ``trace_id`` for those).
            session_id: exact match on ``attrs.session_id`` (set by the DSPy callback).
            since: inclusive lower bound on ts; until: exclusive upper bound (naive = UTC).
            limit: page size, clamped to 1..1000.
            cursor: the ``next_cursor`` of the previous page (opaque).

        Returns:
            ``(rows, next_cursor)``; ``next_cursor`` is None on the last page.  Rows are
            JSON-friendly dicts (ISO timestamps, UUIDs as str, JSON columns parsed).

        Raises:
            ValueError: ``cursor`` is not one this method made, a bound is not a time,
                or ``root_id`` / ``parent_id`` is not a UUID.
        """
        where: list[str] = []
        params: list[Any] = []
        _equal(where, params, (("program", program), ("module", module), ("route", route), ("status", status),
                               ("trace_id", trace_id), ("root_id", as_uuid(root_id, "root_id")),
                               ("parent_id", as_uuid(parent_id, "parent_id")),
                               ("json_extract_string(attrs, '$.session_id')", session_id)))
        return self.page("executions", tenant, where, params, since=since, until=until, limit=limit, cursor=cursor)

    def page(
        self,
        table: str,
        tenant: str,
        where: Sequence[str],
        params: Sequence[Any],
        *,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``tenant``'s rows of ``table`` (an event table) matching the SQL
        conditions ``where`` (with ``params`` for their ``?``), newest first (by ts, then id).

        ``since`` / ``until`` bound ``ts`` (inclusive / exclusive, naive = UTC); ``limit``
        is clamped to 1..1000; ``cursor`` is the ``next_cursor`` of the previous page.

        Returns:
            ``(rows, next_cursor)``, ``next_cursor`` None on the last page; rows are
            JSON-friendly dicts of every column.

        Raises:
            ValueError: ``table`` is not an event table, ``cursor`` is not one this
                method made, or a bound is not a time.
        """
        if table not in _QUERY_TABLES:
            raise ValueError(f"unknown table {table!r}: one of {', '.join(sorted(_QUERY_TABLES))}")
        limit = max(1, min(int(limit), MAX_LIMIT))
        conditions, values = ["tenant = ?", *where], [tenant, *params]
        if since is not None:
            conditions.append("ts >= ?")
            values.append(_as_time(since, "since"))
        if until is not None:
            conditions.append("ts < ?")
            values.append(_as_time(until, "until"))
        if cursor:
            ts, key = _decode_cursor(cursor)
            conditions.append("(ts < ? OR (ts = ? AND id < ?))")
            values += [ts, ts, key]
        rows = self._rows(
            table,
            f"SELECT * FROM {table} WHERE {' AND '.join(conditions)}"
            f" ORDER BY ts DESC, id DESC LIMIT {limit + 1}",
            values,
        )
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, _encode_cursor(rows[-1]["ts"], rows[-1]["id"])

    def program_summary(self, tenant: str, *, limit: int = 1000, after: str | None = None) -> list[dict[str, Any]]:
        """Per program of ``tenant``, over its top-level executions (``parent_id`` null).

        Args:
            limit: most programs returned, clamped to 1..1000 (a tenant with a flood of
                names pages through them instead of getting one huge answer).
            after: only programs whose name sorts after this (the last one of the
                previous page); None: from the first.

        Returns:
            One dict per program, by name: ``program, executions, errors, error_rate,
            p50_duration_ms, p95_duration_ms, tokens, cost_usd, first_ts, last_ts``
            ([] when the tenant has no executions, or none after ``after``).
            Module-level executions (children) are not counted, so a run is counted once.
        """
        limit = max(1, min(int(limit), 1000))
        return self._rows("executions", """
            SELECT program, count(*) AS executions, count(*) FILTER (WHERE status = 'error') AS errors,
                   count(*) FILTER (WHERE status = 'error') / count(*) AS error_rate,
                   quantile_cont(duration_ms, 0.5) AS p50_duration_ms,
                   quantile_cont(duration_ms, 0.95) AS p95_duration_ms,
                   coalesce(sum(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)), 0) AS tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd, min(ts) AS first_ts, max(ts) AS last_ts
            FROM executions WHERE tenant = ? AND parent_id IS NULL AND (? IS NULL OR program > ?)
            GROUP BY program ORDER BY program LIMIT ?
        """, [tenant, after, after, limit])

    def windows(
        self,
        tenant: str,
        window_size: str,
        program: str | None = None,
        module: str | None = None,
        route: str | None = None,
        model: str | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        limit: int = 100,
        sketch: bool = False,
    ) -> list[dict[str, Any]]:
        """``tenant``'s closed performance windows of ``window_size``, newest first.

        Args:
            program, module, route, model: exact-match filters (None: any).
            since: inclusive lower bound on ``window_start``; until: exclusive upper bound
                (naive = UTC).
            limit: clamped to 1..1000.
            sketch: include the latency sketch of each window.

        Returns:
            JSON-friendly rows ordered by ``window_start`` descending, then key; [] when none.

        Raises:
            ValueError: a bound is not an ISO 8601 time.
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        where: list[str]
        params: list[Any]
        where, params = ["tenant = ?", "window_size = ?"], [tenant, window_size]
        _equal(where, params, (("program", program), ("module", module), ("route", route), ("model", model)))
        if since is not None:
            where.append("window_start >= ?")
            params.append(_as_time(since, "since"))
        if until is not None:
            where.append("window_start < ?")
            params.append(_as_time(until, "until"))
        drop = ["v", "kind", "source", "attrs", "log_offset", *([] if sketch else ["sketch"])]
        return self._rows(
            "perf_windows",
            f"SELECT * EXCLUDE ({', '.join(drop)}) FROM perf_windows WHERE {' AND '.join(where)}"
            " ORDER BY window_start DESC, program, module NULLS FIRST, route NULLS FIRST, model NULLS FIRST"
            f" LIMIT {limit}",
            params,
        )

    def signals(
        self,
        tenant: str,
        program: str | None = None,
        signal_type: str | None = None,
        state: str | None = None,
        since: dt.datetime | str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """``tenant``'s signals (anomaly, drift, breaker), newest event time first.

        Args:
            program, signal_type, state: exact-match filters (None: any).
            since: inclusive lower bound on ``ts`` (naive = UTC).
            limit: clamped to 1..1000.

        Returns:
            JSON-friendly rows; [] when none.

        Raises:
            ValueError: ``since`` is not an ISO 8601 time.
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        where: list[str]
        params: list[Any]
        where, params = ["tenant = ?"], [tenant]
        _equal(where, params, (("program", program), ("signal_type", signal_type), ("state", state)))
        if since is not None:
            where.append("ts >= ?")
            params.append(_as_time(since, "since"))
        return self._rows("signals", f"SELECT * EXCLUDE (v, kind) FROM signals WHERE {' AND '.join(where)}"
                          f" ORDER BY ts DESC, id LIMIT {limit}", params)

    def routing_table(self, tenant: str, program: str) -> dict[str, Any] | None:
        """The newest routing table the policy published for ``program``, or None."""
        rows = self._rows("adaptations", "SELECT details FROM adaptations WHERE tenant = ? AND program = ?"
                          " AND action = 'routing_table' AND source = 'adaptd.policy' ORDER BY version DESC, log_offset DESC LIMIT 1",
                          [tenant, program])
        return rows[0]["details"] if rows else None

    def breakers(self, tenant: str, program: str) -> list[dict[str, Any]]:
        """Per route of ``program``, its latest breaker transition (none: never tripped)."""
        return self._rows(
            "adaptations",
            "SELECT route, action, ts, reason, details FROM adaptations WHERE tenant = ? AND program = ?"
            " AND action IN ('breaker_open', 'breaker_half_open', 'breaker_close') AND source = 'adaptd.policy'"
            " QUALIFY row_number() OVER (PARTITION BY route ORDER BY log_offset DESC) = 1 ORDER BY route",
            [tenant, program],
        )

    def query(self, table: str, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read-only ``sql`` on its own cursor, JSON-friendly (``table``'s JSON
        columns parsed): for query modules kept beside their feature (``adaptd.daemon.optimize``)."""
        return self._rows(table, sql, params)

    def dead_letters(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        """``tenant``'s newest dead letters (at most ``limit``, clamped to 1..1000).

        Records the projector could not decode carry the tenant their JSON named, else
        ``""`` (no tenant can be trusted from unreadable bytes).
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        return self._rows("dead_letters", "SELECT * FROM dead_letters WHERE tenant = ?"
                          f" ORDER BY log_offset DESC LIMIT {limit}", [tenant])

    def counts(self) -> dict[str, int]:
        """Rows per projected table (event tables and ``dead_letters``), all tenants."""
        tables = sorted(_QUERY_TABLES)
        with self._cursor() as cur:
            row = one_row(cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)).fetchone())
        return dict(zip(tables, row))

    def dead_letter_count(self) -> int:
        """Rows in ``dead_letters``, all tenants."""
        with self._cursor() as cur:
            return one_row(cur.execute("SELECT count(*) FROM dead_letters").fetchone())[0]

    def stats(self) -> dict[str, Any]:
        """The store's own figures for ``/v1/stats``: dead letters stored (all tenants),
        deleted by expiry since open, and the maximum age in days (0: kept forever)."""
        return {
            "dead_letters_stored": self.dead_letter_count(),
            "dead_letters_expired": self.expired_dead_letters,
            "dead_letter_max_age_days": 0.0 if self._max_age is None else self._max_age / dt.timedelta(days=1),
        }

    def get(self, table: str, id: uuid.UUID | str, tenant: str | None = None) -> dict[str, Any] | None:
        """``tenant``'s row of ``table`` with ``id``, or None (also when only another
        tenant has that id: another tenant's row is never returned).

        Without ``tenant`` (tests, tools over one tenant's data) the row of any tenant is
        returned, the first projected when two tenants share the id: an API handler
        must pass the caller's tenant.

        Raises:
            ValueError: ``table`` is not an event table or ``dead_letters``, or ``id`` is
                not a UUID.
        """
        if table not in _QUERY_TABLES:
            raise ValueError(f"unknown table {table!r}: one of {', '.join(sorted(_QUERY_TABLES))}")
        key = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))
        if tenant is None:
            rows = self._rows(table, f"SELECT * FROM {table} WHERE id = ? ORDER BY log_offset LIMIT 1", [key])
        else:
            rows = self._rows(table, f"SELECT * FROM {table} WHERE tenant = ? AND id = ?", [tenant, key])
        return rows[0] if rows else None

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the database, for a query module that needs more than rows (a
        ``COPY (SELECT ...) TO`` file); the caller closes it.  For reads only: rows are
        written by the projector, and deleted by :meth:`delete_older`.

        Raises:
            RuntimeError: the store is closed.
        """
        return self._cursor()

    def delete_older(self, table: str, cutoff: dt.datetime, *, batch: int = 50_000) -> int:
        """Delete at most ``batch`` rows of ``table`` whose ``ts`` is before ``cutoff``
        (retention), in one short transaction under the projector's lock: a projection
        waits for at most one such batch, and ingest (the log) never waits.

        The projected position is unchanged: a replay of the log brings the rows back
        until retention runs on the replayed database too.

        Returns:
            Rows deleted; fewer than ``batch`` means none older are left.

        Raises:
            ValueError: ``table`` is not an event table or ``dead_letters``, or ``batch`` < 1.
            RuntimeError: the store is closed.
        """
        if table not in _QUERY_TABLES:
            raise ValueError(f"unknown table {table!r}: one of {', '.join(sorted(_QUERY_TABLES))}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        with self._lock:
            with self._cursor() as cur:
                return int(one_row(cur.execute(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE ts < ? LIMIT {int(batch)})",
                    [cutoff]).fetchone())[0])

    def close(self) -> None:
        """Checkpoint and close; waits for a batch being projected.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._con.execute("CHECKPOINT")
            finally:
                self._writer.close()
                self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def one_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate without GROUP
    BY, a DELETE's count).

    Raises:
        RuntimeError: DuckDB returned no row, which such a query never does.
    """
    if row is None:
        raise RuntimeError("a single-row query returned no row")
    return row


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed statement may already have ended the transaction


def _equal(where: list[str], params: list[Any], pairs: Sequence[tuple[str, Any]]) -> None:
    """Add ``column = ?`` to ``where`` (and the value to ``params``) for each given value."""
    for name, value in pairs:
        if value is not None:
            where.append(f"{name} = ?")
            params.append(value)


def _plain(names: list[str], row: tuple, json_columns: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, row):
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif name in json_columns and value is not None:
            value = orjson.loads(value)
        out[name] = value
    return out


def as_uuid(value: uuid.UUID | str | None, name: str) -> uuid.UUID | None:
    """``value`` as a UUID (None stays None).

    Raises:
        ValueError: ``value`` is not a UUID, naming the parameter ``name``.
    """
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{name} is not a UUID: {value!r}") from None


def _as_time(value: dt.datetime | str, name: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{name} is not an ISO 8601 time: {value!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _encode_cursor(ts: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}|{key}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        ts, key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        return dt.datetime.fromisoformat(ts), uuid.UUID(key)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor: pass the next_cursor of the previous page") from None
