"""The optimization service in the daemon: jobs, the drift trigger and the rollout driver.

One polling thread (``poll_s``) besides the job worker:

- **trigger**: a quality-drift signal (``rollout.is_quality_drift``) on a registered
  program with ``trigger_on_drift`` queues a re-optimization, unless the incident was
  already handled, a job of the program is unfinished or a canary is running, or the
  last automatic job is younger than ``min_interval_s``; a skip is an ``adaptation``
  ``reoptimize_skipped`` event (once per incident), a start ``reoptimize`` then the job.
- **rollout**: each running canary gets its verdict (``rollout.canary_verdict``) from the
  live feedback since it started, then ``promote`` or ``rollback`` events.

It reads the read model (DuckDB) and writes only events, through ``Appender``, which
waits until they are projected, so each poll sees its own previous steps.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptd.daemon.config import ConfigError
from adaptd.daemon.optimize.jobs import JobError, JobManager, JobSpec
from adaptd.daemon.optimize.records import Appender, AppendError, adaptation
from adaptd.daemon.optimize.rollout import (
    BASE_VERSION,
    SlotState,
    canary_verdict,
    fold,
    gate,
    is_quality_drift,
    reoptimize_decision,
)
from adaptd.daemon.optimize.runner import RunResult
from adaptd.daemon.optimize.settings import OptimizeProgram
from adaptd.daemon.readmodel import optimizer_queries as queries

logger = logging.getLogger("adaptd.optimize")


def check_routes(programs: Sequence[OptimizeProgram], routing: Sequence[Any]) -> None:
    """Every ``routes`` of an ``[[optimize]]`` entry names routes of its ``[[routing]]``.

    Raises:
        ConfigError: saying which program and route to fix.
    """
    by_program = {r.program: {route.name for route in r.routes} for r in routing}
    for p in programs:
        if p.routes is None:
            continue
        names = by_program.get(p.program)
        if names is None:
            raise ConfigError(f"optimize {p.program!r}: routes need a [[routing]] entry for the program")
        missing = [r for r in p.routes if r not in names]
        if missing:
            raise ConfigError(f"optimize {p.program!r}: routes {missing} are not routes of its [[routing]]"
                              f" ({', '.join(sorted(names))})")


class OptimizeService:
    """Owns the job manager and the polling thread for the ``[[optimize]]`` programs."""

    def __init__(self, log: Any, store: Any, programs: Sequence[OptimizeProgram], routing: Sequence[Any],
                 data_dir: Path, limits: Any, *, clock: Callable[[], float] = time.time, poll_s: float = 0.5) -> None:
        check_routes(programs, routing)
        self.store, self.clock, self.poll_s = store, clock, poll_s
        self.programs = {p.program: p for p in programs}
        if len(self.programs) != len(programs):
            raise ConfigError("[[optimize]]: a program is registered twice")
        self.appender = Appender(log, store, limits)
        self.jobs = JobManager(self.appender, store, self.programs, data_dir, base_version=self.base_version,
                               on_success=self.on_success, clock=clock)
        self._lock = threading.RLock()  # rollout steps of the worker and the poller never interleave
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signal_cursor = -1
        self.polls = 0

    def start(self) -> None:
        self.jobs.start()
        self._thread = threading.Thread(target=self._main, name="adaptd-optimize", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.jobs.stop(timeout)

    # ------------------------------------------------------------------ state

    def slots(self, tenant: str, entry: OptimizeProgram) -> SlotState | None:
        """The rollout state of ``entry`` for ``tenant`` (None: no routes registered)."""
        if entry.routes is None:
            return None
        return fold(entry.routes, queries.rollout_events(self.store, tenant, entry.program))

    def base_version(self, tenant: str, program: str) -> tuple[str | None, str | None]:
        """``(version, path)`` serving now: the live slot's, or the last accepted version
        of a program without routes; ``(None, None)`` for the factory's program."""
        entry = self.programs.get(program)
        if entry is None:
            return None, None
        st = self.slots(tenant, entry)
        if st is not None:
            b = st.bindings.get(st.live)
            return (b.get("version"), b.get("path")) if b else (None, None)
        rows = [e for e in queries.rollout_events(self.store, tenant, program) if e["action"] == "program_version"]
        return (rows[-1]["details"].get("version"), rows[-1]["details"].get("path")) if rows else (None, None)

    def program_state(self, tenant: str, program: str) -> dict[str, Any]:
        """What ``GET /v1/optimization/programs/{program}`` shows."""
        entry = self.jobs.entry(program)
        st = self.slots(tenant, entry)
        version, path = self.base_version(tenant, program)
        jobs = queries.latest_jobs(self.store, tenant, program, limit=20)
        return {"program": program, "live_version": version or BASE_VERSION, "live_path": path,
                "slots": st.to_dict() if st else None, "jobs": jobs}

    # ------------------------------------------------------------------ rollout

    def _append(self, events: list[dict[str, Any]]) -> None:
        try:
            self.appender.append(events)
        except AppendError:
            logger.exception("could not append rollout events")

    def on_success(self, spec: JobSpec, result: RunResult) -> None:
        """Gate the new version; if it passes, bind it to the candidate slot and canary it."""
        entry = self.programs[spec.program]
        version = result.path and Path(result.path).stem
        ok, why = gate(result.score_before, result.score_after, entry.margin)
        now = self.clock()
        base = {"job_id": spec.job_id, "version": version, "path": result.path, "score_before": result.score_before,
                "score_after": result.score_after, "margin": entry.margin}
        with self._lock:
            if not ok:
                self._append([adaptation(spec.tenant, "rollout_rejected", spec.program, ts=now, reason=why,
                                         details=base)])
                return
            st = self.slots(spec.tenant, entry)
            if st is None:
                self._append([adaptation(spec.tenant, "program_version", spec.program, ts=now, details=base,
                                         reason=f"new version {version}: {why} (no routes: no canary)")])
                return
            if st.phase == "canary":
                self._append([adaptation(spec.tenant, "rollout_rejected", spec.program, ts=now, details=base,
                                         reason=f"a canary ({st.canary_version}) is still running")])
                return
            route = st.candidate
            self._append([
                adaptation(spec.tenant, "program_version", spec.program, ts=now, route=route, details=base,
                           reason=f"version {version} bound to candidate slot {route}: {why}"),
                adaptation(spec.tenant, "canary", spec.program, ts=now, route=route,
                           details={"share": entry.canary_share, **base},
                           reason=f"canary {version} on {route} at {entry.canary_share:g} of traffic"),
            ])

    def _reserve(self) -> None:
        """Once per (tenant, program): keep the candidate slot out of rotation until it
        has a version (tenants that already have optimization events)."""
        for entry in self.programs.values():
            if entry.routes is None:
                continue
            for tenant in queries.rollout_tenants(self.store, entry.program) or ["default"]:
                st = self.slots(tenant, entry)
                if st is not None and not st.reserved and not st.bindings:
                    self._append([
                        adaptation(tenant, "rollback", entry.program, ts=self.clock(), route=st.candidate,
                                   reason=f"candidate slot {st.candidate} kept free for optimized versions"),
                        adaptation(tenant, "reserve", entry.program, ts=self.clock(), route=st.candidate,
                                   reason=f"live slot {st.live}, candidate slot {st.candidate}"),
                    ])

    def check_canaries(self) -> None:
        """Give each running canary its verdict and act on it."""
        for entry in self.programs.values():
            if entry.routes is None:
                continue
            for tenant in queries.rollout_tenants(self.store, entry.program):
                with self._lock:
                    st = self.slots(tenant, entry)
                    if st is None or st.phase != "canary":
                        continue
                    self._judge(tenant, entry, st)

    def _judge(self, tenant: str, entry: OptimizeProgram, st: SlotState) -> None:
        quality = queries.route_quality(self.store, tenant, entry.program, st.canary_offset)
        started = dt.datetime.fromisoformat(str(st.canary_ts)).timestamp()
        verdict, why = canary_verdict(quality.get(st.canary_route or ""), quality.get(st.live),
                                      policy_rolled_back=st.policy_rolled_back, min_samples=entry.min_live_samples,
                                      tolerance=entry.live_tolerance, waited_s=self.clock() - started,
                                      timeout_s=entry.canary_timeout_s)
        if verdict == "wait":
            return
        now = self.clock()
        details = {"version": st.canary_version, "job_id": st.canary_job, "live_quality": quality.get(st.live),
                   "canary_quality": quality.get(st.canary_route or "")}
        if verdict == "promote":
            self._append([
                adaptation(tenant, "promote", entry.program, ts=now, route=st.canary_route, details=details,
                           reason=f"promote {st.canary_version}: {why}"),
                adaptation(tenant, "rollback", entry.program, ts=now, route=st.live, details=details,
                           reason=f"retire {st.live}: replaced by {st.canary_version} on {st.canary_route}"),
                adaptation(tenant, "rollout_promoted", entry.program, ts=now, route=st.canary_route,
                           details=details, reason=f"{st.canary_version} is live on {st.canary_route}: {why}"),
            ])
            return
        steps = [] if verdict == "rolled_back" else [
            adaptation(tenant, "rollback", entry.program, ts=now, route=st.canary_route, details=details,
                       reason=f"automatic rollback of {st.canary_version}: {why}")]
        steps.append(adaptation(tenant, "rollout_rolled_back", entry.program, ts=now, route=st.canary_route,
                                details=details, reason=f"{st.canary_version} rolled back: {why}"))
        self._append(steps)

    # ------------------------------------------------------------------ trigger

    def check_triggers(self) -> None:
        """Start re-optimizations for new quality-drift signals (see the module docstring)."""
        for signal in queries.drift_signals(self.store, self._signal_cursor):
            self._signal_cursor = max(self._signal_cursor, int(signal["log_offset"]))
            entry = self.programs.get(signal.get("program") or "")
            if entry is None or not entry.trigger_on_drift or not is_quality_drift(signal):
                continue
            with self._lock:
                self._trigger(signal, entry)

    def _trigger(self, signal: dict[str, Any], entry: OptimizeProgram) -> None:
        tenant, incident = signal["tenant"], str(signal.get("incident_id") or signal["id"])
        handled = {str((e["details"] or {}).get("incident_id")) for e in
                   queries.rollout_events(self.store, tenant, entry.program)}
        jobs = queries.latest_jobs(self.store, tenant, entry.program, limit=50)
        st = self.slots(tenant, entry)
        auto = [j for j in jobs if (j["details"] or {}).get("trigger") == "drift"]
        go, why_not = reoptimize_decision(
            incident, handled, [j["status"] for j in jobs], st.canary_version if st and st.phase == "canary" else None,
            dt.datetime.fromisoformat(str(auto[0]["ts"])).timestamp() if auto else None, self.clock(),
            entry.min_interval_s)
        if not go and why_not is None:
            return  # handled already (a restart re-reads old signals)
        base = {"incident_id": incident, "signal_id": signal["id"], "severity": signal.get("severity")}
        if why_not is not None:
            self._append([adaptation(tenant, "reoptimize_skipped", entry.program, ts=self.clock(), details=base,
                                     caused_by=[signal["id"]], reason=f"quality drift: not re-optimizing: {why_not}")])
            return
        self._append([adaptation(tenant, "reoptimize", entry.program, ts=self.clock(), details=base,
                                 caused_by=[signal["id"]], reason=f"quality drift ({signal.get('severity')}):"
                                 f" re-optimizing within ${entry.budget_usd} / {entry.budget_lm_calls} LM calls")])
        try:
            if entry.ensemble > 1 and entry.optimizer is None:
                job = self.jobs.create_ensemble(tenant, entry.program, entry.ensemble, trigger="drift",
                                                caused_by=(signal["id"],), incident_id=incident)
            else:
                job = self.jobs.create(tenant, entry.program, trigger="drift", caused_by=(signal["id"],),
                                       incident_id=incident)
        except JobError as exc:
            self._append([adaptation(tenant, "reoptimize_skipped", entry.program, ts=self.clock(), details=base,
                                     caused_by=[signal["id"]], reason=f"quality drift: job refused: {exc}")])
            return
        logger.info("quality drift on %s: %s queued", entry.program, job.get("ensemble_id") or job["job_id"])

    # ------------------------------------------------------------------ loop

    def _main(self) -> None:
        self.jobs.recovered.wait(120.0)
        try:
            with self._lock:
                self._reserve()
        except Exception:
            logger.exception("reserving candidate slots failed")
        while not self._stop.wait(self.poll_s):
            try:
                self.check_triggers()
                self.check_canaries()
            except Exception:  # the store may be closing, or a query failed: try again next poll
                logger.exception("optimization poll failed")
            self.polls += 1


def start_optimize(runtime: Any) -> OptimizeService | None:
    """The started service for ``runtime.settings.optimize``; None when nothing is registered.

    Raises:
        ConfigError: an ``[[optimize]]`` entry names routes its ``[[routing]]`` lacks.
    """
    from adaptd.daemon.ingest import Limits

    settings = runtime.settings
    programs = list(getattr(settings, "optimize", None) or [])
    if not programs:
        return None
    service = OptimizeService(runtime.log, runtime.store, programs, settings.routing, Path(settings.data_dir),
                              Limits(**settings.limits.model_dump()))
    service.start()
    return service
