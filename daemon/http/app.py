"""The daemon's HTTP API (FastAPI): ingest, read endpoints, live tail, health and stats.

``create_app(settings)`` is the one factory used by ``adaptd up`` and by the tests.  The
app opens its ``Runtime`` in the lifespan, so a graceful shutdown (uvicorn drains the
in-flight requests first) ends with the projector caught up and the log closed.
"""


import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from adaptd.daemon import __version__
from adaptd.daemon.config import Settings
from adaptd.daemon.http.admin import admin_router
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.http.export import export_router
from adaptd.daemon.http.ingest_routes import ingest_router, runtime_of
from adaptd.daemon.http.metrics import metrics_router
from adaptd.daemon.http.ops import ops_router
from adaptd.daemon.http.optimize import optimization_router
from adaptd.daemon.http.reads import reads_router
from adaptd.daemon.http.retention import retention_router
from adaptd.daemon.http.routing import routing_router
from adaptd.daemon.http.strict_query import strict_query
from adaptd.daemon.http.tail import TailSlots
from adaptd.daemon.http.traces import traces_router
from adaptd.daemon.ingest import IngestError
from adaptd.daemon.runtime import Runtime


class ORJSONResponse(JSONResponse):
    """JSON responses through orjson (UUIDs and datetimes serialize natively)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app for ``settings``.

    Args:
        settings: the daemon settings.
        runtime: an already opened runtime; when None the app opens one at start-up.
            Either way the app closes it at shutdown.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal runtime
        if runtime is None:
            runtime = await run_in_threadpool(Runtime, settings)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await run_in_threadpool(runtime.close)

    app = FastAPI(
        title="adaptd",
        version=__version__,
        summary="Event-sourced telemetry and adaptation daemon for DSPy and LLM programs",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        # served below behind the tenant dependency: open only when no tenants are configured
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    auth = Auth(settings)
    Tenant = Annotated[str, Depends(auth.tenant)]
    tails = TailSlots(settings.max_streams_per_tenant)
    app.state.tails = tails

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(tenant: Tenant) -> Response:
        """The OpenAPI document (needs a token when tenants are configured)."""
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(tenant: Tenant) -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(tenant: Tenant) -> Response:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    @app.exception_handler(IngestError)
    async def _ingest_error(request: Request, exc: IngestError) -> Response:
        runtime_of(request).counters.add(getattr(request.state, "tenant", None), requests_refused=1)
        return ORJSONResponse({"detail": exc.reason}, status_code=exc.status)

    app.include_router(ingest_router(settings, auth))
    # every read (GET) of these answers 422 to an unknown query parameter
    strict = [strict_query(auth)]
    app.include_router(ops_router(auth, tails), dependencies=strict)
    app.include_router(metrics_router(auth), dependencies=strict)
    app.include_router(reads_router(settings, auth))
    app.include_router(traces_router(auth))
    app.include_router(export_router(auth))
    app.include_router(retention_router(settings.retention, auth))
    app.include_router(routing_router(settings, auth), dependencies=strict)
    app.include_router(optimization_router(auth), dependencies=strict)
    app.include_router(admin_router(settings, auth), dependencies=strict)
    return app
