"""Read endpoints over execution trees: LM calls, feedback, and one execution with
everything below it.  Every query is the caller's tenant's; an unknown query parameter
answers 422 (``strict_query``)."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and ``Tenant`` is local to the router function.

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.http.auth import Auth
from adaptd.daemon.http.ingest_routes import runtime_of
from adaptd.daemon.http.strict_query import strict_query
from adaptd.daemon.readmodel import trace_queries


class Scope:
    """Query parameters narrowing rows to one trace, tree or session (a dependency)."""

    def __init__(
        self,
        trace_id: str | None = Query(None, description="only rows of executions of this trace_id"),
        root_id: uuid.UUID | None = Query(None, description="only rows of executions of this root_id (one DSPy run)"),
        session_id: str | None = Query(None, description="attrs.session_id (set by the DSPy callback): the"
                                       " call's own for LM calls, the scored execution's for feedback"),
    ) -> None:
        self.trace_id, self.root_id, self.session_id = trace_id, root_id, session_id

    def filters(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "root_id": self.root_id, "session_id": self.session_id}


class Page:
    """Time bounds and cursor paging of a listing (a dependency)."""

    def __init__(
        self,
        since: dt.datetime | None = Query(None, description="inclusive lower bound on ts (naive = UTC)"),
        until: dt.datetime | None = Query(None, description="exclusive upper bound on ts (naive = UTC)"),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
    ) -> None:
        self.since, self.until, self.limit, self.cursor = since, until, limit, cursor

    def filters(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "limit": self.limit, "cursor": self.cursor}


def traces_router(auth: Auth) -> APIRouter:
    """``/v1/lm_calls``, ``/v1/feedback`` and ``/v1/executions/{execution_id}/tree``."""
    router = APIRouter(dependencies=[strict_query(auth)])
    Tenant = Annotated[str, Depends(auth.tenant)]

    @router.get("/v1/lm_calls", summary="LM calls, newest first, with filters and pagination")
    async def lm_calls(
        request: Request,
        tenant: Tenant,
        scope: Annotated[Scope, Depends()],
        page: Annotated[Page, Depends()],
        program: str | None = None,
        execution_id: uuid.UUID | None = Query(None, description="the calls one execution made"),
        route: str | None = None,
        model: str | None = None,
        status: str | None = Query(None, pattern="^(ok|error)$"),
    ) -> dict[str, Any]:
        return await paged(trace_queries.lm_calls, runtime_of(request).store, tenant, program=program,
                           execution_id=execution_id, route=route, model=model, status=status,
                           **scope.filters(), **page.filters())

    @router.get("/v1/feedback", summary="Feedback, newest first, with filters and pagination")
    async def feedback(
        request: Request,
        tenant: Tenant,
        scope: Annotated[Scope, Depends()],
        page: Annotated[Page, Depends()],
        program: str | None = None,
        execution_id: uuid.UUID | None = Query(None, description="the feedback on one execution"),
        metric: str | None = None,
    ) -> dict[str, Any]:
        return await paged(trace_queries.feedback, runtime_of(request).store, tenant, program=program,
                           execution_id=execution_id, metric=metric, **scope.filters(), **page.filters())

    @router.get("/v1/executions/{execution_id}/tree",
                summary="One execution with every execution below it, their LM calls and feedback")
    async def tree(request: Request, tenant: Tenant, execution_id: uuid.UUID) -> dict[str, Any]:
        """Nested: each node is an execution with ``lm_calls``, ``feedback`` and ``children``
        (oldest first); ``truncated`` when the tree had more than 5000 executions."""
        found = await run_in_threadpool(trace_queries.execution_tree, runtime_of(request).store, tenant,
                                        str(execution_id))
        if found is None:
            raise HTTPException(404, "no execution with this id (of this tenant)")
        return found

    return router


async def paged(query: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``query(*args, **kwargs)`` (a page query returning ``(rows, next_cursor)``) in the
    thread pool, as ``{"items", "next_cursor"}``; its ValueError (a bad cursor, bound or
    id) answers 422 with the reason."""
    try:
        rows, next_cursor = await run_in_threadpool(query, *args, **kwargs)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"items": rows, "next_cursor": next_cursor}
