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
from adaptd.daemon.optimize.harvest import ExampleFileError, harvest, read_examples, split, write_examples
from adaptd.daemon.optimize.recommend import RecommendError, Situation, missing_packages, recommend, spec_of
from adaptd.daemon.optimize.records import Appender, AppendError, optimizer_run
from adaptd.daemon.optimize.recovery import UntrustedJob, resume_spec
from adaptd.daemon.optimize.runner import RunResult, run_optimization
from adaptd.daemon.optimize.settings import OptimizeProgram
from adaptd.daemon.optimize.spec import JobSpec, slug
from adaptd.daemon.readmodel import optimizer_queries as queries

logger = logging.getLogger("adaptd.optimize")


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

    def create(self, tenant: str, program: str, *, optimizer: str | None = None, params: Mapping[str, Any] | None = None,
               budget_usd: float | None = None, budget_lm_calls: int | None = None, trigger: str = "manual",
               caused_by: tuple[str, ...] = (), incident_id: str | None = None) -> dict[str, Any]:
        """Queue a job for ``program`` (see the module docstring); returns its ``queued`` event.

        Raises:
            JobError: 404 unknown program; 422 too few examples, bad example file, a budget
                above the program's configured one, or an optimizer that is unknown or
                cannot run; 429 the queue is full; 503 the log refused the event.
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
        s = self.situation(entry, len(train), len(dev), budget_usd, budget_lm_calls)
        try:
            rec = recommend(s, queries.history(self.store, tenant), override=optimizer or entry.optimizer)
        except RecommendError as exc:
            raise JobError(422, str(exc)) from None
        if rec.optimizer is None:
            raise JobError(422, rec.error or "no optimizer fits")
        chosen = spec_of(rec.optimizer)
        assert chosen is not None
        job_id = "job-" + uuid_utils.uuid7().hex[-16:]
        job_dir = self.root / "jobs" / job_id
        write_examples(job_dir / "train.jsonl", train)
        write_examples(job_dir / "dev.jsonl", dev)
        base_version, base_path = self.base_version(tenant, program)
        spec = JobSpec(job_id=job_id, tenant=tenant, program=program, optimizer=chosen.name,
                       params={**rec.params, **dict(params or {})}, train_path=str(job_dir / "train.jsonl"),
                       dev_path=str(job_dir / "dev.jsonl"), train_size=len(train), dev_size=len(dev),
                       budget_usd=budget_usd, budget_lm_calls=budget_lm_calls, base_version=base_version,
                       base_path=base_path, trigger=trigger, caused_by=list(caused_by), incident_id=incident_id,
                       est_lm_calls=rec.cost_estimate.get("lm_calls"), recommendation=rec.to_dict())
        with self._lock:
            if self._queue.full():
                raise JobError(429, f"{self._queue.maxsize} jobs are already waiting: retry when one finished")
            event = self._event(spec, "queued", {**asdict(spec), **info})
            self._queue.put_nowait(spec)
        return event

    # ------------------------------------------------------------------ worker

    def _make(self, spec: JobSpec, status: str, details: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return optimizer_run(spec.tenant, spec.job_id, spec.program, spec.optimizer, status, ts=self.clock(),
                             details={"attempt": spec.attempt, "est_lm_calls": spec.est_lm_calls,
                                      "trigger": spec.trigger, "incident_id": spec.incident_id, **details},
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
        if result.status == "succeeded" and self.on_success is not None:
            self.on_success(spec, result)

    def _next_version(self, spec: JobSpec) -> str:
        folder = self.root / "programs" / slug(spec.tenant) / slug(spec.program)
        numbers = [int(p.stem[1:]) for p in folder.glob("v*.json") if p.stem[1:].isdigit()] if folder.exists() else []
        return f"v{max(numbers, default=0) + 1}"
