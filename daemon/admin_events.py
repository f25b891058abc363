"""Adaptation events the API appends on an admin's behalf (pin, unpin, canary, revert,
acknowledge): how they are built and made durable, shared by the routing and admin
endpoints."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from fastapi import HTTPException, Request

from adaptd.daemon.ingest import Limits, prepare
from adaptd.streams.events import new_id
from adaptd.streams.log import LogClosed, LogError

#: The ``source`` of every adaptation event an admin endpoint appends.
SOURCE = "adaptd.api"


def admin_event(tenant: str, action: str, program: str | None, route: str | None, reason: str,
                caused_by: list[str], details: dict[str, Any]) -> dict[str, Any]:
    """An ``adaptation`` event dict stamped now, with a new id and source ``adaptd.api``."""
    return {"id": str(new_id()), "ts": dt.datetime.now(dt.UTC).isoformat(), "kind": "adaptation",
            "tenant": tenant, "source": SOURCE, "attrs": {}, "action": action, "program": program,
            "route": route, "reason": reason, "caused_by": caused_by, "details": details}


async def append_admin_event(request: Request, tenant: str, event: dict[str, Any], limits: Limits) -> None:
    """Validate ``event`` and wait until the log made it durable.

    Raises:
        HTTPException: 500 when the event is invalid (a bug in the endpoint, not the
            caller's input), 503 with Retry-After when the log is closed or failing.
    """
    prepared = prepare([event], tenant=tenant, received=dt.datetime.now(dt.UTC), limits=limits,
                       allow_derived=True)
    if prepared.rejected:
        raise HTTPException(500, f"admin event invalid: {prepared.rejected[0]['reason']}")
    try:
        await asyncio.wrap_future(request.app.state.runtime.log.submit(prepared.records))
    except (LogClosed, LogError) as exc:
        raise HTTPException(503, f"log unavailable: {exc}", headers={"Retry-After": "1"}) from None
