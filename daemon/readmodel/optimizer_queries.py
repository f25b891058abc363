"""Read-model queries of the optimization feature (DuckDB, through ``Store.query``).

Only events of source ``adaptd.optimize`` count as jobs and rollout steps: clients may
send ``optimizer_run`` events of their own (telemetry of their optimizations), which
must never be mistaken for jobs to resume.
"""

from __future__ import annotations

from typing import Any

from adaptd.daemon.optimize.records import SOURCE

_FINAL = ("succeeded", "failed", "budget_exhausted", "interrupted")


def job_events(store: Any, tenant: str, job_id: str) -> list[dict[str, Any]]:
    """Every event of job ``job_id`` of ``tenant``, in log order ([] when unknown)."""
    return store.query("optimizer_runs", "SELECT * EXCLUDE (v, kind) FROM optimizer_runs WHERE tenant = ? AND"
                       " job_id = ? AND source = ? ORDER BY log_offset", [tenant, job_id, SOURCE])


def latest_jobs(store: Any, tenant: str | None = None, program: str | None = None, limit: int = 100,
                statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Each job's latest event (its state), newest job first; filters optional."""
    where, params = ["source = ?"], [SOURCE]
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if program is not None:
        where.append("program = ?")
        params.append(program)
    sql = ("SELECT * EXCLUDE (v, kind) FROM optimizer_runs WHERE " + " AND ".join(where) +
           " QUALIFY row_number() OVER (PARTITION BY tenant, job_id ORDER BY log_offset DESC) = 1")
    if statuses:
        sql = f"SELECT * FROM ({sql}) WHERE status IN ({', '.join('?' * len(statuses))})"
        params += list(statuses)
    return store.query("optimizer_runs", f"{sql} ORDER BY log_offset DESC LIMIT {int(limit)}", params)


def first_event(store: Any, tenant: str, job_id: str) -> dict[str, Any] | None:
    """The job's ``queued`` event (its specification), or None."""
    rows = store.query("optimizer_runs", "SELECT * EXCLUDE (v, kind) FROM optimizer_runs WHERE tenant = ? AND"
                       " job_id = ? AND source = ? AND status = 'queued' ORDER BY log_offset LIMIT 1",
                       [tenant, job_id, SOURCE])
    return rows[0] if rows else None


def history(store: Any, tenant: str, limit: int = 500) -> list[dict[str, Any]]:
    """Final results of this tenant's optimizer runs (for the recommender), newest first.
    Client-sent ``optimizer_run`` events count too: they are real past runs."""
    return store.query("optimizer_runs", "SELECT program, optimizer, status, score_before, score_after, lm_calls,"
                       " cost_usd, details FROM optimizer_runs WHERE tenant = ? AND status IN"
                       f" ({', '.join('?' * len(_FINAL))}) ORDER BY log_offset DESC LIMIT {int(limit)}",
                       [tenant, *_FINAL])


def harvest_rows(store: Any, tenant: str, program: str, threshold: float, limit: int) -> list[dict[str, Any]]:
    """Root executions of ``program`` whose mean feedback score is >= ``threshold``,
    newest first, with ``id``, ``inputs``, ``outputs`` and ``score``."""
    return store.query("executions", """
        WITH fb AS (SELECT execution_id, avg(score) AS score FROM feedback
                    WHERE tenant = ? AND score IS NOT NULL GROUP BY execution_id)
        SELECT e.id, e.inputs, e.outputs, fb.score, e.ts FROM executions e JOIN fb ON fb.execution_id = e.id
        WHERE e.tenant = ? AND e.program = ? AND e.parent_id IS NULL AND fb.score >= ?
        ORDER BY e.ts DESC, e.id DESC LIMIT ?""", [tenant, tenant, program, threshold, int(limit)])


def drift_signals(store: Any, after_offset: int, limit: int = 200) -> list[dict[str, Any]]:
    """Drift signals (open / update) after log offset ``after_offset``, in log order."""
    return store.query("signals", "SELECT * EXCLUDE (v, kind) FROM signals WHERE signal_type = 'drift' AND state IN"
                       " ('open', 'update') AND log_offset > ? ORDER BY log_offset LIMIT ?", [after_offset, limit])


def rollout_events(store: Any, tenant: str, program: str) -> list[dict[str, Any]]:
    """This package's adaptations for ``program`` and the policy's rollbacks, in log order."""
    return store.query("adaptations", "SELECT * EXCLUDE (v, kind) FROM adaptations WHERE tenant = ? AND program = ?"
                       " AND (source = ? OR (source = 'adaptd.policy' AND action = 'rollback')) ORDER BY log_offset",
                       [tenant, program, SOURCE])


def rollout_tenants(store: Any, program: str) -> list[str]:
    """Tenants with any optimization event for ``program``."""
    rows = store.query("adaptations", "SELECT DISTINCT tenant FROM adaptations WHERE program = ? AND source = ?"
                       " ORDER BY tenant", [program, SOURCE])
    return [r["tenant"] for r in rows]


def route_quality(store: Any, tenant: str, program: str, after_offset: int) -> dict[str, tuple[int, float]]:
    """Per route of ``program``: ``(n, mean score)`` of the feedback that arrived after
    log offset ``after_offset``, joined to its route through the execution's last
    ``route_decision``.  No feedback: {}."""
    rows = store.query("feedback", """
        WITH rd AS (SELECT execution_id, route FROM route_decisions WHERE tenant = ? AND program = ?
                      AND execution_id IS NOT NULL
                    QUALIFY row_number() OVER (PARTITION BY execution_id ORDER BY log_offset DESC) = 1)
        SELECT rd.route, count(*) AS n, avg(f.score) AS mean FROM feedback f JOIN rd ON rd.execution_id = f.execution_id
        WHERE f.tenant = ? AND f.score IS NOT NULL AND f.log_offset > ? GROUP BY rd.route ORDER BY rd.route""",
                       [tenant, program, tenant, after_offset])
    return {r["route"]: (int(r["n"]), float(r["mean"])) for r in rows}


def max_offset(store: Any, table: str) -> int:
    """The highest ``log_offset`` in ``table`` (-1 when empty)."""
    rows = store.query(table, f"SELECT coalesce(max(log_offset), -1) AS m FROM {table}")
    return int(rows[0]["m"])


def timeline(store: Any, tenant: str, program: str, limit: int = 500) -> list[dict[str, Any]]:
    """``program``'s optimization story in log order: drift signals, this package's jobs
    and rollout steps, and the routing policy's rollbacks (each row: ``log_offset, ts,
    kind, source, what, route, reason, job_id, status, details``)."""
    return store.query("adaptations", f"""
        SELECT * FROM (
          SELECT log_offset, ts, 'signal' AS kind, source, signal_type || ':' || state AS what, route,
                 coalesce(metric, '') AS reason, NULL AS job_id, severity AS status, explanation AS details
            FROM signals WHERE tenant = ? AND program = ? AND signal_type = 'drift'
          UNION ALL
          SELECT log_offset, ts, 'optimizer_run', source, optimizer, program_version, NULL, job_id, status, details
            FROM optimizer_runs WHERE tenant = ? AND program = ? AND source = ?
          UNION ALL
          SELECT log_offset, ts, 'adaptation', source, action, route, reason, NULL, NULL, details
            FROM adaptations WHERE tenant = ? AND program = ? AND (source = ? OR (source = 'adaptd.policy'
                 AND action IN ('rollback', 'routing_table')))
        ) ORDER BY log_offset DESC LIMIT {int(limit)}""",
                       [tenant, program, tenant, program, SOURCE, tenant, program, SOURCE])[::-1]
