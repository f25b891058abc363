"""``GET /v1/export``: one table of the caller's tenant as a Parquet or NDJSON file,
written by DuckDB's ``COPY`` into a temporary directory under the data dir and streamed
back (the directory is removed once sent).  At most ``MAX_EXPORTS`` run at once; one more
answers 429."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run
# time, and ``Tenant`` is local to the router function.

import datetime as dt
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.http.auth import Auth
from adaptd.daemon.http.ingest_routes import runtime_of
from adaptd.daemon.http.strict_query import strict_query
from adaptd.daemon.readmodel.export_queries import copy_table
from adaptd.daemon.readmodel.store import Store

#: Exports running at once (each holds a DuckDB scan and a file); one more answers 429.
MAX_EXPORTS = 2
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "ndjson": "application/x-ndjson"}
Table = Literal["adaptations", "executions", "feedback", "lm_calls", "optimizer_runs", "perf_windows",
                "route_decisions", "signals"]


def export_router(auth: Auth) -> APIRouter:
    """``GET /v1/export?table=T&format=parquet|ndjson&since=&until=``."""
    router = APIRouter(dependencies=[strict_query(auth)])
    Tenant = Annotated[str, Depends(auth.tenant)]
    slots = threading.BoundedSemaphore(MAX_EXPORTS)

    @router.get(
        "/v1/export",
        summary="One table of the caller's tenant as Parquet or NDJSON (DuckDB COPY), in log order",
        response_class=FileResponse,
        responses={200: {"description": "the file; header X-Adaptd-Rows holds its row count",
                         "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                     for t in MEDIA_TYPES.values()}}},
    )
    async def export(
        request: Request,
        tenant: Tenant,
        table: Table = Query(..., description="the read-model table"),
        format: Literal["parquet", "ndjson"] = Query("parquet", description="file format"),
        since: dt.datetime | None = Query(None, description="inclusive lower bound on ts (naive = UTC)"),
        until: dt.datetime | None = Query(None, description="exclusive upper bound on ts (naive = UTC)"),
    ) -> FileResponse:
        if not slots.acquire(blocking=False):
            raise HTTPException(429, f"{MAX_EXPORTS} exports are running: retry when one has finished",
                                headers={"Retry-After": "5"})
        runtime = runtime_of(request)
        work = Path(tempfile.mkdtemp(prefix="export-", dir=_export_dir(Path(runtime.settings.data_dir))))
        path = work / f"{table}.{format}"
        try:
            rows = await run_in_threadpool(_copy, runtime.store, table, format, path, tenant, since, until)
        except ValueError as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise HTTPException(422, str(exc)) from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            slots.release()
        return FileResponse(path, media_type=MEDIA_TYPES[format], filename=path.name,
                            headers={"X-Adaptd-Rows": str(rows)},
                            background=BackgroundTask(shutil.rmtree, work, ignore_errors=True))

    return router


def _export_dir(data_dir: Path) -> Path:
    """``data_dir/exports``, created if needed (files there live for one request)."""
    target = data_dir / "exports"
    target.mkdir(parents=True, exist_ok=True)
    return target


def _copy(store: Store, table: str, fmt: str, path: Path, tenant: str, since: dt.datetime | None,
          until: dt.datetime | None) -> int:
    cur = store.reader()
    try:
        return copy_table(cur, table, fmt, path, tenant, since, until)
    finally:
        cur.close()
