"""Export of one read-model table to a Parquet or NDJSON file with DuckDB's ``COPY``.

One tenant's rows, optionally bounded by event time, in log order.  Columns are written
so that pandas, polars and DuckDB read them without extensions: UUIDs as strings, JSON
columns as strings in Parquet (nested objects in NDJSON), times as UTC timestamps in
Parquet and ISO 8601 strings (``...Z``) in NDJSON.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import duckdb

from adaptd.daemon.readmodel.migrations import EVENT_TABLES

#: Tables that can be exported (the event tables).
EXPORT_TABLES: tuple[str, ...] = tuple(sorted(EVENT_TABLES.values()))
Format = Literal["parquet", "ndjson"]
FORMATS: tuple[str, ...] = ("parquet", "ndjson")


def _column_expr(name: str, type_: str, fmt: str) -> str:
    """The SELECT expression writing column ``name`` of DuckDB type ``type_`` in ``fmt``."""
    quoted = f'"{name}"'
    if type_ == "UUID":
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if type_ == "JSON" and fmt == "parquet":
        return f"CAST({quoted} AS VARCHAR) AS {quoted}"
    if type_.startswith("TIMESTAMP") and fmt == "ndjson":
        return f"strftime(timezone('UTC', {quoted}), '%Y-%m-%dT%H:%M:%S.%fZ') AS {quoted}"
    return quoted


def export_query(columns: list[tuple[str, str]], table: str, fmt: str, tenant: str,
                 since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, list[object]]:
    """The SELECT (and its parameters) of ``tenant``'s rows of ``table`` with ``since`` <=
    ts < ``until`` (either bound optional), in log order, columns as ``fmt`` needs them.

    Raises:
        ValueError: an unknown table or format, or ``until`` not after ``since``.
    """
    if table not in EXPORT_TABLES:
        raise ValueError(f"unknown table {table!r}: one of {', '.join(EXPORT_TABLES)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    if since is not None and until is not None and until <= since:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    where: list[str] = ["tenant = ?"]
    params: list[object] = [tenant]
    for op, bound in ((">=", since), ("<", until)):
        if bound is not None:
            where.append(f"ts {op} ?")
            params.append(bound if bound.tzinfo else bound.replace(tzinfo=dt.UTC))
    select = ", ".join(_column_expr(name, type_, fmt) for name, type_ in columns)
    return f"SELECT {select} FROM {table} WHERE {' AND '.join(where)} ORDER BY log_offset", params


def copy_table(cur: duckdb.DuckDBPyConnection, table: str, fmt: str, path: Path, tenant: str,
               since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
    """Write ``tenant``'s rows of ``table`` (see :func:`export_query`) to the new file
    ``path`` in ``fmt``; an empty selection writes a valid empty file.

    Returns:
        The number of rows written.

    Raises:
        ValueError: as :func:`export_query`.
        duckdb.Error: the file cannot be written.
    """
    if table not in EXPORT_TABLES:
        raise ValueError(f"unknown table {table!r}: one of {', '.join(EXPORT_TABLES)}")
    columns = [(r[0], r[1]) for r in cur.execute(f"DESCRIBE {table}").fetchall()]
    sql, params = export_query(columns, table, fmt, tenant, since, until)
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT json"
    target = str(path).replace("'", "''")
    row = cur.execute(f"COPY ({sql}) TO '{target}' ({options})", params).fetchone()
    return int(row[0]) if row else 0
