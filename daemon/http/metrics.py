"""``GET /metrics``: the daemon's figures in the Prometheus text exposition format.

The mapping lives in ``adaptd.daemon.metrics``; this module only decides who sees what,
with the rules of ``/v1/stats``: with tenants configured a bearer token is required (401
otherwise); an admin (or anyone when no tenants are configured) gets every series; a
tenant that is not an admin only its own series (``tenant="<its name>"``) and
``adaptd_ready`` / ``adaptd_uptime_seconds``, none of the log, projector, processor or
alert figures, which tell about the other tenants' traffic.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and ``Caller`` is local to the router function.

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.http.auth import DEFAULT_TENANT, Auth, Identity
from adaptd.daemon.http.ingest_routes import runtime_of
from adaptd.daemon.metrics import CONTENT_TYPE, exposition


def metrics_router(auth: Auth) -> APIRouter:
    """``/metrics`` for a Prometheus scraper (give it the token of an admin tenant)."""
    router = APIRouter()
    Caller = Annotated[Identity, Depends(auth.identity)]

    @router.get(
        "/metrics",
        summary="Prometheus metrics: the caller's tenant's series; every series (log, lags, processors) for admins",
        response_class=Response,
        responses={200: {"description": "Prometheus text exposition format 0.0.4",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request, caller: Caller) -> Response:
        """Counters ``adaptd_*_total`` per tenant, gauges for offsets, lags and readiness;
        read at scrape time, so a scrape costs one ``/v1/stats``."""
        runtime = runtime_of(request)
        tenants = [t.name for t in runtime.settings.tenants] or [DEFAULT_TENANT]
        if not caller.admin:
            tenants = [caller.tenant]
        body = await run_in_threadpool(
            exposition, runtime.stats, tenants=tenants, viewer=None if caller.admin else caller.tenant,
        )
        return Response(body, media_type=CONTENT_TYPE)

    return router
