"""Read-model queries of the dashboard and admin endpoints (DuckDB, through ``Store.query``).

Every query is scoped to one tenant: an id another tenant also uses never matches here.
"""

from __future__ import annotations

from typing import Any

from adaptd.daemon.readmodel.store import Store


def adaptations(store: Store, tenant: str, *, program: str | None, actions: list[str] | None,
                source: str | None, limit: int, details: bool, admin_source: str) -> list[dict[str, Any]]:
    """``tenant``'s adaptations newest first (log order breaks ties), each with
    ``reverted_by`` (the id of the revert, an adaptation of ``admin_source``, that undid
    it, or None); [] when none."""
    where, params = ["a.tenant = ?"], [tenant]
    if program is not None:
        where.append("a.program = ?")
        params.append(program)
    if actions:
        where.append(f"a.action IN ({', '.join('?' * len(actions))})")
        params.extend(actions)
    if source is not None:
        where.append("a.source = ?")
        params.append(source)
    columns = "a.* EXCLUDE (v, kind, log_offset)" if details else "a.* EXCLUDE (v, kind, log_offset, details)"
    return store.query("adaptations", f"""
        SELECT {columns}, r.reverted_by FROM adaptations a
        LEFT JOIN (SELECT json_extract_string(details, '$.reverts') AS target, min(CAST(id AS VARCHAR)) AS reverted_by
                   FROM adaptations WHERE tenant = ? AND source = ?
                   AND json_extract_string(details, '$.reverts') IS NOT NULL GROUP BY target) r
          ON r.target = CAST(a.id AS VARCHAR)
        WHERE {' AND '.join(where)} ORDER BY a.ts DESC, a.log_offset DESC LIMIT {int(limit)}""",
        [tenant, admin_source, *params])


def revert_of(store: Store, tenant: str, adaptation_id: str, admin_source: str) -> str | None:
    """The id of ``tenant``'s revert (source ``admin_source``) of ``adaptation_id``, or None."""
    rows = store.query("adaptations", "SELECT id FROM adaptations WHERE tenant = ? AND source = ?"
                       " AND json_extract_string(details, '$.reverts') = ? LIMIT 1", [tenant, admin_source, adaptation_id])
    return str(rows[0]["id"]) if rows else None


def ack_of(store: Store, tenant: str, action: str, signal_id: str) -> str | None:
    """The id of ``tenant``'s ``action`` adaptation acknowledging ``signal_id``, or None."""
    rows = store.query("adaptations", "SELECT id FROM adaptations WHERE tenant = ? AND action = ?"
                       " AND json_extract_string(details, '$.signal_id') = ? LIMIT 1", [tenant, action, signal_id])
    return str(rows[0]["id"]) if rows else None


def routing_actions_before(store: Store, tenant: str, program: str | None, log_offset: int) -> list[dict[str, Any]]:
    """``tenant``'s pin / unpin / canary actions on ``program`` logged before ``log_offset``,
    oldest first (what a revert needs to restore the state before an action); [] when none."""
    return store.query("adaptations", "SELECT action, route, details FROM adaptations WHERE tenant = ?"
                       " AND program = ? AND action IN ('pin', 'unpin', 'canary') AND log_offset < ?"
                       " ORDER BY log_offset", [tenant, program, log_offset])


def optimizer_runs(store: Store, tenant: str, *, program: str | None, job_id: str | None,
                   limit: int) -> list[dict[str, Any]]:
    """``tenant``'s optimizer run events newest first, optionally of one program or job."""
    where, params = ["tenant = ?"], [tenant]
    for name, value in (("program", program), ("job_id", job_id)):
        if value is not None:
            where.append(f"{name} = ?")
            params.append(value)
    return store.query("optimizer_runs", f"SELECT * EXCLUDE (v, kind, log_offset) FROM optimizer_runs"
                       f" WHERE {' AND '.join(where)} ORDER BY ts DESC, log_offset DESC LIMIT {int(limit)}", params)
