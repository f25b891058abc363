"""The operational endpoints: liveness, readiness, counters and the live tail."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and ``Tenant`` is local to the router function.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from adaptd.daemon import __version__
from adaptd.daemon.http.auth import Auth, Identity
from adaptd.daemon.http.ingest_routes import runtime_of
from adaptd.daemon.http.tail import TailSlots, tail
from adaptd.streams.events import KINDS, SCHEMA_VERSION


def ops_router(auth: Auth, tails: TailSlots) -> APIRouter:
    """``/v1/health``, ``/v1/ready``, ``/v1/stats`` and ``/v1/stream`` (its tails counted in ``tails``)."""
    router = APIRouter()
    Tenant = Annotated[str, Depends(auth.tenant)]
    Caller = Annotated[Identity, Depends(auth.identity)]

    @router.get("/v1/health", summary="Liveness: the process answers (see /v1/ready for whether it works)")
    async def health(request: Request, tenant: Tenant) -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "schema_version": SCHEMA_VERSION}

    @router.get(
        "/v1/ready",
        summary="Readiness: 200 when events can be acknowledged and get projected, else 503 with the reasons",
        responses={503: {"description": "not ready: the log refuses appends (disk fault), or the projector"
                                        " or the processors are failing"}},
    )
    async def ready(request: Request, tenant: Tenant) -> Response:
        """Route traffic on this, not on /v1/health: a daemon whose disk is full is alive but not ready."""
        reasons = await run_in_threadpool(runtime_of(request).readiness)
        if reasons:
            return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503,
                                headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready", "reasons": []})

    @router.get("/v1/stats", summary="Counters: the caller's tenant's; every counter (acked, lag, ...) for admins")
    async def stats(request: Request, caller: Caller) -> dict[str, Any]:
        """A tenant sees its own counters and nothing about other tenants; an admin (or
        anyone when no tenants are configured) sees the whole daemon. Sink URLs are redacted."""
        runtime = runtime_of(request)
        if caller.admin:
            figures = await run_in_threadpool(runtime.stats)
            figures["streams_open"] = {name: tails.open(name) for name in figures.get("tenants", {})}
            return figures
        figures = await run_in_threadpool(runtime.tenant_stats, caller.tenant)
        figures["streams_open"] = tails.open(caller.tenant)
        return figures

    @router.get(
        "/v1/stream", summary="Live tail of this tenant's events (Server-Sent Events)",
        responses={429: {"description": "the tenant holds max_streams_per_tenant tails already"}},
    )
    async def stream(
        request: Request,
        tenant: Tenant,
        kind: str | None = None,
        program: str | None = None,
        from_offset: int | None = Query(None, ge=0, description="default: the current end"),
        max_events: int | None = Query(None, ge=1, description="close after this many events"),
    ) -> StreamingResponse:
        if kind is not None and kind not in KINDS and kind != "dead_letter":
            raise HTTPException(422, f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
        runtime = runtime_of(request)
        slot = tails.take(tenant)
        if slot is None:
            raise HTTPException(
                429, f"tenant {tenant!r} has {tails.limit} live tails open (max_streams_per_tenant):"
                " close one before opening another", headers={"Retry-After": "5"},
            )
        start = runtime.log.end_offset() if from_offset is None else from_offset
        return StreamingResponse(
            tail(request, runtime.log, slot, tenant, start, kind, program, max_events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
            background=BackgroundTask(slot.release),  # also when the body never started
        )

    return router
