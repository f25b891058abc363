"""The ingest endpoints: ``POST /v1/events`` (JSON array or NDJSON) and ``POST /v1/traces``
(OTLP/HTTP).  Each answers only once what it accepted, and the dead letters of what it
refused, are durable in the log."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and ``Tenant`` is local to the router function.

import asyncio
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.config import Settings
from adaptd.daemon.http import otlp
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.ingest import IngestError, Limits, Prepared, decompress, parse_items, prepare
from adaptd.daemon.runtime import Runtime
from adaptd.streams.log import LogClosed, LogError


def ingest_router(settings: Settings, auth: Auth) -> APIRouter:
    """The two ingest routes, with ``settings.limits`` and the caller's tenant from ``auth``.

    A refused request (4xx) writes nothing; the app's ``IngestError`` handler counts it.
    """
    router = APIRouter()
    Tenant = Annotated[str, Depends(auth.tenant)]
    limits = Limits(**settings.limits.model_dump())

    @router.post(
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

    @router.post(
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

    return router


def runtime_of(request: Request) -> Runtime:
    """The app's runtime (opened by its lifespan)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def _prepare_body(body: bytes, content_type: str | None, tenant: str, received: dt.datetime,
                  limits: Limits) -> Prepared:
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
