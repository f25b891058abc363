"""Unknown query parameters are an error: ``GET /v1/executions?root_idx=...`` answers 422
naming ``root_idx`` and the accepted parameters, instead of silently returning every row.

``strict_query(auth)`` is a dependency for a router (or an ``include_router``): on GET
and HEAD requests it compares the query's names with the parameters the matched route
declares (its own and its dependencies'); other methods pass untouched (their bodies are
validated by their models).  It resolves the caller first, so a request without a token
still answers 401, whatever its query.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's signature.

from typing import Any

from fastapi import Depends, HTTPException, Request

from adaptd.daemon.http.auth import Auth

#: Methods whose query is checked (reads).
READ_METHODS = frozenset({"GET", "HEAD"})


def declared_query(dependant: Any) -> frozenset[str]:
    """The query parameter names (aliases) ``dependant`` and its sub-dependencies read."""
    names: set[str] = set()
    pending = [dependant]
    while pending:  # bounded: a dependency tree is finite and acyclic
        node = pending.pop()
        names.update(field.alias for field in node.query_params)
        pending.extend(node.dependencies)
    return frozenset(names)


def unknown_query(given: list[str], accepted: frozenset[str]) -> str | None:
    """The 422 reason for the names in ``given`` that are not ``accepted``, or None when
    every one is accepted (an empty query included)."""
    unknown = sorted({name for name in given if name not in accepted})
    if not unknown:
        return None
    listed = ", ".join(sorted(accepted)) or "none"
    plural = "s" if len(unknown) > 1 else ""
    return f"unknown query parameter{plural} {', '.join(map(repr, unknown))}: accepted are {listed}"


def strict_query(auth: Auth) -> Any:
    """A ``Depends`` refusing (422) a read whose query names a parameter its route does
    not declare; the caller is authenticated first (401 before 422)."""
    cache: dict[int, frozenset[str]] = {}

    def check(request: Request, tenant: str = Depends(auth.tenant)) -> None:
        if request.method not in READ_METHODS or not request.query_params:
            return
        route = request.scope.get("route")
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            return
        accepted = cache.get(id(route))
        if accepted is None:
            accepted = cache[id(route)] = declared_query(dependant)
        reason = unknown_query(list(request.query_params.keys()), accepted)
        if reason is not None:
            raise HTTPException(422, reason)

    return Depends(check)
