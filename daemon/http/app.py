"""The daemon's HTTP API (FastAPI): ingest, read endpoints, live tail, health and stats.

``create_app(settings)`` is the one factory used by ``adaptd up`` and by the tests.  The
app opens its ``Runtime`` in the lifespan, so a graceful shutdown (uvicorn drains the
in-flight requests first) ends with the projector caught up and the log closed.
"""


import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from adaptd.daemon import __version__
from adaptd.daemon.config import Settings
from adaptd.daemon.http import otlp
from adaptd.daemon.http.admin import admin_router
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.http.optimize import optimization_router
from adaptd.daemon.http.routing import routing_router
from adaptd.daemon.http.tail import TailSlots, tail
from adaptd.daemon.ingest import IngestError, Limits, decompress, parse_items, prepare
from adaptd.daemon.runtime import Runtime
from adaptd.streams.events import KINDS, SCHEMA_VERSION, json_schema
from adaptd.streams.log import LogClosed, LogError


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
    limits = Limits(**settings.limits.model_dump())
    auth = Auth(settings)
    Tenant = auth.Tenant
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

    def runtime_of(request: Request) -> Runtime:
        return request.app.state.runtime

    @app.exception_handler(IngestError)
    async def _ingest_error(request: Request, exc: IngestError) -> Response:
        runtime_of(request).counters.add(getattr(request.state, "tenant", None), requests_refused=1)
        return ORJSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.post(
        "/v1/events",
        summary="Ingest a batch of events (JSON array or NDJSON, optionally gzip)",
        responses={413: {"description": "body or batch too large"}, 503: {"description": "log busy"}},
    )
    async def post_events(request: Request, tenant: Tenant) -> dict[str, Any]:
        """Answer only once every accepted event and dead letter is durable in the log."""
        runtime = runtime_of(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise IngestError(413, f"body of {declared} bytes exceeds {limits.max_body_bytes} (limits.max_body_bytes)")
        body = await _read_body(request, limits.max_body_bytes)
        body = decompress(body, request.headers.get("content-encoding"), limits.max_body_bytes)
        received = dt.datetime.now(dt.UTC)
        prepared = await run_in_threadpool(
            _prepare_body, body, request.headers.get("content-type"), tenant, received, limits
        )
        if prepared.records:
            try:
                await asyncio.wrap_future(runtime.log.submit(prepared.records))
            except LogClosed:
                raise HTTPException(503, "daemon is shutting down: retry later", headers={"Retry-After": "1"}) from None
            except LogError as exc:
                runtime.counters.add(tenant, requests_refused=1, dropped=len(prepared.records))
                raise HTTPException(503, f"log unavailable: {exc}", headers={"Retry-After": "1"}) from None
        runtime.counters.add(
            tenant, events_acked=prepared.accepted, dead_letters=len(prepared.rejected) - prepared.suppressed,
            dead_letters_suppressed=prepared.suppressed, events_future=prepared.future, batches_acked=1,
        )
        return {"accepted": prepared.accepted, "rejected": prepared.rejected}

    @app.post(
        "/v1/traces",
        summary="Ingest OTLP/HTTP traces (protobuf or JSON, optionally gzip)",
        response_class=Response,
        responses={
            200: {"description": "ExportTraceServiceResponse (partial_success when spans were rejected)"},
            400: {"description": "malformed request (google.rpc.Status)"},
            413: {"description": "body or batch too large"}, 415: {"description": "unsupported content type"},
            503: {"description": "log busy"},
        },
    )
    async def post_traces(request: Request, tenant: Tenant) -> Response:
        """OTLP/HTTP: answer only once the spans' events and dead letters are durable in the log."""
        runtime = runtime_of(request)
        fmt = otlp.JSON
        try:
            fmt = otlp.body_format(request.headers.get("content-type"))
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
                raise IngestError(
                    413, f"body of {declared} bytes exceeds {limits.max_body_bytes} (limits.max_body_bytes)"
                )
            body = await _read_body(request, limits.max_body_bytes)
            body = decompress(body, request.headers.get("content-encoding"), limits.max_body_bytes)
            batch = await run_in_threadpool(
                otlp.ingest, body, fmt, tenant=tenant, received=dt.datetime.now(dt.UTC), limits=limits,
                capture_content=settings.otlp.capture_content,
            )
            if batch.records:
                try:
                    await asyncio.wrap_future(runtime.log.submit(batch.records))
                except LogClosed:
                    raise IngestError(503, "daemon is shutting down: retry later") from None
                except LogError as exc:
                    runtime.counters.add(tenant, dropped=len(batch.records))
                    raise IngestError(503, f"log unavailable: {exc}") from None
        except IngestError as exc:
            runtime.counters.add(tenant, requests_refused=1)
            retry = {"Retry-After": "1"} if exc.status == 503 else None
            return Response(otlp.encode_status(exc.status, exc.reason, fmt), status_code=exc.status,
                            media_type=otlp.MEDIA_TYPES[fmt], headers=retry)
        runtime.counters.add(
            tenant, events_acked=batch.accepted_events, dead_letters=batch.dead_letters - batch.suppressed,
            dead_letters_suppressed=batch.suppressed, events_future=batch.future, batches_acked=1,
        )
        return Response(otlp.encode_response(batch, fmt), media_type=otlp.MEDIA_TYPES[fmt])

    @app.get("/v1/health", summary="Liveness: the process answers (see /v1/ready for whether it works)")
    async def health(request: Request, tenant: Tenant) -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "schema_version": SCHEMA_VERSION}

    @app.get(
        "/v1/ready",
        summary="Readiness: 200 when events can be acknowledged and get projected, else 503 with the reasons",
        responses={503: {"description": "not ready: the log refuses appends (disk fault), or the projector"
                                        " or the processors are failing"}},
    )
    async def ready(request: Request, tenant: Tenant) -> Response:
        """Route traffic on this, not on /v1/health: a daemon whose disk is full is alive but not ready."""
        reasons = await run_in_threadpool(runtime_of(request).readiness)
        if reasons:
            return ORJSONResponse({"status": "not ready", "reasons": reasons}, status_code=503,
                                  headers={"Retry-After": "1"})
        return ORJSONResponse({"status": "ready", "reasons": []})

    @app.get("/v1/stats", summary="Counters: the caller's tenant's; every counter (acked, lag, ...) for admins")
    async def stats(request: Request, caller: auth.Identity) -> dict[str, Any]:
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

    @app.get("/v1/schema", summary="JSON Schema of the event union")
    async def schema(tenant: Tenant) -> dict[str, Any]:
        return json_schema()

    @app.get("/v1/executions", summary="Executions, newest first, with filters and pagination")
    async def executions(
        request: Request,
        tenant: Tenant,
        program: str | None = None,
        module: str | None = None,
        route: str | None = None,
        status: str | None = Query(None, pattern="^(ok|error)$"),
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        store = runtime_of(request).store
        try:
            rows, next_cursor = await run_in_threadpool(
                store.executions, tenant, program=program, module=module, route=route,
                status=status, since=since, until=until, limit=limit, cursor=cursor,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"items": rows, "next_cursor": next_cursor}

    @app.get("/v1/programs", summary="Summary per program, by name (pages of at most 1000)")
    async def programs(
        request: Request, tenant: Tenant, limit: int = Query(1000, ge=1, le=1000),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
    ) -> dict[str, Any]:
        store = runtime_of(request).store
        rows = await run_in_threadpool(lambda: store.program_summary(tenant, limit=limit, after=cursor))
        return {"items": rows, "next_cursor": rows[-1]["program"] if len(rows) == limit else None}

    windows = settings.processors.history_windows

    @app.get("/v1/history", summary="Closed performance windows per key, newest first")
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

    app.include_router(routing_router(settings, auth))
    app.include_router(optimization_router(auth))
    app.include_router(admin_router(settings, auth))

    @app.get("/v1/signals", summary="Anomaly, drift and breaker signals, newest first")
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

    @app.get(
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

    return app


def _prepare_body(body: bytes, content_type: str | None, tenant: str, received: dt.datetime, limits: Limits):
    return prepare(parse_items(body, content_type), tenant=tenant, received=received, limits=limits)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestError(413, f"body exceeds {limit} bytes (limits.max_body_bytes): send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)
