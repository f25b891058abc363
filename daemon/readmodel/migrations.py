"""Versioned schema migrations of the DuckDB read model.

Every version is explicit DDL, written out by hand: the tables are *not* generated from
the event models at import time, so a new model field only reaches the database through
a new, additive migration (``tests/test_store.py`` checks that every model field has a
column of the right type, so a forgotten migration fails CI).

Type mapping from the models: UUID -> UUID, datetime -> TIMESTAMPTZ, str / Literal ->
VARCHAR, int -> BIGINT, float -> DOUBLE, bool -> BOOLEAN, dict / list -> JSON.  Every
projected row also carries ``log_offset`` (deterministic); no projected table has a
wall-clock column, so a replay rebuilds them byte for byte.  Only ``schema_migrations``
records wall-clock time, and it is not a projected table.

Identity: since version 3 every event table and ``dead_letters`` is keyed by
``(tenant, id)``.  The id is the client's idempotency key, and a client only speaks for
its own tenant: the same id sent by two tenants is two events.

To change the schema, append ``(version, [statements])`` to ``MIGRATIONS``; never edit a
released version.  ``adaptd.daemon.readmodel.projector.ProjectionPlan`` derives the projection SQL from the
migrated tables (never the other way round), so a new column is projected once migrated.
"""

from __future__ import annotations

import duckdb

#: Event kind -> the table its rows are projected into.
EVENT_TABLES: dict[str, str] = {
    "execution": "executions",
    "lm_call": "lm_calls",
    "feedback": "feedback",
    "route_decision": "route_decisions",
    "signal": "signals",
    "adaptation": "adaptations",
    "optimizer_run": "optimizer_runs",
    "window": "perf_windows",
}
#: The kind of dead-letter records (projected into ``dead_letters``).
DEAD_LETTER_KIND = "dead_letter"
#: Tables a replay rebuilds (compared by ``adaptd.daemon.readmodel.replay.tables_equal``).
PROJECTED_TABLES: tuple[str, ...] = (*EVENT_TABLES.values(), "dead_letters", "projector_state")

_V1: list[str] = [
    """
    CREATE TABLE executions (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        program VARCHAR NOT NULL,
        module VARCHAR,
        module_type VARCHAR,
        program_version VARCHAR,
        route VARCHAR,
        model VARCHAR,
        status VARCHAR NOT NULL,
        error_type VARCHAR,
        error_message VARCHAR,
        duration_ms DOUBLE,
        parent_id UUID,
        root_id UUID,
        trace_id VARCHAR,
        span_id VARCHAR,
        tokens_in BIGINT,
        tokens_out BIGINT,
        cost_usd DOUBLE,
        inputs JSON,
        outputs JSON,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE lm_calls (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        execution_id UUID,
        program VARCHAR,
        route VARCHAR,
        model VARCHAR NOT NULL,
        provider VARCHAR,
        status VARCHAR NOT NULL,
        error_type VARCHAR,
        duration_ms DOUBLE,
        tokens_in BIGINT,
        tokens_out BIGINT,
        cost_usd DOUBLE,
        cache_hit BOOLEAN,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE feedback (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        execution_id UUID NOT NULL,
        program VARCHAR,
        metric VARCHAR,
        score DOUBLE,
        label VARCHAR,
        "comment" VARCHAR,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE route_decisions (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        program VARCHAR NOT NULL,
        route VARCHAR NOT NULL,
        policy_version BIGINT NOT NULL,
        probability DOUBLE NOT NULL,
        context VARCHAR,
        execution_id UUID,
        reason VARCHAR,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE signals (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        signal_type VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        program VARCHAR,
        module VARCHAR,
        route VARCHAR,
        model VARCHAR,
        metric VARCHAR,
        score DOUBLE,
        severity VARCHAR NOT NULL,
        window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ,
        incident_id UUID,
        explanation JSON NOT NULL,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE adaptations (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        program VARCHAR,
        route VARCHAR,
        version BIGINT,
        reason VARCHAR,
        caused_by JSON NOT NULL,
        details JSON NOT NULL,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE optimizer_runs (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        job_id VARCHAR NOT NULL,
        program VARCHAR NOT NULL,
        optimizer VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        program_version VARCHAR,
        score_before DOUBLE,
        score_after DOUBLE,
        cost_usd DOUBLE,
        lm_calls BIGINT,
        details JSON NOT NULL,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE dead_letters (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        payload VARCHAR NOT NULL,
        log_offset BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE projector_state (
        "partition" INTEGER PRIMARY KEY,
        next_offset BIGINT NOT NULL
    )
    """,
]

#: Version 2: closed performance windows from the history processor (kind ``window``).
_V2: list[str] = [
    """
    CREATE TABLE perf_windows (
        id UUID PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL,
        v BIGINT NOT NULL,
        tenant VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        attrs JSON NOT NULL,
        kind VARCHAR NOT NULL,
        program VARCHAR,
        module VARCHAR,
        route VARCHAR,
        model VARCHAR,
        window_size VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        count BIGINT NOT NULL,
        lm_calls BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        errors_by_type JSON NOT NULL,
        error_rate DOUBLE,
        latency_n BIGINT NOT NULL,
        p50_ms DOUBLE,
        p90_ms DOUBLE,
        p95_ms DOUBLE,
        p99_ms DOUBLE,
        tokens_in BIGINT NOT NULL,
        tokens_out BIGINT NOT NULL,
        cost_usd DOUBLE NOT NULL,
        cache_hits BIGINT NOT NULL,
        cache_known BIGINT NOT NULL,
        cache_hit_rate DOUBLE,
        quality_n BIGINT NOT NULL,
        quality_mean DOUBLE,
        sketch JSON NOT NULL,
        log_offset BIGINT NOT NULL
    )
    """,
]


def _rekeyed(create: str) -> list[str]:
    """The statements that rebuild the table of ``create`` (a released ``CREATE TABLE`` of
    an event table or ``dead_letters``) keyed by ``(tenant, id)``, keeping its rows.

    Same columns in the same order; only the key changes.  DuckDB cannot alter a primary
    key in place, so the rows are copied into a new table that then takes the old name.
    The key's columns are ordered ``(id, tenant)``: the same uniqueness, and the index
    keeps the ascending UUIDv7 ids as its prefix, which measured ~10% faster inserts
    than ``(tenant, id)``.
    """
    table = create.split("CREATE TABLE ", 1)[1].split("(", 1)[0].strip()
    if "id UUID PRIMARY KEY," not in create:
        raise RuntimeError(f"{table}: expected an id primary key to rekey")
    body = create.replace(f"CREATE TABLE {table} (", f"CREATE TABLE {table}__v3 (", 1)
    body = body.replace("id UUID PRIMARY KEY,", "id UUID NOT NULL,", 1)
    body = body.rstrip()
    if not body.endswith(")"):
        raise RuntimeError(f"{table}: unexpected DDL shape")
    body = body[:-1].rstrip() + ",\n        PRIMARY KEY (id, tenant)\n    )\n"
    return [
        body,
        f"INSERT INTO {table}__v3 SELECT * FROM {table}",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table}__v3 RENAME TO {table}",
    ]


#: Version 3: an event is identified by ``(tenant, id)``, not by ``id`` alone: two tenants
#: may send the same id (a client bug, a replayed file, a shared OTLP span) and each keeps
#: its own row.  Every event table and ``dead_letters`` is rebuilt with that key.
_V3: list[str] = [
    statement
    for create in [*_V1, *_V2]
    if "id UUID PRIMARY KEY," in create
    for statement in _rekeyed(create)
]

#: (version, statements), ascending.  Append only.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, _V1),
    (2, _V2),
    (3, _V3),
]

LATEST_VERSION: int = MIGRATIONS[-1][0]


class MigrationError(Exception):
    """The database cannot be brought to this code's schema (e.g. it is newer)."""


def applied_versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    """The versions recorded in ``schema_migrations``, ascending ([] for a new database)."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    )
    return [row[0] for row in con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than the database, in order, each in one transaction.

    Idempotent: on an up-to-date database it does nothing.  A migration that fails is
    rolled back as a whole and the error is raised; earlier versions stay applied.

    Args:
        con: an open connection (not inside a transaction).

    Returns:
        The versions applied by this call ([] when already up to date).

    Raises:
        MigrationError: the database has a version this code does not know (it was
            written by a newer adaptd): upgrade adaptd or rebuild with ``adaptd replay``.
        duckdb.Error: a migration statement failed.
    """
    done = set(applied_versions(con))
    unknown = sorted(v for v in done if v > LATEST_VERSION)
    if unknown:
        raise MigrationError(
            f"database schema version {max(unknown)} is newer than this adaptd knows ({LATEST_VERSION}):"
            " upgrade adaptd, or rebuild the database from the log with `adaptd replay`"
        )
    applied: list[int] = []
    for version, statements in MIGRATIONS:
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations VALUES (?, current_timestamp)", [version])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
