"""Projection: how log records become rows, and the thread that keeps the store caught up.

``ProjectionPlan`` derives the SQL from the migrated tables; ``stage_batch`` parses a batch
(a ``RecordBatch``: the log's buffers, handed to DuckDB as Arrow without a per-record
object) with it in one vectorized JSON parse; ``Store.project_batch`` then inserts the
staged rows and the new position in one transaction.

The ``Projector`` thread loops: read a batch from the store's position, project it, then
commit the position to the log as consumer group ``projector``, so log retention never
deletes a segment that is not projected yet.  Output first, position second: a crash in
between only re-delivers records the store skips.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel

from adaptd.daemon.readmodel.migrations import DEAD_LETTER_KIND, EVENT_TABLES
from adaptd.streams.events import DEFAULTS, KINDS, TICK_KIND, DeadLetter
from adaptd.streams.log.base import LogError, Record, RecordBatch, StreamLog

if TYPE_CHECKING:  # store imports this module; at run time only its instances are needed
    from adaptd.daemon.readmodel.store import Store

logger = logging.getLogger("adaptd.projector")

#: Namespace of the ids of dead letters the projector makes (uuid5 of partition:offset).
DEAD_LETTER_NS = uuid.UUID("6f1d7a52-5b0e-4c1e-9a43-0d7c1f6b2e11")
#: Longest payload kept for a record the projector could not decode.
MAX_PAYLOAD_CHARS = 16_384
_ARROW_CHUNK = 2048
#: Rows per record batch of the staged Arrow table (DuckDB scans one batch per thread).
_STAGE_ROWS = 16_384

#: Failures of the database itself, not of one record: the batch is retried later and
#: nothing is dead-lettered for them (RuntimeError: the store was closed).
_TRANSIENT = (duckdb.OperationalError, duckdb.InterruptException, duckdb.FatalException, duckdb.InternalError,
              RuntimeError)


@dataclass(slots=True)
class ProjectResult:
    """What one ``Store.project`` call did."""

    #: Records given.
    records: int = 0
    #: Records below the stored position, ignored (already projected).
    skipped: int = 0
    #: Rows inserted per table (only tables that got rows).
    inserted: dict[str, int] = field(default_factory=dict)
    #: Valid events whose id was already stored (earlier or in this batch).
    duplicates: int = 0
    #: Dead-letter rows inserted (dead-letter records plus undecodable records).
    dead_letters: int = 0
    #: Valid records that have no table (``UNSTORED_KINDS``: the clock's ticks).
    unstored: int = 0
    #: Dead-letter rows deleted because they outlived the store's maximum age.
    expired: int = 0
    #: The partition's position after the call (None when nothing was given).
    next_offset: int | None = None


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "'" + orjson.dumps(value).decode().replace("'", "''") + "'"  # dict / list: JSON


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ProjectionPlan:
    """The projection SQL, derived from the migrated tables (the DDL is the source of truth).

    Attributes:
        structure: the ``json_transform`` structure: the union of every table's columns.
        stage / stage_safe: select the staged rows from the ``_in`` Arrow table (columns
            ``_off``, ``_v``): every column of ``structure`` and a ``_problem`` reason per
            undecodable record; ``stage_safe`` also survives malformed JSON.
        inserts: per kind, the INSERT from ``_stage`` with ``@VERB`` / ``@COND`` holes.
        json_columns: per table, the JSON-typed columns (parsed back for the API).

    Raises:
        RuntimeError: two tables give one column name different types.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in rows:
            columns.setdefault(table, []).append((column, dtype))
        self.json_columns = {t: {c for c, d in cols if d == "JSON"} for t, cols in columns.items()}
        # One JSON parse per record: the union of every kind's fields.  A name with two
        # types would make this ambiguous, so a migration that did that fails loudly here.
        structure: dict[str, str] = {"kind": "VARCHAR"}
        targets = {**EVENT_TABLES, DEAD_LETTER_KIND: "dead_letters"}
        for table in targets.values():
            for column, dtype in columns[table]:
                if column == "log_offset":
                    continue
                if structure.setdefault(column, dtype) != dtype:
                    raise RuntimeError(f"column {column} has two types ({structure[column]}, {dtype}): rename one")
        self.structure = orjson.dumps(structure).decode()
        models: dict[str, type[BaseModel]] = {**KINDS, DEAD_LETTER_KIND: DeadLetter}
        problems = ["WHEN _bad THEN 'malformed JSON'",
                    """WHEN kind IS NULL THEN 'not a JSON object with a string "kind"'""",
                    f"WHEN kind NOT IN ({', '.join(map(_sql_literal, [*targets, *UNSTORED_KINDS]))})"
                    " THEN 'unknown kind ' || kind"]
        for name in ("id", "ts"):
            problems.append(f"""WHEN {name} IS NULL THEN 'missing or invalid "{name}"'""")
        self.inserts: dict[str, str] = {}
        for kind, table in targets.items():
            model = models[kind]
            defaults = {**DEFAULTS.get(kind, {}), "source": ""}
            select, names, exprs = [], [], {}
            for column, _ in columns[table]:
                if column == "log_offset":
                    continue
                info = model.model_fields.get(column)
                if info is not None and info.is_required() and column not in ("id", "ts"):
                    problems.append(
                        f"""WHEN kind = '{kind}' AND {_q(column)} IS NULL THEN 'missing or invalid "{column}"'"""
                    )
                default = defaults.get(column)
                expr = _q(column) if default is None else f"coalesce({_q(column)}, {_sql_literal(default)})"
                select.append(expr)
                names.append(_q(column))
                exprs[column] = expr
            # First offset wins per (tenant, id) inside a batch (QUALIFY; the tenant as it
            # is stored, default included); Store._insert fills in @VERB (plain, or OR
            # IGNORE to keep earlier batches' rows) and @COND (an id range).
            self.inserts[kind] = (
                f"INSERT @VERB INTO {table} ({', '.join(names)}, log_offset)"
                f" SELECT {', '.join(select)}, _off FROM _stage WHERE kind = '{kind}' AND _problem IS NULL"
                f" @COND QUALIFY row_number() OVER (PARTITION BY {exprs['tenant']}, id ORDER BY _off) = 1"
            )
        # json_transform is lenient (a value of the wrong type becomes NULL) but raises on
        # malformed JSON; try() turns that into NULL at ~20% of the parse cost, so it is
        # only used when a batch actually holds malformed JSON.
        stage = (
            "SELECT *, CASE "
            + " ".join(problems)
            + " END AS _problem FROM (SELECT _off, j IS NULL AS _bad, unnest(j) FROM"
            f" (SELECT _off, @TRY(json_transform(_v, '{self.structure}')) AS j FROM _in))"
        )
        self.stage, self.stage_safe = stage.replace("@TRY", ""), stage.replace("@TRY", "try")


#: Valid log records that have no table: the clock's ticks only move the processors' watermark.
UNSTORED_KINDS = frozenset({TICK_KIND})


def prepare_writer(cur: duckdb.DuckDBPyConnection) -> None:
    """Set up the cursor :func:`stage_batch` runs on (this cursor's session only): UUID
    and JSON columns are exported to Arrow as extension types, so the staged rows keep
    their types when DuckDB scans them back."""
    cur.execute("SET SESSION arrow_lossless_conversion = true")


def unstage(cur: duckdb.DuckDBPyConnection) -> None:
    """Drop the ``_stage`` view of the last :func:`stage_batch` (frees its rows; idempotent)."""
    try:
        cur.unregister("_stage")
    except duckdb.Error:
        pass


def stage_batch(cur: duckdb.DuckDBPyConnection, plan: ProjectionPlan, batch: RecordBatch) -> tuple[list[tuple], list[tuple]]:
    """Parse a batch into the ``_stage`` view of ``cur`` (outside any transaction), which
    stays registered until :func:`unstage`.  ``cur`` must be prepared (:func:`prepare_writer`).

    No Python work per record: the batch's buffers become an Arrow table without a copy
    (UTF-8 is validated in C), and DuckDB parses every record's JSON once, in parallel.
    Which records are rejected depends only on each record, never on its batch.

    Returns:
        ``(kinds, letters)``: per kind of valid staged rows ``(kind, rows, has repeated
        ids, min id, max id, min ts)``; and the dead-letter rows of the rejected records.
        "Repeated ids" counts an id sent by two tenants too: it only decides whether
        the per-(tenant, id) first-offset filter has to run.

    Raises:
        duckdb.Error: the database failed.
    """
    n = len(batch)
    offsets = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(batch.offsets)])
    column = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(batch.bounds), pa.py_buffer(batch.data)])
    not_utf8: list[int] = []
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:  # rare: find the records that are not UTF-8, stage the others
        not_utf8 = [i for i in range(n) if not _is_utf8(batch.value(i))]
        keep = np.ones(n, bool)
        keep[not_utf8] = False
        offsets, column = offsets.filter(keep), pa.array([batch.value(int(i)) for i in np.flatnonzero(keep)], pa.large_string())
    table = pa.table({"_off": offsets, "_v": column})
    # DuckDB scans an Arrow table one record batch per thread: slice it (zero-copy) so
    # both cores parse JSON; a single chunk would leave the second core idle.
    cur.register("_in", pa.Table.from_batches(table.to_batches(max_chunksize=_ARROW_CHUNK), table.schema))
    try:
        # Staged as Arrow, not as a temp table: DuckDB fills an Arrow table in about half
        # the time of a temp table (which stores and compresses every column), and scans
        # it back without a copy.  The writer cursor exports UUID and JSON columns as
        # Arrow extension types (see ``prepare_writer``), so they come back typed.
        try:
            staged = cur.sql(plan.stage).to_arrow_table(_STAGE_ROWS)
        except duckdb.InvalidInputException:  # malformed JSON somewhere in the batch
            staged = cur.sql(plan.stage_safe).to_arrow_table(_STAGE_ROWS)
        cur.register("_stage", staged)
        groups = cur.execute(
            "SELECT kind, _problem IS NULL, count(*), count(DISTINCT id), min(id), max(id), min(ts) FROM _stage"
            " GROUP BY ALL"
        ).fetchall()
        kinds = [(kind, n, n != unique, low, high, oldest) for kind, ok, n, unique, low, high, oldest in groups if ok]
        bad = [] if len(kinds) == len(groups) else cur.execute(
            "SELECT _off, _problem, tenant, source, ts FROM _stage WHERE _problem IS NOT NULL ORDER BY _off"
        ).fetchall()
    finally:
        cur.unregister("_in")
    bad += [(batch.offsets[i], "not UTF-8 text", None, None, None) for i in not_utf8]
    return kinds, dead_letter_rows(batch, bad) if bad else []


def dead_letter_rows(batch: RecordBatch, bad: list[tuple]) -> list[tuple]:
    """``dead_letters`` rows for rejected records of ``batch``, from ``(offset, reason, tenant, source, ts)``.

    The id is the UUIDv5 of partition:offset and ``ts`` the event's (else the log's
    append time, which the log stores): both deterministic, so a replay matches.
    """
    index = {offset: i for i, offset in enumerate(batch.offsets)}
    rows = []
    for offset, reason, tenant, source, ts in bad:
        i = index[offset]
        if ts is None:
            ts = dt.datetime.fromtimestamp(batch.timestamps[i] / 1000, dt.UTC)
        payload = batch.value(i).decode("utf-8", "replace")[:MAX_PAYLOAD_CHARS]
        rows.append((uuid.uuid5(DEAD_LETTER_NS, f"{batch.partition}:{offset}"), ts, tenant or "", source or "",
                     f"projector: {reason}", payload, offset))
    return rows


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def project_safely(store: Store, records: RecordBatch | Sequence[Record]) -> tuple[ProjectResult, int]:
    """Project ``records`` (a RecordBatch or a list of Records); if the batch fails,
    project them one by one instead.

    A record that fails on its own is stored as a dead letter with the error, so one
    poisoned record never blocks or loses the rest of its batch.  The outcome depends
    only on each record, so a replay with other batch sizes gives the same tables.

    Returns:
        ``(result, errors)``: the summed result and how many records failed (plus one
        for the failed batch; 0 when the batch went through at once).

    Raises:
        duckdb.Error, RuntimeError: the database itself failed (see ``_TRANSIENT``);
            nothing past the last committed record is stored, the caller retries later.
    """
    try:
        if isinstance(records, RecordBatch):
            return store.project_batch(records), 0
        return store.project(records), 0
    except _TRANSIENT:
        raise
    except Exception as exc:
        logger.warning("batch of %d records failed (%s); projecting one by one", len(records), exc)
    total, errors = ProjectResult(), 1
    for record in records.records() if isinstance(records, RecordBatch) else records:
        try:
            result = store.project([record])
        except _TRANSIENT:
            raise
        except Exception as exc:
            errors += 1
            result = store.dead_letter(record, f"projection failed: {type(exc).__name__}: {exc}")
        total.records += result.records
        total.skipped += result.skipped
        total.duplicates += result.duplicates
        total.dead_letters += result.dead_letters
        total.unstored += result.unstored
        total.expired += result.expired
        for table, n in result.inserted.items():
            total.inserted[table] = total.inserted.get(table, 0) + n
        total.next_offset = result.next_offset
    return total, errors


class Projector(threading.Thread):
    """Projects the log into the store until stopped.  Counters are read by ``/v1/stats``.

    Attributes:
        projected: records handled (projected, skipped as duplicates or dead-lettered;
            the clock's ticks, which have no table, are not counted).
        errors: failed batches, records and commits so far (the thread keeps running).
        last_error: the latest error message, or None.
    """

    def __init__(self, log: StreamLog, store: Store, *, batch: int = 5000, group: str = "projector",
                 poll_s: float = 0.2, retry_s: float = 1.0) -> None:
        """Args:
            log: the stream log to follow (every partition).
            store: the read model to write.
            batch: most records per transaction.
            group: consumer group the position is committed under.
            poll_s: longest wait for new records before checking for ``stop``.
            retry_s: pause after the database failed, before trying again.
        """
        super().__init__(name="adaptd-projector", daemon=True)
        self._log, self._store, self._batch, self._group = log, store, max(1, batch), group
        self._poll, self._retry = poll_s, retry_s
        self.projected = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._deadline = float("inf")  # drain until then once stopping
        self._progress = threading.Condition()

    def run(self) -> None:
        while True:
            try:
                moved = self.step()
                if self._stopping.is_set() and (not moved or time.monotonic() >= self._deadline):
                    return
                if not moved:
                    self._log.wait(self._store.position(), self._poll)
            except Exception as exc:  # keep running: the log or the database may come back
                self._failed(exc)
                if self._stopping.wait(self._retry):
                    return

    def step(self) -> bool:
        """Project one batch per partition; True when there were records.

        Raises:
            Exception: the log or the database failed (``run`` counts it and retries).
        """
        moved = False
        for partition in range(self._log.partitions):
            batch = self._log.read_batch(self._store.position(partition), self._batch, partition)
            if not len(batch):
                continue
            moved = True
            result, errors = project_safely(self._store, batch)
            if errors:
                self._failed(None, errors, f"{errors} projection error(s) near offset {batch.offsets[0]}")
            self.projected += len(batch) - result.unstored  # events, not the clock's ticks
            with self._progress:
                self._progress.notify_all()
            try:
                self._log.commit(self._group, self._store.position(partition), partition)
            except LogError as exc:  # only retention depends on it; the store holds the truth
                self._failed(exc)
        return moved

    def _failed(self, exc: BaseException | None, count: int = 1, message: str | None = None) -> None:
        self.errors += count
        self.last_error = message or f"{type(exc).__name__}: {exc}"
        logger.error("projector: %s", self.last_error, exc_info=exc)

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Drain what is durable (for up to ``timeout`` s), commit, and end the thread.

        The batch in progress is always finished and its position committed; past the
        timeout no new batch is started.  Safe to call before ``start`` and twice.

        Returns:
            True when the thread ended and the store caught up with the log's end.
        """
        self._deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        self._stopping.set()
        if self.is_alive():
            # The batch in progress may outlast the drain budget; it is still finished.
            self.join(None if timeout is None else timeout + 5.0)
        try:
            return not self.is_alive() and self.lag() == 0
        except Exception:  # the log is already closed: nothing more to say
            return False

    def lag(self, partition: int = 0) -> int:
        """Records durable in the log but not yet projected (0 when caught up)."""
        return max(0, self._log.end_offset(partition) - self._store.position(partition))

    def wait_for(self, offset: int, timeout: float, partition: int = 0) -> bool:
        """Wait until the record at ``offset`` is projected; False after ``timeout`` s."""
        with self._progress:
            return self._progress.wait_for(lambda: self._store.position(partition) > offset, timeout)
