"""The embedded processor runtime: follows the log, runs processors, snapshots, recovers.

One loop (a thread in the daemon, or driven by hand through ``step``):

1. read a batch from the position (consumer group ``processors``);
2. parse the source kinds the processors read (never derived kinds: no loops);
3. compute the watermark after each event: highest event time so far (each bounded to
   at most ``max_future_s`` past the log's append time, 0 by default) minus
   ``lateness_s``.  The watermark is global (one for every tenant and key), so the bound
   is what keeps one client's clock from making other tenants' live events late: it
   must stay below ``lateness_s``;
4. run each source processor on the batch, then each derived processor on its upstream's
   outputs;
5. append every output to the log and wait until it is durable (output first);
6. while idle, with a ``ticker``, append a tick when it is due (``ticker``: quiet live
   traffic still closes its windows, and replay sees the same ticks);
7. every ``snapshot_every_records`` records or ``snapshot_every_s`` seconds (on the
   injected ``clock``), write states + position + watermark atomically, and only then
   commit the position as the group's, so log retention never deletes a record a
   restart would need.

A restart loads the snapshot and resumes at its position; records after it are processed
again and produce the same derived events with the same ids (projection keeps one).
If a step fails half-way (a processor raised, the log refused the outputs), the states
may be half-updated, so the runtime reloads the last snapshot before trying again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from adaptd.streams.log.base import LogError, StreamLog
from adaptd.streams.processors.base import NO_WATERMARK, DerivedProcessor, SourceProcessor, iso_us
from adaptd.streams.processors.pipeline import Pipeline
from adaptd.streams.processors.snapshot import SnapshotError, read_snapshot, write_snapshot
from adaptd.streams.processors.ticker import Ticker, tick_record
from adaptd.streams.processors.windows import US

logger = logging.getLogger("adaptd.processors")

Processor = SourceProcessor | DerivedProcessor


class ProcessorRuntime:
    """Runs ``processors`` over ``log`` from their snapshot position.  See the module doc.

    Counters (read by ``stats``): ``records_read``, ``events``, ``unreadable``,
    ``outputs``, ``snapshots``, ``errors`` / ``last_error``, ``resumed_at`` (the position
    the runtime started from).
    """

    def __init__(self, log: StreamLog, processors: Sequence[Processor], *, snapshot_path: Path | None = None,
                 group: str = "processors", lateness_s: float = 5.0, max_future_s: float | None = 0.0,
                 batch: int = 20_000, snapshot_every_records: int = 100_000, snapshot_every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, poll_s: float = 0.2, retry_s: float = 1.0,
                 emit: Callable[[list[bytes]], Any] | None = None, partition: int = 0,
                 ticker: Ticker | None = None, wall: Callable[[], float] = time.time) -> None:
        """Args:
            log: the log to follow; outputs are appended to it unless ``emit`` is given.
            processors: source processors, then derived ones (each after its upstream).
            snapshot_path: the snapshot file; None keeps no snapshot and commits nothing
                (replay).
            group: consumer group the snapshot position is committed under.
            lateness_s: allowed lateness (how far the watermark trails event time).
            max_future_s: how far an event time may run ahead of the log's append time
                and still move the watermark (None: no bound, for logs whose append
                times mean nothing, e.g. synthetic ones in tests).  Keep it below
                ``lateness_s``: an event from any tenant up to ``max_future_s`` ahead
                makes events older than ``append - (lateness_s - max_future_s)`` late.
            batch: most records per step.
            snapshot_every_records, snapshot_every_s: snapshot cadence.
            clock: monotonic seconds, for the time-based cadence only.
            poll_s, retry_s: thread loop: longest idle wait, pause after a failure.
            emit: where outputs go (default: ``log.append``, durable before returning).
            ticker: when to append a tick while idle (None: never, as in replay).
            wall: wall-clock seconds since the epoch, for ticks.

        Raises:
            ValueError: duplicate processor names, or a derived processor before (or
                without) its upstream.
        """
        self._log = log
        self._pipeline = Pipeline(processors, lateness_s=lateness_s, max_future_s=max_future_s)
        self._processors = self._pipeline.processors
        self._path = Path(snapshot_path) if snapshot_path is not None else None
        self._group, self._partition = group, partition
        self._batch = max(1, batch)
        self._every_records, self._every_s = max(1, snapshot_every_records), snapshot_every_s
        self._clock, self._poll, self._retry = clock, poll_s, retry_s
        self._emit = emit if emit is not None else (lambda values: log.append(values))
        self._ticker, self._wall = ticker, wall
        self._live_lag_s: float | None = None
        self.ticks = 0
        self.records_read = self.events = self.unreadable = self.outputs = 0
        self.snapshots = self.errors = 0
        self.last_error: str | None = None
        self.snapshot_position: int | None = None
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._load()
        self.resumed_at = self.position

    # ------------------------------------------------------------------ state

    def _config(self) -> dict[str, Any]:
        return self._pipeline.config()

    def _load(self) -> None:
        """Restore the snapshot, or start from the beginning of the log with fresh states."""
        payload = None
        if self._path is not None:
            try:
                payload = read_snapshot(self._path)
            except SnapshotError as exc:
                logger.warning("%s; rebuilding processor state from the log", exc)
            if payload is not None and payload.get("config") != self._config():
                logger.warning("processor configuration changed since the snapshot; rebuilding from the log")
                payload = None
        start = self._log.start_offset(self._partition)
        if payload is None:
            self.position, self.high = start, NO_WATERMARK
            self.live_high: int | None = None
            self.states = self._pipeline.initial_states()
        else:
            self.position, self.high, self.states = payload["position"], payload["high"], payload["states"]
            self.live_high = payload.get("live_high")
            self.snapshot_position = self.position
        if self.position < start:
            logger.error("log retention removed records %d-%d before the processors read them",
                         self.position, start - 1)
            self.position = start
        self._since_snapshot = 0
        self._snapshot_at = self._clock()

    @property
    def watermark(self) -> int:
        """The current watermark (µs since the epoch; ``NO_WATERMARK`` before any event)."""
        return self._pipeline.watermark(self.high)

    # ------------------------------------------------------------------ one step

    def step(self) -> bool:
        """Process one batch; True when there were records.

        Raises:
            Exception: a processor or the log failed; the states were reloaded from the
                last snapshot, so calling ``step`` again is safe.
        """
        records = self._log.read(self.position, self._batch, self._partition)
        if not records:
            return False
        try:
            self._run(records)
        except BaseException:
            self._load()
            raise
        if self._path is not None and (self._since_snapshot >= self._every_records
                                       or self._clock() - self._snapshot_at >= self._every_s):
            self.snapshot()
        return True

    def _run(self, records: list) -> None:
        step = self._pipeline.step(self.states, self.high, records)
        if step.outputs:
            self._emit([orjson.dumps(o) for _, o in step.outputs])
        self.high = step.high
        if step.live_high is not None:
            self.live_high = step.live_high if self.live_high is None else max(self.live_high, step.live_high)
            self._live_lag_s = self._wall() - self.live_high / US  # how old live events are when they arrive
        self.position = records[-1].offset + 1
        self._since_snapshot += len(records)
        self.records_read += len(records)
        self.events += step.events
        self.unreadable += step.unreadable
        self.outputs += len(step.outputs)
        with self._progress:
            self._progress.notify_all()

    def snapshot(self) -> None:
        """Write the snapshot, then commit its position for the group.

        Raises:
            OSError: the snapshot could not be written (nothing is committed then).
        """
        if self._path is None:
            return
        write_snapshot(self._path, {"config": self._config(), "position": self.position, "high": self.high,
                                    "live_high": self.live_high, "states": self.states})
        self.snapshot_position = self.position
        self.snapshots += 1
        self._since_snapshot = 0
        self._snapshot_at = self._clock()
        try:
            self._log.commit(self._group, self.position, self._partition)
        except LogError as exc:  # only retention depends on it; the snapshot holds the truth
            self._failed(exc)

    def drain(self, deadline: float = float("inf")) -> None:
        """Process until caught up with the log's end (or ``time.monotonic() >= deadline``),
        then snapshot."""
        while self.step() and time.monotonic() < deadline:
            pass
        if self.snapshot_position != self.position:
            self.snapshot()

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        """Run in a background thread until ``stop``."""
        self._thread = threading.Thread(target=self._loop, name="adaptd-processors", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                moved = self.step()
                if self._stopping.is_set() and (not moved or time.monotonic() >= self._deadline):
                    break
                if not moved:
                    self._tick_if_due()
                    self._log.wait(self.position, self._poll, self._partition)
            except Exception as exc:  # keep running: the log or a processor may recover
                self._failed(exc)
                if self._stopping.wait(self._retry):
                    return
        try:
            if self.snapshot_position != self.position:
                self.snapshot()
        except Exception as exc:
            self._failed(exc)

    def _tick_if_due(self) -> None:
        """Append a tick when the ticker says one is due (durable before returning).

        Raises:
            LogError: the log refused it (the loop counts the failure and goes on).
        """
        if self._ticker is None or self._stopping.is_set():
            return
        now = self._wall()
        if self._ticker.due(now, None if self.live_high is None else self.live_high / US, self._live_lag_s):
            self._ticker.last_tick_s = now
            self._emit([tick_record(now)])
            self.ticks += 1

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Drain what is in the log (for up to ``timeout`` s), snapshot, end the thread.

        Safe before ``start`` and twice.  Returns True when the thread ended caught up.
        """
        self._deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        self._stopping.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(None if timeout is None else timeout + 10.0)
            if self._thread.is_alive():
                return False
        try:
            return self.lag() == 0
        except Exception:
            return False

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.error("processors: %s", self.last_error, exc_info=exc)

    # ------------------------------------------------------------------ reading

    def lag(self) -> int:
        """Records in the log not processed yet."""
        return max(0, self._log.end_offset(self._partition) - self.position)

    def wait_for(self, offset: int, timeout: float) -> bool:
        """Wait until the record at ``offset`` is processed; False after ``timeout`` s."""
        with self._progress:
            return self._progress.wait_for(lambda: self.position > offset, timeout)

    def stats(self) -> dict[str, Any]:
        """Figures for ``/v1/stats`` (JSON-ready)."""
        metrics = {}
        for p in self._processors:
            try:
                metrics[p.name] = p.metrics(self.states[p.name])
            except Exception as exc:  # a state being swapped by a reload: say so, never fail
                metrics[p.name] = {"error": str(exc)}
        late = sum(max(m["late"].values(), default=0) for m in metrics.values() if isinstance(m.get("late"), dict))
        try:
            lag = self.lag()
        except LogError:
            lag = None
        wm = self.watermark
        return {
            "position": self.position, "lag": lag, "resumed_at": self.resumed_at,
            "watermark": None if wm <= NO_WATERMARK else iso_us(wm),
            "records_read": self.records_read, "events": self.events, "unreadable": self.unreadable,
            "late_events": late, "outputs": self.outputs, "ticks": self.ticks, "snapshots": self.snapshots,
            "snapshot_position": self.snapshot_position, "errors": self.errors, "last_error": self.last_error,
            "processors": metrics,
        }


def rerun(log: StreamLog, processors: Sequence[Processor], *, lateness_s: float = 5.0,
          max_future_s: float | None = 0.0, batch: int = 50_000) -> list[dict[str, Any]]:
    """Run fresh ``processors`` over every record ``log`` holds; return their outputs.

    Nothing is appended, snapshotted or committed.  Run over the same log with the same
    settings as the live runtime, it gives the derived events the live runtime appended
    (same ids, same values), whatever the batch sizes and restarts were live.

    Raises:
        streams.log.LogError: the log could not be read.
    """
    collected: list[bytes] = []
    runtime = ProcessorRuntime(log, processors, lateness_s=lateness_s, max_future_s=max_future_s, batch=batch,
                               emit=collected.extend)
    while runtime.step():
        pass
    return [orjson.loads(v) for v in collected]
