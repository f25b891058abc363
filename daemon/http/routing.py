"""Routing endpoints: the current table per program (with ETag long-polling), breaker
states, and the admin actions (pin, unpin, canary, promote, rollback; admin tenants only).

Admin actions are ``adaptation`` events appended to the log (source ``adaptd.api``); the
routing policy reads them from there like everything else, so they replay too.
"""

import asyncio
import datetime as dt
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.table import default_table
from adaptd.daemon.admin_events import admin_event, append_admin_event
from adaptd.daemon.config import Settings
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.ingest import Limits

#: Longest a long-poll (``?wait=``) holds the request.
MAX_WAIT_S = 30.0


def longest_hold_s(shutdown_timeout_s: float) -> float:
    """How long a long-poll may hold a request: ``MAX_WAIT_S``, but at most half of the
    graceful-shutdown timeout uvicorn is given (``int(max(1, shutdown_timeout_s))``, as
    ``http.server.build_server`` sets it), so that a stop never has to cancel one."""
    return min(MAX_WAIT_S, int(max(1, shutdown_timeout_s)) / 2)


class AdminAction(BaseModel):
    """Body of ``POST /v1/routing/{program}/{action}``."""

    model_config = ConfigDict(extra="forbid")

    route: str | None = Field(None, description="the route acted on (all actions but unpin)")
    share: float | None = Field(None, gt=0, le=0.5, description="canary share (default 0.05)")
    reason: str | None = Field(None, max_length=500, description="why, for the timeline")


def routing_router(settings: Settings, auth: Auth) -> APIRouter:
    """The routing endpoints for ``settings.routing``; ``auth`` holds the app's bearer-token
    tenant (``auth.Tenant``) and admin (``auth.Admin``, for the actions) dependencies."""
    programs: dict[str, ProgramRouting] = {p.program: p for p in settings.routing}
    hold_s = longest_hold_s(settings.shutdown_timeout_s)
    limits = Limits(**settings.limits.model_dump())
    router = APIRouter()
    # The same dependencies as ``auth.Tenant`` / ``auth.Admin``, spelled as local aliases so
    # type checkers see the parameters as ``str`` (instance attributes are not types).
    Tenant = Annotated[str, Depends(auth.tenant)]
    Admin = Annotated[str, Depends(auth.admin)]

    def configured(program: str) -> ProgramRouting:
        routing = programs.get(program)
        if routing is None:
            known = ", ".join(sorted(programs)) or "none"
            raise HTTPException(404, f"program {program!r} has no [[routing]] configuration (configured: {known})")
        return routing

    def current(request: Request, tenant: str, routing: ProgramRouting) -> dict[str, Any]:
        table = request.app.state.runtime.store.routing_table(tenant, routing.program)
        return table or default_table(routing, dt.datetime.now(dt.UTC).isoformat())

    @router.get("/v1/routing/{program}", summary="The program's current routing table (ETag = version)")
    async def get_table(
        request: Request,
        tenant: Tenant,
        program: str,
        wait: float = Query(0.0, ge=0, le=MAX_WAIT_S, description="long-poll: with If-None-Match, wait up to this many seconds for a new version"),
    ) -> Response:
        routing = configured(program)
        seen = request.headers.get("if-none-match")
        # Held no longer than half the graceful-shutdown budget: a daemon told to stop
        # answers every long-poll (304, then closes the connection) before uvicorn's
        # graceful timeout would cancel it into a 500. Clients simply poll again.
        deadline = time.monotonic() + min(wait, hold_s)
        while True:
            table = await run_in_threadpool(current, request, tenant, routing)
            etag = f'"{table["version"]}"'
            if etag != seen:
                return Response(orjson.dumps(table), media_type="application/json", headers={"ETag": etag})
            if time.monotonic() >= deadline or await request.is_disconnected():
                return Response(status_code=304, headers={"ETag": etag})
            await asyncio.sleep(0.25)

    @router.get("/v1/routing/{program}/breakers", summary="Each route's latest circuit-breaker transition")
    async def get_breakers(request: Request, tenant: Tenant, program: str) -> dict[str, Any]:
        routing = configured(program)
        rows = await run_in_threadpool(request.app.state.runtime.store.breakers, tenant, routing.program)
        latest = {r["route"]: r for r in rows}
        state = {"breaker_open": "open", "breaker_half_open": "half_open", "breaker_close": "closed"}
        return {"items": [{"route": r.name, "state": state.get(latest.get(r.name, {}).get("action"), "closed"),
                           "since": latest.get(r.name, {}).get("ts"), "reason": latest.get(r.name, {}).get("reason")}
                          for r in routing.routes]}

    @router.post("/v1/routing/{program}/{action}", status_code=202,
                 summary="Admin: pin / unpin / canary / promote / rollback a route (appended to the log)")
    async def admin(
        request: Request,
        tenant: Admin,
        program: str,
        action: Literal["pin", "unpin", "canary", "promote", "rollback"],
        body: AdminAction,
    ) -> dict[str, Any]:
        routing = configured(program)
        names = [r.name for r in routing.routes]
        if action != "unpin" and body.route not in names:
            raise HTTPException(422, f"{action} needs a route of {program!r}: one of {', '.join(names)}")
        if body.share is not None and action != "canary":
            raise HTTPException(422, "share only applies to canary")
        event = admin_event(tenant, action, program, body.route if action != "unpin" else None,
                            body.reason or f"admin {action}", [],
                            {"share": body.share if body.share is not None else 0.05} if action == "canary" else {})
        await append_admin_event(request, tenant, event, limits)
        return {"id": event["id"], "action": action, "program": program, "route": event["route"]}

    return router
