"""Read-model queries over execution trees: LM calls and feedback with the executions'
filters, and one execution with everything below it.

Every query is scoped to one tenant: an id another tenant also uses never matches here.
LM calls and feedback are filtered by ``trace_id`` / ``root_id`` through the execution
they belong to (their own rows do not carry those columns).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from adaptd.daemon.readmodel.store import Store, as_uuid
from adaptd.daemon.readmodel.store import _equal as _equal

#: Most executions one tree answer holds; a bigger tree is cut (``truncated``).
MAX_TREE_NODES = 5000
#: Deepest nesting followed below the requested execution (bounds the recursion even if
#: a client sent a parent cycle).
MAX_TREE_DEPTH = 64
_SESSION = "json_extract_string(attrs, '$.session_id')"


def _through_executions(where: list[str], params: list[Any], tenant: str, pairs: list[tuple[str, Any]]) -> None:
    """Add ``execution_id IN (the tenant's executions with column = value)`` per given value."""
    for column, value in pairs:
        if value is not None:
            where.append(f"execution_id IN (SELECT id FROM executions WHERE tenant = ? AND {column} = ?)")
            params += [tenant, value]


def lm_calls(store: Store, tenant: str, *, program: str | None = None, execution_id: uuid.UUID | str | None = None,
             route: str | None = None, model: str | None = None, status: str | None = None,
             trace_id: str | None = None, root_id: uuid.UUID | str | None = None, session_id: str | None = None,
             since: dt.datetime | str | None = None, until: dt.datetime | str | None = None,
             limit: int = 100, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``tenant``'s LM calls, newest first (by ts, then id).

    Filters (None: any): ``program, route, model, status, execution_id`` on the call;
    ``session_id`` on the call's ``attrs.session_id``; ``trace_id`` / ``root_id`` on the
    execution that made the call (a call without an execution matches neither).

    Returns:
        ``(rows, next_cursor)`` as ``Store.page``; ``([], None)`` when nothing matches.

    Raises:
        ValueError: an id is not a UUID, a bound is not a time or the cursor is not one
            this function made.
    """
    where: list[str] = []
    params: list[Any] = []
    _equal(where, params, [("program", program), ("route", route), ("model", model), ("status", status),
                           ("execution_id", as_uuid(execution_id, "execution_id")), (_SESSION, session_id)])
    _through_executions(where, params, tenant, [("trace_id", trace_id), ("root_id", as_uuid(root_id, "root_id"))])
    return store.page("lm_calls", tenant, where, params, since=since, until=until, limit=limit, cursor=cursor)


def feedback(store: Store, tenant: str, *, program: str | None = None, execution_id: uuid.UUID | str | None = None,
             metric: str | None = None, trace_id: str | None = None, root_id: uuid.UUID | str | None = None,
             session_id: str | None = None, since: dt.datetime | str | None = None,
             until: dt.datetime | str | None = None, limit: int = 100,
             cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``tenant``'s feedback, newest first (by ts, then id).

    Filters (None: any): ``program, metric, execution_id`` on the feedback;
    ``trace_id`` / ``root_id`` / ``session_id`` on the execution it scores (feedback
    for an execution the read model does not hold matches none of those three).

    Returns:
        ``(rows, next_cursor)`` as ``Store.page``; ``([], None)`` when nothing matches.

    Raises:
        ValueError: as :func:`lm_calls`.
    """
    where: list[str] = []
    params: list[Any] = []
    _equal(where, params, [("program", program), ("metric", metric),
                           ("execution_id", as_uuid(execution_id, "execution_id"))])
    _through_executions(where, params, tenant, [("trace_id", trace_id), ("root_id", as_uuid(root_id, "root_id")),
                                                (_SESSION, session_id)])
    return store.page("feedback", tenant, where, params, since=since, until=until, limit=limit, cursor=cursor)


def execution_tree(store: Store, tenant: str, execution_id: str,
                   max_nodes: int = MAX_TREE_NODES) -> dict[str, Any] | None:
    """``tenant``'s execution ``execution_id`` with every execution below it (by
    ``parent_id``, at most ``MAX_TREE_DEPTH`` levels down), each with its LM calls and
    feedback, nested.

    Descendants are looked for among the executions of the same trace when the execution
    has a ``trace_id`` (OTLP spans), else of the same ``root_id`` when it has one (the
    DSPy callback), else among all of the tenant's executions.

    Returns:
        None when the tenant has no such execution; else ``{"execution": node,
        "executions": n, "lm_calls": n, "feedback": n, "truncated": bool}``, where a
        node is the execution's row plus ``lm_calls`` and ``feedback`` (oldest first)
        and ``children`` (nodes, oldest first).  ``truncated``: the tree had more than
        ``max_nodes`` executions and only the ``max_nodes`` shallowest-then-oldest are
        in the answer (with their calls and feedback).

    Raises:
        ValueError: ``execution_id`` is not a UUID.
    """
    key = as_uuid(execution_id, "execution_id")
    top = store.get("executions", key, tenant=tenant) if key is not None else None
    if top is None:
        return None
    scope, scope_params = "", []
    if top.get("trace_id") is not None:
        scope, scope_params = "AND trace_id = ?", [top["trace_id"]]
    elif top.get("root_id") is not None:
        scope, scope_params = "AND root_id = ?", [top["root_id"]]
    limit = max(1, int(max_nodes))
    rows = store.query("executions", f"""
        WITH RECURSIVE candidates AS (
            SELECT id, parent_id FROM executions WHERE tenant = ? {scope}
        ), tree(id, depth) AS (
            SELECT ?::UUID, 0
            UNION
            SELECT c.id, t.depth + 1 FROM candidates c JOIN tree t ON c.parent_id = t.id
            WHERE t.depth < {MAX_TREE_DEPTH}
        ), nodes AS (SELECT id, min(depth) AS depth FROM tree GROUP BY id)
        SELECT e.* EXCLUDE (v, kind) FROM executions e JOIN nodes n ON n.id = e.id
        WHERE e.tenant = ? ORDER BY n.depth, e.ts, e.id LIMIT {limit + 1}""",
                       [tenant, *scope_params, key, tenant])
    truncated = len(rows) > limit
    rows = rows[:limit]
    ids = [r["id"] for r in rows]
    calls = _below("lm_calls", store, tenant, ids)
    notes = _below("feedback", store, tenant, ids)
    nodes: dict[str, dict[str, Any]] = {}
    for row in rows:
        nodes[row["id"]] = {**row, "lm_calls": calls.get(row["id"], []), "feedback": notes.get(row["id"], []),
                            "children": []}
    for row in rows[1:]:
        parent = nodes.get(row["parent_id"]) if row["parent_id"] is not None else None
        if parent is not None:
            parent["children"].append(nodes[row["id"]])
    return {"execution": nodes[str(key)], "executions": len(rows), "lm_calls": sum(map(len, calls.values())),
            "feedback": sum(map(len, notes.values())), "truncated": truncated}


def _below(table: str, store: Store, tenant: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``tenant``'s rows of ``table`` whose ``execution_id`` is one of ``ids``, grouped by
    it, each group oldest first ({} when there are none)."""
    rows = store.query(table, f"SELECT * EXCLUDE (v, kind) FROM {table} WHERE tenant = ?"
                       " AND execution_id IN (SELECT unnest(?::UUID[])) ORDER BY ts, id",
                       [tenant, [str(uuid.UUID(i)) for i in ids]])
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["execution_id"], []).append(row)
    return grouped
