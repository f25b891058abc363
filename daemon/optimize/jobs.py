"""The job manager: optimizations run one at a time in a worker thread, persisted as events.

``create`` validates a request, snapshots its examples to
``data_dir/optimize/jobs/<job_id>/{train,dev}.jsonl``, picks the optimizer (the
recommender unless one is named) and appends the ``queued`` event, whose ``details``
hold the whole specification, before answering.  The worker (one thread, off the event
loop: the HTTP server never waits for an optimization) appends ``running`` when it
starts and at each stage, then the final status with scores, LM calls and cost.

**After a restart** (``_recover``, once the read model has caught up with the log) a
job is rebuilt from its own rows under the rules of ``recovery`` (tenant from the row,
example files inside its job folder, budgets capped by the config); one that breaks them
gets a ``failed`` event with the reason and is not run.  A job whose latest event is
``queued`` is queued again; one that was ``running`` gets an
``interrupted`` event and, when its program has ``resume = true`` and it is its first
attempt, a new ``queued`` event for attempt 2 carrying what attempt 1 had spent, so the
budget holds across attempts.  DSPy optimizers keep no checkpoints, so a resumed job
starts its optimization over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uuid_utils

from adaptd.daemon.optimize.budget import Budget
from adaptd.daemon.optimize.ensemble import choose, plan_ensemble
from adaptd.daemon.optimize.harvest import ExampleFileError, harvest, read_examples, split, write_examples
from adaptd.daemon.optimize.recommend import RecommendError, Situation, missing_packages, recommend, spec_of
from adaptd.daemon.optimize.records import Appender, AppendError, adaptation, optimizer_run
from adaptd.daemon.optimize.recovery import UntrustedJob, resume_spec
from adaptd.daemon.optimize.runner import RunResult, run_optimization
from adaptd.daemon.optimize.settings import OptimizeProgram
from adaptd.daemon.optimize.spec import JobSpec, slug
from adaptd.daemon.readmodel import optimizer_queries as queries

logger = logging.getLogger("adaptd.optimize")
_FINAL = ("succeeded", "failed", "budget_exhausted", "interrupted")


class JobError(Exception):
    """A job request is refused; ``status`` is the HTTP status, the message says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class JobManager:
    """Creates, runs and recovers optimization jobs (see the module docstring).

    Args:
        appender: appends events durably and waits for their projection.
        store: the read model (for harvesting, history and recovery).
        programs: the registered programs by name.
        data_dir: the daemon's data directory.
        base_version: ``(tenant, program) -> (version, path)`` of the version a new
            job starts from (None, None: the factory's program).
        on_success: called in the worker thread after a job succeeded (the rollout).
        clock: wall clock (epoch seconds) for event times.
        max_queue: jobs waiting at most; beyond, ``create`` answers 429.
    """

    def __init__(self, appender: Appender, store: Any, programs: Mapping[str, OptimizeProgram], data_dir: Path, *,
                 base_version: Callable[[str, str], tuple[str | None, str | None]] | None = None,
                 on_success: Callable[[JobSpec, RunResult], None] | None = None,
                 clock: Callable[[], float] = time.time, max_queue: int = 16) -> None:
        self.appender, self.store, self.programs = appender, store, dict(programs)
        self.root = Path(data_dir) / "optimize"
        self.base_version = base_version or (lambda tenant, program: (None, None))
        self.on_success, self.clock = on_success, clock
        self._queue: queue.Queue[JobSpec] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.current: str | None = None
        self.recovered = threading.Event()
        self.missing = missing_packages()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker thread (it recovers unfinished jobs first)."""
        self._thread = threading.Thread(target=self._main, name="adaptd-optimize-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to stop and wait up to ``timeout``.  A job still running then is
        left as it is: its ``running`` event makes the next start mark it interrupted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ requests

    def entry(self, program: str) -> OptimizeProgram:
        """The registration of ``program``.

        Raises:
            JobError: 404 when ``program`` has no ``[[optimize]]`` entry.
        """
        entry = self.programs.get(program)
        if entry is None:
            known = ", ".join(sorted(self.programs)) or "none"
            raise JobError(404, f"program {program!r} has no [[optimize]] configuration (configured: {known})")
        return entry

    def examples(self, tenant: str, entry: OptimizeProgram) -> tuple[list[dict], list[dict], dict[str, Any]]:
        """``(train, dev, info)`` for ``entry``: its files, or harvested examples split by
        ``devset_share`` (and a dev file, when given, always wins).

        Raises:
            JobError: 422 when an example file is missing or malformed.
        """
        info: dict[str, Any] = {}
        try:
            if entry.trainset:
                train = read_examples(entry.trainset)
                info["train_source"] = entry.trainset
            else:
                got = harvest(queries.harvest_rows(self.store, tenant, entry.program, entry.harvest_threshold,
                                                   entry.harvest_limit))
                train = got.examples
                info.update(train_source="harvested", harvested=len(got.examples), duplicates=got.duplicates,
                            not_captured=got.not_captured)
            if entry.devset:
                dev = read_examples(entry.devset)
                info["dev_source"] = entry.devset
            else:
                train, dev = split(train, entry.devset_share)
                info["dev_source"] = f"held out {entry.devset_share:g} of the trainset"
        except ExampleFileError as exc:
            raise JobError(422, str(exc)) from None
        return train, dev, info

    def situation(self, entry: OptimizeProgram, train_size: int, dev_size: int, budget_usd: float | None,
                  budget_lm_calls: int | None) -> Situation:
        return Situation(train_size=train_size, dev_size=dev_size, has_metric=entry.metric is not None,
                         feedback_metric=entry.feedback_metric, reflection_lm=entry.reflection_lm is not None,
                         finetunable=entry.finetunable, budget_usd=budget_usd, budget_lm_calls=budget_lm_calls,
                         program=entry.program, missing_packages=self.missing)

    def _prepare(self, tenant: str, program: str, budget_usd: float | None, budget_lm_calls: int | None
                 ) -> tuple[OptimizeProgram, list[dict], list[dict], dict[str, Any], Situation]:
        """The registration, examples (train, dev, info) and situation of a new job.

        Raises:
            JobError: 404 unknown program; 422 too few examples, a bad example file or a
                budget above the program's configured one.
        """
        entry = self.entry(program)
        train, dev, info = self.examples(tenant, entry)
        if len(train) < entry.min_examples or not dev:
            raise JobError(422, f"program {program!r} has {len(train)} training and {len(dev)} dev examples; it needs"
                           f" {entry.min_examples}+ and 1+: send executions with capture_content=True and feedback"
                           f" >= {entry.harvest_threshold:g}, or set trainset / devset files")
        for name, asked, ceiling in (("budget_usd", budget_usd, entry.budget_usd),
                                     ("budget_lm_calls", budget_lm_calls, entry.budget_lm_calls)):
            if asked is not None and ceiling is not None and asked > ceiling:
                raise JobError(422, f"{name} {asked:g} is above the ceiling {ceiling:g} configured for {program!r}"
                               f" ([[optimize]] {name}): ask for less, or raise it in the config")
        budget_usd = entry.budget_usd if budget_usd is None else budget_usd
        budget_lm_calls = entry.budget_lm_calls if budget_lm_calls is None else budget_lm_calls
        return entry, train, dev, info, self.situation(entry, len(train), len(dev), budget_usd, budget_lm_calls)

    def _spec(self, tenant: str, program: str, job_id: str, train: list[dict], dev: list[dict], **fields: Any
              ) -> JobSpec:
        """A job's specification, its examples snapshotted into its own folder (recovery
        trusts only files there, so ensemble members get a copy each)."""
        job_dir = self.root / "jobs" / job_id
        write_examples(job_dir / "train.jsonl", train)
        write_examples(job_dir / "dev.jsonl", dev)
        base_version, base_path = self.base_version(tenant, program)
        return JobSpec(job_id=job_id, tenant=tenant, program=program, train_path=str(job_dir / "train.jsonl"),
                       dev_path=str(job_dir / "dev.jsonl"), train_size=len(train), dev_size=len(dev),
                       base_version=base_version, base_path=base_path, **fields)

    def _enqueue(self, specs: list[JobSpec], events: list[dict[str, Any]]) -> None:
        """Append ``events`` in one write, then queue ``specs``; all or none.

        Raises:
            JobError: 429 the queue lacks room for all of them; 503 the log refused."""
        with self._lock:
            if self._queue.qsize() + len(specs) > self._queue.maxsize:
                raise JobError(429, f"{self._queue.qsize()} of {self._queue.maxsize} job places are taken, {len(specs)}"
                               " needed: retry when jobs finished")
            self._append(events)
            for spec in specs:
                self._queue.put_nowait(spec)

    def create(self, tenant: str, program: str, *, optimizer: str | None = None, params: Mapping[str, Any] | None = None,
               budget_usd: float | None = None, budget_lm_calls: int | None = None, trigger: str = "manual",
               caused_by: tuple[str, ...] = (), incident_id: str | None = None) -> dict[str, Any]:
        """Queue a job for ``program`` (see the module docstring); returns its ``queued`` event.

        Raises:
            JobError: 404 unknown program; 422 too few examples, bad example file, a budget
                above the program's configured one, or an optimizer that is unknown or
                cannot run; 429 the queue is full; 503 the log refused the event.
        """
        entry, train, dev, info, s = self._prepare(tenant, program, budget_usd, budget_lm_calls)
        try:
            rec = recommend(s, queries.history(self.store, tenant), override=optimizer or entry.optimizer)
        except RecommendError as exc:
            raise JobError(422, str(exc)) from None
        if rec.optimizer is None:
            raise JobError(422, rec.error or "no optimizer fits")
        chosen = spec_of(rec.optimizer)
        assert chosen is not None
        spec = self._spec(tenant, program, _job_id(), train, dev, optimizer=chosen.name,
                          params={**rec.params, **dict(params or {})}, budget_usd=s.budget_usd,
                          budget_lm_calls=s.budget_lm_calls, trigger=trigger, caused_by=list(caused_by),
                          incident_id=incident_id, est_lm_calls=rec.cost_estimate.get("lm_calls"),
                          recommendation=rec.to_dict())
        event = self._make(spec, "queued", {**asdict(spec), **info})
        self._enqueue([spec], [event])
        return event

    def create_ensemble(self, tenant: str, program: str, k: int, *, budget_usd: float | None = None,
                        budget_lm_calls: int | None = None, trigger: str = "manual", caused_by: tuple[str, ...] = (),
                        incident_id: str | None = None) -> dict[str, Any]:
        """Queue an ensemble of up to ``k`` optimizers for ``program`` within one budget
        (``ensemble.plan_ensemble``): one ``ensemble`` adaptation event holding the plan and
        a ``queued`` event per member, in one append.  When the last member ends, the worker
        appends the ``ensemble_choice`` event and hands the kept version to ``on_success``.

        Returns:
            ``{"ensemble_id", "plan", "jobs"}`` (``jobs``: the members' ``queued`` events).

        Raises:
            JobError: as ``create``; 422 also for ``k`` out of range, a program whose config
                fixes one optimizer, or a budget no optimizer fits in.
        """
        entry, train, dev, info, s = self._prepare(tenant, program, budget_usd, budget_lm_calls)
        if entry.optimizer is not None:
            raise JobError(422, f"program {program!r} always uses {entry.optimizer} ([[optimize]] optimizer): an"
                           " ensemble needs the choice free; drop the setting or the ensemble")
        try:
            plan = plan_ensemble(s, queries.history(self.store, tenant), k)
        except RecommendError as exc:
            raise JobError(422, str(exc)) from None
        if not plan.members:
            raise JobError(422, plan.reasoning[-1])
        ensemble_id = "ens-" + uuid_utils.uuid7().hex[-16:]
        ids = [_job_id() for _ in plan.members]
        specs = [self._spec(tenant, program, job_id, train, dev, optimizer=m.optimizer, params=dict(m.params),
                            budget_usd=m.budget_usd, budget_lm_calls=m.budget_lm_calls, trigger=trigger,
                            caused_by=list(caused_by), incident_id=incident_id, est_lm_calls=m.est_lm_calls,
                            ensemble_id=ensemble_id, ensemble_members=ids)
                 for job_id, m in zip(ids, plan.members, strict=True)]
        details = {"ensemble_id": ensemble_id, "jobs": ids, "trigger": trigger, "incident_id": incident_id,
                   "plan": plan.to_dict()}
        planned = adaptation(tenant, "ensemble", program, ts=self.clock(), details=details, caused_by=caused_by,
                             reason=f"ensemble {ensemble_id}: " + "; ".join(plan.reasoning[2:]))
        queued = [self._make(spec, "queued", {**asdict(spec), **info}) for spec in specs]
        self._enqueue(specs, [planned, *queued])
        return {"ensemble_id": ensemble_id, "plan": plan.to_dict(), "jobs": queued}

    # ------------------------------------------------------------------ worker

    def _make(self, spec: JobSpec, status: str, details: dict[str, Any], **fields: Any) -> dict[str, Any]:
        ens = {"ensemble_id": spec.ensemble_id} if spec.ensemble_id else {}
        return optimizer_run(spec.tenant, spec.job_id, spec.program, spec.optimizer, status, ts=self.clock(),
                             details={"attempt": spec.attempt, "est_lm_calls": spec.est_lm_calls,
                                      "trigger": spec.trigger, "incident_id": spec.incident_id, **ens, **details},
                             **fields)

    def _append(self, events: list[dict[str, Any]]) -> None:
        try:
            self.appender.append(events)
        except AppendError as exc:
            raise JobError(503, str(exc)) from None

    def _event(self, spec: JobSpec, status: str, details: dict[str, Any], **fields: Any) -> dict[str, Any]:
        event = self._make(spec, status, details, **fields)
        self._append([event])
        return event

    def _main(self) -> None:
        try:
            self._recover()
        except Exception:
            logger.exception("recovering optimization jobs failed")
        self.recovered.set()
        while not self._stop.is_set():
            try:
                spec = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._run(spec)
            except Exception:  # never let one job end the worker
                logger.exception("optimization job %s crashed", spec.job_id)

    def _recover(self) -> None:
        """Requeue ``queued`` jobs; mark ``running`` ones interrupted, and resume them once."""
        if not self.appender.wait_projected(self.appender.log.end_offset(), 60.0):
            logger.warning("read model not caught up after 60 s; recovering jobs from what it has")
        for row in reversed(queries.latest_jobs(self.store, statuses=("queued", "running"), limit=1000)):
            first = queries.first_event(self.store, row["tenant"], row["job_id"])
            if first is None:
                continue
            try:
                spec = resume_spec(first, row, self.root, self.programs)
            except UntrustedJob as exc:
                self._refuse(first, row, str(exc))
                continue
            if row["status"] == "queued":
                self._queue.put(spec)
                continue
            spent_calls, spent_usd = int(row.get("lm_calls") or 0), float(row.get("cost_usd") or 0.0)
            entry = self.programs.get(spec.program)
            events = [self._make(spec, "interrupted", {"reason": "the daemon stopped during the run", "stage":
                                                       (row["details"] or {}).get("stage")},
                                 lm_calls=spent_calls, cost_usd=spent_usd)]
            resume = entry is not None and entry.resume and spec.attempt < 2
            if resume:
                spec.attempt += 1
                spec.spent_lm_calls, spec.spent_usd = spent_calls, spent_usd
                events.append(self._make(spec, "queued", {**asdict(spec), "resumed": True}))
            # one append, so no reader ever sees the job ``interrupted`` when it is about to resume
            self._append(events)
            if resume:
                self._queue.put(spec)
            elif spec.ensemble_id is not None:
                self._maybe_choose(spec)  # it may have been the last member to end

    def _refuse(self, first: Mapping[str, Any], row: Mapping[str, Any], why: str) -> None:
        """End a stored job that may not be resumed: log the reason and append its
        ``failed`` event (for the row's own tenant), so the next start does not meet it."""
        logger.warning("optimization job %s of tenant %r is not resumed: %s", row["job_id"], row["tenant"], why)
        event = optimizer_run(row["tenant"], row["job_id"], first["program"], first["optimizer"], "failed",
                              ts=self.clock(), details={"error": f"not resumed after a restart: {why}"[:4000]},
                              lm_calls=row.get("lm_calls"), cost_usd=row.get("cost_usd"))
        self._append([event])

    def _run(self, spec: JobSpec) -> None:
        entry = self.programs.get(spec.program)
        if entry is None:
            self._event(spec, "failed", {"error": f"program {spec.program!r} is no longer configured"})
            return
        self.current = spec.job_id
        try:
            budget = Budget(spec.budget_usd, spec.budget_lm_calls, spent_usd=spec.spent_usd,
                            spent_calls=spec.spent_lm_calls)
            self._event(spec, "running", {"stage": "started"}, lm_calls=budget.calls, cost_usd=budget.spent_usd)
            version = self._next_version(spec)
            out_path = self.root / "programs" / slug(spec.tenant) / slug(spec.program) / f"{version}.json"

            def progress(stage: str, details: dict[str, Any]) -> None:
                self._event(spec, "running", {"stage": stage, **details}, lm_calls=budget.calls,
                            cost_usd=round(budget.spent_usd, 6), score_before=details.get("score_before"))

            result = run_optimization(entry, optimizer=spec.optimizer, params=spec.params,
                                      train=read_examples(spec.train_path), dev=read_examples(spec.dev_path),
                                      budget=budget, base_path=spec.base_path, out_path=out_path, progress=progress)
            details = {"stage": "done", "seconds": result.seconds, "error": result.error, "path": result.path,
                       "base_version": spec.base_version, "budget_usd": spec.budget_usd,
                       "budget_lm_calls": spec.budget_lm_calls}
            self._event(spec, result.status, details, program_version=version if result.path else None,
                        score_before=result.score_before, score_after=result.score_after, cost_usd=result.cost_usd,
                        lm_calls=result.lm_calls)
        finally:
            self.current = None
        if spec.ensemble_id is not None:
            self._maybe_choose(spec)
        elif result.status == "succeeded" and self.on_success is not None:
            self.on_success(spec, result)

    def _maybe_choose(self, spec: JobSpec) -> None:
        """Once every member of ``spec``'s ensemble has ended (read from the log, so a member
        resumed after a restart counts too): append the ``ensemble_choice`` event and hand
        the kept version to ``on_success`` (the gate and canary)."""
        rows = [queries.job_events(self.store, spec.tenant, job_id) for job_id in spec.ensemble_members]
        finals = [r[-1] for r in rows if r and r[-1]["status"] in _FINAL]
        if len(finals) < len(spec.ensemble_members) or any(
                e["action"] == "ensemble_choice" and (e["details"] or {}).get("ensemble_id") == spec.ensemble_id
                for e in queries.rollout_events(self.store, spec.tenant, spec.program)):
            return
        entry = self.programs.get(spec.program)
        choice = choose(finals, rule=entry.ensemble_choice if entry else "cheaper", dev_size=spec.dev_size)
        kept = next((f for f in finals if f["job_id"] == choice.job_id), None)
        members = [{k: f.get(k) for k in ("job_id", "optimizer", "status", "program_version", "score_before",
                                          "score_after", "lm_calls", "cost_usd")} for f in finals]
        details = {"ensemble_id": spec.ensemble_id, "job_id": choice.job_id, "incident_id": spec.incident_id,
                   "optimizer": kept and kept["optimizer"], "version": kept and kept["program_version"],
                   "lm_calls": sum(int(f.get("lm_calls") or 0) for f in finals),
                   "cost_usd": round(sum(float(f.get("cost_usd") or 0.0) for f in finals), 6), "members": members}
        self._append([adaptation(spec.tenant, "ensemble_choice", spec.program, ts=self.clock(), details=details,
                                 caused_by=[str(f["id"]) for f in finals], reason=choice.reason)])
        if kept is None or self.on_success is None:
            return
        first = queries.first_event(self.store, spec.tenant, str(kept["job_id"]))
        winner = JobSpec.from_details(first["details"]) if first else spec
        result = RunResult(status="succeeded", score_before=kept["score_before"], score_after=kept["score_after"],
                           path=(kept["details"] or {}).get("path"), lm_calls=int(kept.get("lm_calls") or 0),
                           cost_usd=float(kept.get("cost_usd") or 0.0))
        self.on_success(winner, result)

    def _next_version(self, spec: JobSpec) -> str:
        folder = self.root / "programs" / slug(spec.tenant) / slug(spec.program)
        numbers = [int(p.stem[1:]) for p in folder.glob("v*.json") if p.stem[1:].isdigit()] if folder.exists() else []
        return f"v{max(numbers, default=0) + 1}"


def _job_id() -> str:
    return "job-" + uuid_utils.uuid7().hex[-16:]
