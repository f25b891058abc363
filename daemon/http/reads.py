"""The read endpoints over the read model: executions, programs, history windows,
signals and the event schema.  Every query is the caller's tenant's."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and ``Tenant`` is local to the router function.

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.config import Settings
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.http.ingest_routes import runtime_of
from adaptd.daemon.http.strict_query import strict_query
from adaptd.daemon.http.traces import Page, Scope, paged
from adaptd.streams.events import json_schema


def reads_router(settings: Settings, auth: Auth) -> APIRouter:
    """``/v1/schema``, ``/v1/executions``, ``/v1/programs``, ``/v1/history``, ``/v1/signals``;
    an unknown query parameter answers 422 (``strict_query``)."""
    router = APIRouter(dependencies=[strict_query(auth)])
    Tenant = Annotated[str, Depends(auth.tenant)]

    @router.get("/v1/schema", summary="JSON Schema of the event union")
    async def schema(tenant: Tenant) -> dict[str, Any]:
        return json_schema()

    @router.get("/v1/executions", summary="Executions, newest first, with filters and pagination")
    async def executions(
        request: Request,
        tenant: Tenant,
        scope: Annotated[Scope, Depends()],
        page: Annotated[Page, Depends()],
        program: str | None = None,
        module: str | None = None,
        route: str | None = None,
        status: str | None = Query(None, pattern="^(ok|error)$"),
        parent_id: uuid.UUID | None = Query(None, description="the direct children of one execution"),
    ) -> dict[str, Any]:
        """``root_id`` is set on every node by the DSPy callback; OTLP spans carry it on
        root spans only: filter those by ``trace_id``."""
        return await paged(runtime_of(request).store.executions, tenant, program=program, module=module,
                           route=route, status=status, parent_id=parent_id, **scope.filters(), **page.filters())

    @router.get("/v1/programs", summary="Summary per program, by name (pages of at most 1000)")
    async def programs(
        request: Request, tenant: Tenant, limit: int = Query(1000, ge=1, le=1000),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
    ) -> dict[str, Any]:
        store = runtime_of(request).store
        rows = await run_in_threadpool(lambda: store.program_summary(tenant, limit=limit, after=cursor))
        return {"items": rows, "next_cursor": rows[-1]["program"] if len(rows) == limit else None}

    windows = settings.processors.history_windows

    @router.get("/v1/history", summary="Closed performance windows per key, newest first")
    async def history(
        request: Request,
        tenant: Tenant,
        program: str | None = None,
        module: str | None = None,
        route: str | None = None,
        model: str | None = None,
        window: str = Query("1m", description="window size: one of processors.history_windows"),
        since: dt.datetime | None = Query(None, description="inclusive lower bound on window_start"),
        until: dt.datetime | None = Query(None, description="exclusive upper bound on window_start"),
        limit: int = Query(100, ge=1, le=1000),
        sketch: bool = Query(False, description="include each window's latency sketch"),
    ) -> dict[str, Any]:
        """Windows appear once the watermark (latest event time minus the allowed lateness) passes their end."""
        if window not in windows:
            raise HTTPException(422, f"unknown window {window!r}: one of {', '.join(windows)}")
        rows = await run_in_threadpool(
            runtime_of(request).store.windows, tenant, window, program=program, module=module, route=route,
            model=model, since=since, until=until, limit=limit, sketch=sketch,
        )
        return {"window": window, "items": rows}

    @router.get("/v1/signals", summary="Anomaly, drift and breaker signals, newest first")
    async def signals(
        request: Request,
        tenant: Tenant,
        program: str | None = None,
        signal_type: str | None = Query(None, pattern="^(anomaly|drift|breaker)$"),
        state: str | None = Query(None, pattern="^(open|update|resolved)$"),
        since: dt.datetime | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        rows = await run_in_threadpool(
            runtime_of(request).store.signals, tenant, program=program, signal_type=signal_type, state=state,
            since=since, limit=limit,
        )
        return {"items": rows}

    return router
