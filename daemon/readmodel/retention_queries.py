"""Retention of the read model: per table, rows whose event time ``ts`` is older than
the configured number of days are deleted (``apply_retention``), and the oldest rows
beyond a row ceiling (``apply_ceiling``), a bounded batch per transaction.

``cutoffs`` is pure (days and a clock in, cutoffs out); the deletions go through
``Store.delete_older``, so the projector waits at most one batch at a time and ingest
(the log) never waits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from adaptd.daemon.readmodel.migrations import EVENT_TABLES
from adaptd.daemon.readmodel.store import Store

#: Most batches one table gets in one application; the rest waits for the next run (a
#: bound on how long one run takes, whatever the backlog).
MAX_BATCHES_PER_RUN = 1000


def cutoffs(days: Mapping[str, float], now: dt.datetime) -> dict[str, dt.datetime]:
    """Per table of ``days``, the time before which its rows are deleted at ``now``
    ({} for no tables).

    Raises:
        ValueError: ``now`` is naive (a clock must say its time zone), or a number of
            days is not positive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    out = {}
    for table, kept in days.items():
        if not kept > 0:
            raise ValueError(f"days of {table} must be positive, got {kept}")
        out[table] = now - dt.timedelta(days=kept)
    return out


def apply_retention(store: Store, days: Mapping[str, float], now: dt.datetime,
                    batch_rows: int = 50_000) -> dict[str, int]:
    """Delete, per table of ``days``, the rows older than its cutoff at ``now``.

    Returns:
        Rows deleted per table (0 where none were old enough); a table with a backlog
        beyond ``MAX_BATCHES_PER_RUN * batch_rows`` keeps the rest for the next run.

    Raises:
        ValueError: as :func:`cutoffs`, or an unknown table (``Store.delete_older``).
        RuntimeError: the store is closed.
    """
    return {table: _delete_all_older(store, table, cutoff, batch_rows)
            for table, cutoff in sorted(cutoffs(days, now).items())}


def _delete_all_older(store: Store, table: str, cutoff: dt.datetime, batch_rows: int) -> int:
    """Rows of ``table`` with ``ts`` before ``cutoff`` deleted, a batch at a time (at most
    ``MAX_BATCHES_PER_RUN`` batches)."""
    total = 0
    for _ in range(MAX_BATCHES_PER_RUN):
        n = store.delete_older(table, cutoff, batch=batch_rows)
        total += n
        if n < batch_rows:
            break
    return total


def apply_ceiling(store: Store, max_rows: Mapping[str, int], batch_rows: int = 50_000) -> dict[str, int]:
    """Delete, per table of ``max_rows``, its oldest rows (by ``ts``, every tenant's) until
    at most that many are left; rows sharing the ``ts`` of the first one beyond the
    ceiling go with it, so a few fewer may be left.

    Returns:
        Rows deleted per table (0 where the table is within its ceiling).

    Raises:
        ValueError: a ceiling below 1, or an unknown table.
        RuntimeError: the store is closed.
    """
    deleted: dict[str, int] = {}
    for table, ceiling in sorted(max_rows.items()):
        if ceiling < 1:
            raise ValueError(f"max_rows of {table} must be >= 1, got {ceiling}")
        if table not in EVENT_TABLES.values():
            raise ValueError(f"unknown table {table!r}: one of {', '.join(sorted(EVENT_TABLES.values()))}")
        beyond = store.query(table, f"SELECT ts FROM {table} ORDER BY ts DESC LIMIT 1 OFFSET {int(ceiling)}")
        if not beyond:
            deleted[table] = 0
            continue
        first_out = dt.datetime.fromisoformat(beyond[0]["ts"])
        deleted[table] = _delete_all_older(store, table, first_out + dt.timedelta(microseconds=1), batch_rows)
    return deleted
