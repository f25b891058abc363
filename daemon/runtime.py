"""The daemon's running parts: the stream log, the DuckDB store and the projector.

``Runtime`` owns their lifecycle (open in order, close in reverse, draining on the way
out) and the counters ``/v1/stats`` shows.  The HTTP layer holds one and never opens
files itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.policy import RoutingPolicy
from adaptd.daemon.adaptation.policy_state import PolicyConfig
from adaptd.daemon.alerts import AlertDispatcher, redacted_stats
from adaptd.daemon.config import ConfigError, ProcessorSettings, Settings
from adaptd.daemon.optimize.service import OptimizeService, start_optimize
from adaptd.daemon.readmodel.projector import Projector
from adaptd.daemon.readmodel.store import Store
from adaptd.streams.log import LogError, StreamLog, open_log
from adaptd.streams.processors.anomaly.error_burst import BurstConfig, ErrorBurstProcessor
from adaptd.streams.processors.anomaly.processor import AnomalyConfig, AnomalyProcessor
from adaptd.streams.processors.drift.processor import DriftProcessor, DriftProcessorConfig
from adaptd.streams.processors.history.processor import HistoryProcessor
from adaptd.streams.processors.runtime import ProcessorRuntime
from adaptd.streams.processors.ticker import Ticker
from adaptd.streams.processors.windows import US, parse_size

logger = logging.getLogger("adaptd.runtime")


#: The ingest counters, kept in total and per tenant.
COUNTER_NAMES = ("events_acked", "dead_letters", "batches_acked", "requests_refused", "dropped",
                 "dead_letters_suppressed", "events_future")
#: A component whose error count rose this recently, and which is behind, is not ready.
READY_ERROR_WINDOW_S = 10.0


@dataclass(slots=True)
class Counters:
    """Ingest counters since start, in total and per tenant (thread-safe through ``add``).

    Tenants are the configured ones (or ``default``), so ``per_tenant`` stays small.
    """

    events_acked: int = 0
    dead_letters: int = 0
    batches_acked: int = 0
    requests_refused: int = 0
    dropped: int = 0
    #: dead letters not stored because the tenant's dead-letter rate limit was spent
    dead_letters_suppressed: int = 0
    #: events refused for a timestamp further ahead of the daemon's clock than limits.max_future_s
    events_future: int = 0
    per_tenant: dict[str, dict[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, tenant: str | None = None, **deltas: int) -> None:
        """Add ``deltas`` to the named counters atomically, and to ``tenant``'s if given."""
        with self._lock:
            mine = None if tenant is None else self.per_tenant.setdefault(tenant, dict.fromkeys(COUNTER_NAMES, 0))
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)
                if mine is not None:
                    mine[name] += delta

    def of(self, tenant: str) -> dict[str, int]:
        """``tenant``'s counters (zeros when it sent nothing yet)."""
        with self._lock:
            return dict(self.per_tenant.get(tenant) or dict.fromkeys(COUNTER_NAMES, 0))


class _ErrorWatch:
    """When an error counter last rose, as seen by readiness checks."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}

    def rising(self, name: str, errors: int, now: float) -> bool:
        """True when ``errors`` rose within the last ``READY_ERROR_WINDOW_S`` seconds."""
        count, since = self._seen.get(name, (0, float("-inf")))
        if errors != count:
            self._seen[name] = (errors, now)
            since = now
        return now - since < READY_ERROR_WINDOW_S


def build_processors(settings: ProcessorSettings, routing: Sequence[ProgramRouting] = (),
                     policy: PolicyConfig | None = None) -> list:
    """The processors the daemon runs, in order (source processors, then derived ones).

    Replay builds them with this too, so a re-run matches the live ones.
    """
    processors: list = [
        HistoryProcessor(settings.history_windows, dedupe_events=settings.dedupe_events,
                         join_events=settings.join_events, max_keys_per_tenant=settings.max_keys_per_tenant),
        ErrorBurstProcessor(BurstConfig(max_keys_per_tenant=settings.max_keys_per_tenant)),  # error-rate bursts from raw executions, within seconds
    ]
    if settings.drift_enabled:
        processors.append(DriftProcessor(DriftProcessorConfig(
            window=settings.drift_window, min_executions=settings.drift_min_executions,
            resolve_windows=settings.drift_resolve_windows,
            max_keys_per_tenant=settings.max_detector_keys_per_tenant,
            detector=settings.drift_detector_config(),
            golden_quality=tuple((program, tuple(scores))
                                 for program, scores in sorted(settings.drift_golden_quality.items())))))
    if routing:  # reads outcomes, feedback, signals and admin actions; writes routing tables
        processors.append(RoutingPolicy(list(routing), policy))
    processors.append(AnomalyProcessor(AnomalyConfig(max_keys_per_tenant=settings.max_detector_keys_per_tenant)))  # derived: detectors over history's closed windows
    return processors


def ticker_for(settings: ProcessorSettings) -> Ticker | None:
    """The ticker that closes quiet live windows (None when ``close_quiet_windows`` is off):
    ticks stop once the newest event is older than the longest window plus lateness."""
    if not settings.close_quiet_windows:
        return None
    longest = max(parse_size(size) for size in [*settings.history_windows, settings.drift_window]) / US
    return Ticker(horizon_s=longest + settings.lateness_s + 1.0)


class RuntimeOptions(TypedDict):
    """The event-time keyword arguments of ``ProcessorRuntime`` / ``rerun``."""

    lateness_s: float
    max_future_s: float | None


def runtime_options(settings: ProcessorSettings) -> RuntimeOptions:
    """The event-time options of ``ProcessorRuntime`` / ``rerun`` from the settings."""
    return {"lateness_s": settings.lateness_s, "max_future_s": settings.max_future_s}


class Runtime:
    """Opens and owns the log, the store, the projector and the processors for one data directory."""

    def __init__(self, settings: Settings, *, log: StreamLog | None = None) -> None:
        """Open everything for ``settings``.

        Args:
            settings: the daemon settings.
            log: an already opened log to use instead of opening ``settings.log``
                (tests pass one with an injected disk); the runtime closes it.

        Raises:
            ConfigError: the database is in use by another process.
            LogError: the log cannot be opened (damaged: CorruptLog), or the read model
                is ahead of it.
        """
        self.settings = settings
        self.counters = Counters()
        self.started_at = time.time()
        self._errors = _ErrorWatch()
        self._errors_lock = threading.Lock()
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = data_dir / "adaptd.duckdb"
        self.log: StreamLog = log if log is not None else open_log(
            settings.log.url,
            data_dir,
            fsync=settings.log.fsync,
            fsync_interval_ms=settings.log.fsync_interval_ms,
            segment_bytes=settings.log.segment_bytes,
            retention_bytes=settings.log.retention_bytes,
            retention_hours=settings.log.retention_hours,
            max_pending_batches=settings.log.max_pending_batches,
            **({"fault_retry_ms": settings.log.fault_retry_ms} if settings.log.url.startswith("file") else {}),
        )
        try:
            self.store = Store(self.db_path, dead_letter_max_age_days=settings.dead_letter_max_age_days,
                               memory_limit_mb=settings.duckdb_memory_limit_mb)
        except Exception as exc:
            self.log.close()
            if "lock" in str(exc).lower():
                raise ConfigError(
                    f"{self.db_path} is in use by another process (is another adaptd running"
                    f" on data_dir {data_dir}?): stop it or pick another --data-dir"
                ) from None
            raise
        for partition in range(self.log.partitions):
            stored, end = self.store.position(partition), self.log.end_offset(partition)
            if stored > end:
                # Projecting from here would silently skip the next records appended.
                self.store.close()
                self.log.close()
                raise LogError(
                    f"the read model {self.db_path} has projected partition {partition} up to offset "
                    f"{stored}, but the log ends at offset {end}: acknowledged records are missing from "
                    f"the log (restored from an older copy, or cut by hand). Restore the log, or rebuild the "
                    f"read model from the log as it is with `adaptd replay --data-dir {data_dir} --into NEW.duckdb`"
                    f" and move NEW.duckdb to {self.db_path}"
                )
        truncated = self.log.stats().truncated_bytes
        if truncated:
            logger.warning("log recovery cut %d torn bytes at the tail", truncated)
        self.projector = Projector(self.log, self.store, batch=settings.projector_batch)
        self.projector.start()
        # After the projector (it stores what the processors emit), stopped before it.
        self.processors: ProcessorRuntime | None = None
        ps = settings.processors
        # With kafka:// the processors run as `adaptd worker` (Faust); this daemon projects.
        if ps.enabled and not settings.log.url.startswith("kafka://"):
            try:
                self.processors = ProcessorRuntime(
                    self.log, build_processors(ps, settings.routing, settings.routing_policy), snapshot_path=data_dir / "processors" / "snapshot.pkl",
                    batch=ps.batch, snapshot_every_records=ps.snapshot_every_records,
                    snapshot_every_s=ps.snapshot_every_s, ticker=ticker_for(ps), **runtime_options(ps),
                )
            except BaseException:
                self.projector.stop(timeout=settings.shutdown_timeout_s)
                self.log.close()
                self.store.close()
                raise
            self.processors.start()
        # Alert sinks follow the signals in the log (consumer group "alerts").
        alerts = settings.alerts
        self.alerts = AlertDispatcher(self.log, alerts) if alerts.enabled and alerts.has_sinks else None
        if self.alerts is not None:
            self.alerts.start()
        self._closed = False
        # Optimization jobs, the quality-drift trigger and rollouts ([[optimize]]).
        self.optimize: OptimizeService | None = None
        try:
            self.optimize = start_optimize(self)
        except BaseException:
            self.close()
            raise

    def close(self, timeout: float | None = None) -> None:
        """Drain: project everything durable, commit, then close the log and the store.

        Idempotent.  ``timeout`` bounds the projector's catch-up (default: settings).
        """
        if self._closed:
            return
        self._closed = True
        budget = self.settings.shutdown_timeout_s if timeout is None else timeout
        optimize = getattr(self, "optimize", None)
        if optimize is not None:  # a job cut short is resumed at the next start
            optimize.stop(timeout=min(budget, 5.0))
        if self.alerts is not None:
            self.alerts.stop(timeout=min(budget, 5.0))
        if self.processors is not None:  # drain first: its last outputs still get projected
            started = time.monotonic()
            self.processors.stop(timeout=budget / 2)
            budget = max(0.0, budget - (time.monotonic() - started))
        self.projector.stop(timeout=budget)
        self.log.close()
        self.store.close()

    def readiness(self) -> list[str]:
        """Why the daemon cannot do its work right now; empty when it is ready.

        Not ready while the log refuses appends (a disk fault being retried), while the
        projector or the processors thread is dead, or while one of them is behind the
        log and its error count rose in the last ``READY_ERROR_WINDOW_S`` seconds (it is
        failing, not merely busy).  Each reason is one line naming the part.
        """
        reasons = []
        fault = self.log.write_fault()
        if fault is not None:
            reasons.append(f"log: appends fail: {fault}")
        now = time.monotonic()
        parts: list[tuple[str, Projector | ProcessorRuntime, Callable[[], int], bool]] = [
            ("projector", self.projector, lambda: self.projector.lag(), self.projector.is_alive())]
        if self.processors is not None:  # its loop outlives every error: only failing, never dead
            parts.append(("processors", self.processors, self.processors.lag, True))
        with self._errors_lock:
            for name, part, lag, alive in parts:
                if not alive and not self._closed:
                    reasons.append(f"{name}: stopped ({part.last_error or 'no error recorded'})")
                    continue
                try:
                    behind = lag() > 0
                except LogError:
                    behind = True
                if self._errors.rising(name, part.errors, now) and behind:
                    reasons.append(f"{name}: failing ({part.errors} errors; last: {part.last_error})")
        return reasons

    def tenant_stats(self, tenant: str) -> dict[str, Any]:
        """``/v1/stats`` for a tenant that is not an admin: its own counters and nothing
        that tells about other tenants (no log offsets, totals or lags of the shared log).

        ``caught_up`` is whether everything acknowledged so far is projected.
        """
        mine = self.counters.of(tenant)
        return {
            "scope": "tenant",
            "tenant": tenant,
            **mine,
            "caught_up": self.projector.lag() == 0,
            "ready": not self.readiness(),
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    def stats(self) -> dict[str, Any]:
        """The figures ``/v1/stats`` shows admins and ``adaptd status``: every counter of
        the daemon, per tenant too; alert sink URLs redacted (see alerts.redacted_stats)."""
        c = self.counters
        log_stats = self.log.stats()
        end = self.log.end_offset()
        position = self.store.position()
        with c._lock:
            tenants = {name: dict(figures) for name, figures in c.per_tenant.items()}
        return {
            "scope": "global",
            "events_acked": c.events_acked,
            "dead_letters": c.dead_letters,
            "batches_acked": c.batches_acked,
            "requests_refused": c.requests_refused,
            "dropped": c.dropped,
            "dead_letters_suppressed": c.dead_letters_suppressed,
            "events_future": c.events_future,
            "store": self.store.stats(),
            "events_projected": self.projector.projected,
            "log_end_offset": end,
            "log_start_offset": self.log.start_offset(),
            "log_truncated_bytes": log_stats.truncated_bytes,
            "log_write_faults": log_stats.extra.get("write_faults", 0),
            "log_write_failing": self.log.write_fault(),
            "projector_position": position,
            "projector_lag": max(0, end - position),
            "projector_errors": self.projector.errors,
            "processors": self.processors.stats() if self.processors is not None else None,
            "alerts": redacted_stats(self.alerts.stats()) if self.alerts is not None else None,
            "tenants": tenants,
            "ready": not self.readiness(),
            "uptime_s": round(time.time() - self.started_at, 3),
        }
