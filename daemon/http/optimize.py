"""HTTP endpoints of the optimization feature (``/v1/optimization/...``).

Queueing a job is an admin action (``Auth.Admin``).  Jobs run in the service's worker thread; handlers only validate, query and append, each
in the thread pool (DuckDB and the log block).
"""


from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from adaptd.daemon.http.auth import Auth
from adaptd.daemon.optimize.ensemble import MAX_K, plan_ensemble
from adaptd.daemon.optimize.harvest import harvest
from adaptd.daemon.optimize.jobs import JobError, slug
from adaptd.daemon.optimize.recommend import RecommendError, Situation, missing_packages, recommend
from adaptd.daemon.readmodel import optimizer_queries as queries


class RecommendBody(BaseModel):
    """Body of ``POST /v1/optimization/recommend``: a registered ``program`` (its examples
    and registration fill in the rest) and/or the situation's fields, which win."""

    model_config = ConfigDict(extra="forbid")

    program: str | None = None
    # Upper bounds keep every estimate a finite number the JSON answer can hold (orjson
    # refuses integers past 64 bits); they are far beyond any real optimization run.
    train_size: int | None = Field(None, ge=0, le=100_000_000)
    dev_size: int | None = Field(None, ge=0, le=100_000_000)
    has_metric: bool | None = None
    feedback_metric: bool | None = None
    reflection_lm: bool | None = None
    finetunable: bool | None = None
    budget_usd: float | None = Field(None, ge=0, le=1e9)
    budget_lm_calls: int | None = Field(None, ge=1, le=10**12)
    calls_per_example: float | None = Field(None, gt=0, le=10_000)
    cost_per_call_usd: float | None = Field(None, ge=0, le=1_000)
    optimizer: str | None = Field(None, description="override: use this optimizer")
    ensemble: int | None = Field(None, ge=1, le=MAX_K, description="also plan an ensemble of this many optimizers")


class JobBody(BaseModel):
    """Body of ``POST /v1/optimization/jobs``."""

    model_config = ConfigDict(extra="forbid")

    program: str
    optimizer: str | None = Field(None, description="default: the recommended one")
    params: dict[str, Any] = Field(default_factory=dict, description="optimizer keyword arguments")
    budget_usd: float | None = Field(None, ge=0, description="default and ceiling: the program's configured one")
    budget_lm_calls: int | None = Field(None, ge=1, description="default and ceiling: the program's configured one")
    ensemble: int | None = Field(None, ge=1, le=MAX_K, description=(
        "run the top-k optimizers that fit the one budget and keep the best on the devset (excludes optimizer"
        " and params)"))


def _service(request: Request) -> Any:
    service = getattr(request.app.state.runtime, "optimize", None)
    if service is None:
        raise HTTPException(404, "no [[optimize]] programs are configured: register one in the config")
    return service


def _job_error(exc: JobError) -> HTTPException:
    return HTTPException(exc.status, str(exc), headers={"Retry-After": "5"} if exc.status in (429, 503) else None)


def optimization_router(auth: Auth) -> APIRouter:
    """The ``/v1/optimization`` endpoints; ``auth`` holds the app's bearer-token tenant
    (``auth.Tenant``) and admin (``auth.Admin``: creating a job) dependencies."""
    router = APIRouter()
    # The same dependencies as ``auth.Tenant`` / ``auth.Admin``, spelled as local aliases so
    # type checkers see the parameters as ``str`` (instance attributes are not types).
    Tenant = Annotated[str, Depends(auth.tenant)]
    Admin = Annotated[str, Depends(auth.admin)]

    @router.post("/v1/optimization/recommend", summary="Recommend a DSPy optimizer (reasoning, alternatives, cost)")
    async def post_recommend(request: Request, tenant: Tenant, body: RecommendBody) -> dict[str, Any]:
        runtime = request.app.state.runtime

        def work() -> dict[str, Any]:
            given = body.model_dump(exclude_none=True, exclude={"program", "optimizer", "ensemble"})
            fields: dict[str, Any] = {}
            if body.program is not None:
                service = getattr(runtime, "optimize", None)
                if service is None:
                    raise JobError(404, "no [[optimize]] programs are configured: pass train_size instead of program")
                entry = service.jobs.entry(body.program)
                train, dev, _ = service.jobs.examples(tenant, entry)
                s = service.jobs.situation(entry, len(train), len(dev), entry.budget_usd, entry.budget_lm_calls)
                fields = dict(s.__dict__)
            elif "train_size" not in given:
                raise JobError(422, "give a registered program or train_size")
            fields.update(given)
            fields.setdefault("missing_packages", missing_packages())
            situation = Situation(**fields)
            history = queries.history(runtime.store, tenant)
            if body.ensemble is not None and body.optimizer is not None:
                raise JobError(422, "ensemble and optimizer exclude each other: an ensemble picks its optimizers")
            rec = recommend(situation, history, override=body.optimizer)
            out = {"situation": situation.__dict__, **rec.to_dict()}
            if body.ensemble is not None:
                out["ensemble"] = plan_ensemble(situation, history, body.ensemble).to_dict()
            return out

        try:
            return await run_in_threadpool(work)
        except JobError as exc:
            raise _job_error(exc) from None
        except RecommendError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.post("/v1/optimization/jobs", status_code=202,
                 summary="Queue an optimization job, or with ensemble=k the top-k optimizers within one budget")
    async def post_job(request: Request, tenant: Admin, body: JobBody) -> dict[str, Any]:
        service = _service(request)
        try:
            if body.ensemble is None:
                return await run_in_threadpool(service.jobs.create, tenant, body.program, optimizer=body.optimizer,
                                               params=body.params, budget_usd=body.budget_usd,
                                               budget_lm_calls=body.budget_lm_calls)
            if body.optimizer is not None or body.params:
                raise JobError(422, "ensemble excludes optimizer and params: an ensemble picks its optimizers"
                               " (and their default params); drop one or the other")
            return await run_in_threadpool(service.jobs.create_ensemble, tenant, body.program, body.ensemble,
                                           budget_usd=body.budget_usd, budget_lm_calls=body.budget_lm_calls)
        except JobError as exc:
            raise _job_error(exc) from None

    @router.get("/v1/optimization/jobs", summary="Jobs (each one's latest state), newest first")
    async def get_jobs(request: Request, tenant: Tenant, program: str | None = None,
                       status: str | None = Query(None, pattern="^(queued|running|succeeded|failed|interrupted|"
                                                  "budget_exhausted)$"),
                       limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        store = request.app.state.runtime.store
        rows = await run_in_threadpool(queries.latest_jobs, store, tenant, program, limit,
                                       (status,) if status else None)
        return {"items": rows}

    @router.get("/v1/optimization/jobs/{job_id}", summary="One job: its state and every event")
    async def get_job(request: Request, tenant: Tenant, job_id: str) -> dict[str, Any]:
        events = await run_in_threadpool(queries.job_events, request.app.state.runtime.store, tenant, job_id)
        if not events:
            raise HTTPException(404, f"no job {job_id!r}: list jobs with GET /v1/optimization/jobs")
        return {"job_id": job_id, "status": events[-1]["status"], "latest": events[-1], "events": events}

    @router.get("/v1/optimization/programs/{program}", summary="A program's live version, slots and recent jobs")
    async def get_program(request: Request, tenant: Tenant, program: str) -> dict[str, Any]:
        service = _service(request)
        try:
            return await run_in_threadpool(service.program_state, tenant, program)
        except JobError as exc:
            raise _job_error(exc) from None

    @router.get("/v1/optimization/programs/{program}/timeline",
                summary="Drift signals, jobs and rollout steps of a program, in log order")
    async def get_timeline(request: Request, tenant: Tenant, program: str,
                           limit: int = Query(500, ge=1, le=1000)) -> dict[str, Any]:
        rows = await run_in_threadpool(queries.timeline, request.app.state.runtime.store, tenant, program, limit)
        for row in rows:  # details is JSON text out of the UNION
            if isinstance(row.get("details"), str):
                row["details"] = orjson.loads(row["details"])
        return {"items": rows}

    @router.get("/v1/optimization/programs/{program}/versions/{version}",
                summary="A saved program version (DSPy JSON state, for Module.load_state)")
    async def get_version(request: Request, tenant: Tenant, program: str, version: str) -> Response:
        service = _service(request)
        try:
            service.jobs.entry(program)
        except JobError as exc:
            raise _job_error(exc) from None
        if not version.startswith("v") or not version[1:].isdigit():
            raise HTTPException(422, f"version {version!r} is not a saved version name (v1, v2, ...)")
        path = Path(service.jobs.root) / "programs" / slug(tenant) / slug(program) / f"{version}.json"
        try:
            data = await run_in_threadpool(path.read_bytes)
        except FileNotFoundError:
            raise HTTPException(404, f"program {program!r} has no saved version {version!r}") from None
        return Response(data, media_type="application/json")

    @router.get("/v1/optimization/programs/{program}/trainset", summary="Harvested examples (JSON lines)")
    async def get_trainset(request: Request, tenant: Tenant, program: str,
                           threshold: float | None = None, limit: int = Query(1000, ge=1, le=100_000)) -> Response:
        service = _service(request)
        try:
            entry = service.jobs.entry(program)
        except JobError as exc:
            raise _job_error(exc) from None
        cut = entry.harvest_threshold if threshold is None else threshold
        rows = await run_in_threadpool(queries.harvest_rows, request.app.state.runtime.store, tenant, program, cut,
                                       limit)
        got = harvest(rows)
        body = b"".join(orjson.dumps(e) + b"\n" for e in got.examples)
        return Response(body, media_type="application/x-ndjson", headers={
            "X-Harvested": str(len(got.examples)), "X-Duplicates": str(got.duplicates),
            "X-Not-Captured": str(got.not_captured)})

    return router
