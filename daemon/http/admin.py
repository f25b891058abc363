"""Dashboard and admin endpoints: the adaptation timeline, revert, signal acknowledgement,
every routing table at once, and the optimizer runs.

Write endpoints are admin-only (``Auth.Admin``: a tenant without ``admin = true`` gets
403) and never edit rows: they append an ``adaptation`` event (source ``adaptd.api``) to
the log, so the effect survives restarts and a replay rebuilds it.

- ``POST /v1/adaptations/{id}/revert`` appends the inverse admin action (``revert``),
  with ``details.reverts`` = the reverted id and ``caused_by`` = [that id];
- ``POST /v1/signals/{id}/ack`` appends action ``signal_ack`` with ``caused_by`` = [the
  signal id] and ``details`` = ``{signal_id, incident_id, signal_type}``.  The routing
  policy ignores actions it does not know, so an acknowledgement changes no route.
"""

# No `from __future__ import annotations`: FastAPI must see the local Tenant dependency
# in the endpoint signatures as a real object, not as a string it cannot resolve.
import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.revert import Inverse, NotRevertible, inverse
from adaptd.daemon.adaptation.table import default_table
from adaptd.daemon.admin_events import SOURCE, admin_event, append_admin_event
from adaptd.daemon.config import Settings
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.ingest import Limits
from adaptd.daemon.readmodel import admin_queries as queries
from adaptd.daemon.readmodel.store import Store

ACK = "signal_ack"


class Note(BaseModel):
    """Body of a revert or an acknowledgement (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="why, for the timeline")


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HTTPException(422, f"{what} id {text!r} is not a UUID") from None


async def _owned_row(store: Store, table: str, key: uuid.UUID, tenant: str, what: str, text: str) -> dict[str, Any]:
    """The ``table`` row with id ``key`` if it is ``tenant``'s; 404 otherwise (another
    tenant's row is not revealed)."""
    row = await run_in_threadpool(store.get, table, key, tenant)
    if row is None:
        raise HTTPException(404, f"no {what} {text} (it may not be projected yet: retry)")
    return row


def admin_router(settings: Settings, auth: Auth) -> APIRouter:
    """The endpoints above; ``auth`` holds the app's bearer-token tenant (``auth.Tenant``)
    and admin (``auth.Admin``) dependencies."""
    programs: dict[str, ProgramRouting] = {p.program: p for p in settings.routing}
    limits = Limits(**settings.limits.model_dump())
    router = APIRouter()
    # The same dependencies as ``auth.Tenant`` / ``auth.Admin``, spelled as local aliases so
    # type checkers see the parameters as ``str`` (instance attributes are not types).
    Tenant = Annotated[str, Depends(auth.tenant)]
    Admin = Annotated[str, Depends(auth.admin)]

    def store_of(request: Request) -> Store:
        return request.app.state.runtime.store

    async def append(request: Request, tenant: str, event: dict[str, Any]) -> None:
        await append_admin_event(request, tenant, event, limits)

    event = admin_event

    @router.get("/v1/routing", summary="Every configured program's current routing table and breakers")
    async def all_tables(request: Request, tenant: Tenant) -> dict[str, Any]:
        def read() -> list[dict[str, Any]]:
            now = dt.datetime.now(dt.UTC).isoformat()
            return [store_of(request).routing_table(tenant, name) or default_table(routing, now)
                    for name, routing in programs.items()]
        return {"items": await run_in_threadpool(read)}

    @router.get("/v1/adaptations", summary="Timeline of adaptations (policy and admin), newest first")
    async def timeline(
        request: Request,
        tenant: Tenant,
        program: str | None = None,
        action: list[str] | None = Query(None, description="keep only these actions (repeatable)"),
        source: str | None = Query(None, description="adaptd.policy or adaptd.api"),
        limit: int = Query(100, ge=1, le=1000),
        details: bool = Query(True, description="include details (a routing table's is the whole table)"),
    ) -> dict[str, Any]:
        rows = await run_in_threadpool(queries.adaptations, store_of(request), tenant, program=program, actions=action,
                                       source=source, limit=limit, details=details,
                                       admin_source=SOURCE)
        return {"items": rows}

    @router.post("/v1/adaptations/{adaptation_id}/revert", status_code=202,
                 summary="Admin: append the inverse of an adaptation (422 when it has none)")
    async def revert(request: Request, adaptation_id: str, tenant: Admin,
                     body: Note | None = None) -> dict[str, Any]:
        key = _uuid(adaptation_id, "adaptation")
        store = store_of(request)
        row = await _owned_row(store, "adaptations", key, tenant, "adaptation", adaptation_id)
        done = await run_in_threadpool(queries.revert_of, store, tenant, str(key), SOURCE)
        if done is not None:
            raise HTTPException(409, f"adaptation {adaptation_id} was already reverted by {done}")
        routing = programs.get(row["program"] or "")
        if row["action"] in ("pin", "unpin", "canary", "promote", "rollback") and routing is None:
            raise HTTPException(422, f"program {row['program']!r} has no [[routing]] configuration any more:"
                                     " its routes cannot be changed")
        earlier = await run_in_threadpool(queries.routing_actions_before, store, tenant, row["program"],
                                          row["log_offset"])
        try:
            inv: Inverse = inverse(row, earlier)
        except NotRevertible as exc:
            raise HTTPException(422, str(exc)) from None
        if inv.route is not None and routing is not None and inv.route not in {r.name for r in routing.routes}:
            raise HTTPException(422, f"route {inv.route!r} is no longer configured for {row['program']!r}")
        why = f"revert of {row['action']}" + (f" {row['route']}" if row["route"] else "") + f" ({adaptation_id})"
        if body is not None and body.reason:
            why += f": {body.reason}"
        new = event(tenant, inv.action, row["program"], inv.route, why, [str(key)],
                    {**inv.details, "reverts": str(key)})
        await append(request, tenant, new)
        return {"id": new["id"], "reverts": str(key), "action": inv.action, "program": row["program"],
                "route": inv.route}

    @router.post("/v1/signals/{signal_id}/ack", status_code=202,
                 summary="Admin: acknowledge a signal (appended to the log as a signal_ack adaptation)")
    async def ack(request: Request, signal_id: str, tenant: Admin,
                  body: Note | None = None) -> dict[str, Any]:
        key = _uuid(signal_id, "signal")
        store = store_of(request)
        signal = await _owned_row(store, "signals", key, tenant, "signal", signal_id)
        done = await run_in_threadpool(queries.ack_of, store, tenant, ACK, str(key))
        if done is not None:
            raise HTTPException(409, f"signal {signal_id} was already acknowledged by {done}")
        reason = f"acknowledged {signal['signal_type']} signal" + (f": {body.reason}" if body and body.reason else "")
        new = event(tenant, ACK, signal["program"], signal["route"], reason, [str(key)],
                    {"signal_id": str(key), "incident_id": signal["incident_id"],
                     "signal_type": signal["signal_type"]})
        await append(request, tenant, new)
        return {"id": new["id"], "signal_id": str(key)}

    @router.get("/v1/optimizer/runs", summary="Optimizer run events, newest first")
    async def optimizer_runs(
        request: Request,
        tenant: Tenant,
        program: str | None = None,
        job_id: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        rows = await run_in_threadpool(queries.optimizer_runs, store_of(request), tenant, program=program,
                                       job_id=job_id, limit=limit)
        return {"items": rows}

    return router
