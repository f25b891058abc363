"""Retention of the read model while the daemon runs: a thread applies ``[retention]``
at start and every ``interval_s``, and an admin may apply it at once
(``POST /v1/retention/apply``, what ``adaptd retention apply`` calls).

Deletion goes a bounded batch at a time through the store (see
``adaptd.daemon.readmodel.retention_queries``): the projector waits at most one batch,
and ingest, which only appends to the log, never waits.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.config import RetentionSettings
from adaptd.daemon.http.auth import Auth
from adaptd.daemon.http.ingest_routes import runtime_of
from adaptd.daemon.http.strict_query import strict_query
from adaptd.daemon.readmodel.retention_queries import apply_ceiling, apply_retention, cutoffs
from adaptd.daemon.readmodel.store import Store

logger = logging.getLogger("adaptd.retention")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Retention:
    """Applies ``settings`` to a store, one application at a time, and remembers the
    last one (for ``GET /v1/retention``)."""

    def __init__(self, settings: RetentionSettings, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.runs = 0
        self.deleted_total: dict[str, int] = {}
        self.last: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """True when any table has a retention (days or a row ceiling)."""
        return bool(self.settings.days or self.settings.max_rows)

    def apply(self, store: Store) -> dict[str, Any]:
        """Apply the retention now: first the ages, then the row ceilings.

        Returns:
            ``{"at", "deleted", "cutoffs", "max_rows"}``: rows deleted per table named in
            ``days`` or ``max_rows`` (0 where nothing was due), the age cutoff per table
            of ``days``, and the ceilings.
        """
        with self._lock:
            now = self.clock()
            deleted = apply_retention(store, self.settings.days, now, self.settings.batch_rows)
            for table, n in apply_ceiling(store, self.settings.max_rows, self.settings.batch_rows).items():
                deleted[table] = deleted.get(table, 0) + n
            self.runs += 1
            for table, n in deleted.items():
                self.deleted_total[table] = self.deleted_total.get(table, 0) + n
            self.last = {"at": now.isoformat(), "deleted": dict(sorted(deleted.items())),
                         "cutoffs": {t: c.isoformat() for t, c in cutoffs(self.settings.days, now).items()},
                         "max_rows": dict(self.settings.max_rows)}
            return self.last

    def status(self) -> dict[str, Any]:
        """The settings, the number of applications, rows deleted in total per table and
        the last application (None before the first)."""
        with self._lock:
            return {"days": dict(self.settings.days), "max_rows": dict(self.settings.max_rows),
                    "interval_s": self.settings.interval_s,
                    "batch_rows": self.settings.batch_rows, "runs": self.runs,
                    "deleted_total": dict(self.deleted_total), "last": self.last}


def _loop(retention: Retention, store: Store, stop: threading.Event) -> None:
    """Apply at once, then every ``interval_s`` until ``stop``; a failed application is
    logged and retried at the next interval (the daemon keeps serving)."""
    while True:
        try:
            retention.apply(store)
        except Exception:
            logger.exception("retention failed; retrying in %.0f s", retention.settings.interval_s)
        if stop.wait(retention.settings.interval_s):
            return


def retention_router(settings: RetentionSettings, auth: Auth,
                     clock: Callable[[], dt.datetime] = _utcnow) -> APIRouter:
    """``GET /v1/retention`` and ``POST /v1/retention/apply`` (admins), and the lifespan
    that runs the periodic application when ``settings.days`` or ``max_rows`` names a table."""
    retention = Retention(settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # nested in the app's lifespan: the runtime is open here, and still open when the
        # thread is stopped below
        stop = threading.Event()
        thread = None
        if retention.configured:
            thread = threading.Thread(target=_loop, args=(retention, app.state.runtime.store, stop),
                                      name="adaptd-retention", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                await run_in_threadpool(thread.join, 60)

    router = APIRouter(dependencies=[strict_query(auth)], lifespan=lifespan)
    Admin = Annotated[str, Depends(auth.admin)]

    @router.get("/v1/retention", summary="Admin: the read model's retention settings and what it deleted")
    async def status(request: Request, tenant: Admin) -> dict[str, Any]:
        return retention.status()

    @router.post("/v1/retention/apply", summary="Admin: apply the retention now (every tenant's rows)")
    async def apply(request: Request, tenant: Admin) -> dict[str, Any]:
        """Deletes, per table of ``[retention] days``, the rows older than that many days."""
        return await run_in_threadpool(retention.apply, runtime_of(request).store)

    return router
