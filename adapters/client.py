"""The batching client: the caller's thread enqueues, one worker thread does the rest.

Modelled on OpenTelemetry's ``BatchProcessor`` (``sdk/_shared_internal``): ``emit()``
appends a raw tuple (``emit_record()``: an integration's self-building record) to a
bounded deque and returns; a daemon worker, woken by a timer or early when a full batch
waits, turns them into events (``adaptd.adapters.encode``) and hands batches to ``adaptd.adapters.delivery``, which exports them (the exporter decides
*how*), retries, spills to a local file (``adaptd.adapters.spill``) when the daemon is
unreachable and re-sends later. Nothing here raises into, or blocks, the host.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from adaptd.adapters.delivery import Delivery
from adaptd.adapters.encode import BUILT, NO_POSITIONAL, InvalidEvent, Record, encode, encode_record, validate_batch
from adaptd.adapters.exporter import Backoff, Exporter, HttpExporter
from adaptd.adapters.spill import Spill, default_spill_dir

log = logging.getLogger("adaptd.sdk")

DEFAULT_URL = "http://127.0.0.1:7710"
_MiB = 1024 * 1024


class _DeliveryConfig(TypedDict):
    """``Delivery``'s keyword settings, kept to build a new one after a fork."""

    max_retries: int
    backoff: Backoff
    offline_max_s: float
    max_batch: int
    max_request_bytes: int
    clock: Callable[[], float]
    rng: random.Random


def _flush_at_exit(ref: weakref.ref[Client], timeout: float) -> None:
    client = ref()
    if client is not None:
        client.flush(timeout)


def _after_fork(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None:
        client._reinit_after_fork()


class Client:
    """Batches events to the adaptd daemon without ever blocking or failing the caller."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        source: str = "adaptd-python",
        max_queue_size: int = 20_000,
        max_batch_size: int = 1000,
        schedule_delay_ms: float = 200,
        export_timeout_s: float = 5.0,
        max_retries: int = 3,
        retry_backoff_s: float = 0.1,
        retry_max_backoff_s: float = 2.0,
        offline_max_backoff_s: float = 30.0,
        spill_dir: str | os.PathLike[str] | Literal[False] | None = None,
        max_spill_bytes: int = 64 * _MiB,
        max_event_bytes: int = 256 * 1024,
        max_request_bytes: int = 8 * _MiB,
        compression: Literal["gzip"] | None = None,
        exporter: Exporter | None = None,
        atexit_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        time_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
    ) -> None:
        """Start the worker thread. Configuration errors raise ``ValueError`` here, once.

        Args:
            url: Daemon base URL; default ``$ADAPTD_URL`` or ``http://127.0.0.1:7710``.
            token: Bearer token; default ``$ADAPTD_TOKEN`` (none when unset).
            source: Put in every event's ``source`` unless the caller gives one.
            max_queue_size: Bound of the in-memory queue; past it the oldest is dropped.
            max_batch_size: Most events per export request.
            schedule_delay_ms: Longest an event waits in the queue before export.
            export_timeout_s: Per-request timeout of the default HTTP exporter.
            max_retries: Retries of a transient failure before the batch is spilled.
            retry_backoff_s: First retry's backoff cap; doubles per retry (full jitter).
            retry_max_backoff_s: Cap of one retry's backoff.
            offline_max_backoff_s: Cap of the wait between probes while the daemon is
                unreachable (batches go straight to the spill meanwhile).
            spill_dir: Spill directory; None picks ``default_spill_dir()``, False disables
                spilling (batches that fail are then dropped and counted).
            max_spill_bytes: Bound of the spill directory.
            max_event_bytes: Larger events are dropped as invalid (the daemon's limit).
            max_request_bytes: Batches are split so one request stays under this.
            compression: ``"gzip"`` to compress request bodies (HTTP exporter only).
            exporter: Replaces the HTTP exporter (e.g. ``InMemoryExporter`` in tests).
            atexit_timeout_s: How long the interpreter exit may wait for a final flush.
            clock: Monotonic seconds, for the offline backoff.
            time_ns: Wall-clock nanoseconds, stamped on each event at ``emit()``.
            rng: Randomness for backoff jitter.
        """
        if max_queue_size < 1 or max_batch_size < 1:
            raise ValueError("max_queue_size and max_batch_size must be >= 1")
        url = url or os.environ.get("ADAPTD_URL") or DEFAULT_URL
        token = token if token is not None else (os.environ.get("ADAPTD_TOKEN") or None)
        self.url = url
        #: Bearer token (None: none); the routing table poller authenticates with it too.
        self.token = token
        self._exporter: Exporter = exporter or HttpExporter(
            url, token, timeout_s=export_timeout_s, compression=compression
        )
        if spill_dir is None:
            key = url if exporter is None else f"custom:{type(exporter).__name__}"
            spill_dir = default_spill_dir(key, token)
        self._spill = Spill(spill_dir, max_spill_bytes, clock=clock) if spill_dir is not False else None
        self._source = source
        self._max_queue = max_queue_size
        self._max_batch = max_batch_size
        self._delay_s = schedule_delay_ms / 1000
        self._max_event_bytes = max_event_bytes
        self._now_ns = time_ns
        self._delivery_config: _DeliveryConfig = {
            "max_retries": max_retries,
            "backoff": Backoff(retry_backoff_s, retry_max_backoff_s),
            "offline_max_s": offline_max_backoff_s,
            "max_batch": max_batch_size,
            "max_request_bytes": max_request_bytes,
            "clock": clock,
            "rng": rng or random.Random(),
        }
        self._own_rng = rng is None
        self._closed = False
        self._logged: set[str] = set()
        self._init_runtime()
        self._atexit = functools.partial(_flush_at_exit, weakref.ref(self), atexit_timeout_s)
        atexit.register(self._atexit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    def _init_runtime(self) -> None:
        """Queue, synchronisation, counters and worker: everything a fork must renew."""
        # Items: tuples from emit() / emit_dict() / emit_built(), or records (emit_record()).
        self._q: collections.deque[Any] = collections.deque(maxlen=self._max_queue)
        # emit() takes its slow path once len(queue) reaches this: a full batch is about
        # to wait (wake the worker), the queue is full (count the drop) or, at -1, shut.
        self._check_at = -1 if self._closed else min(self._max_batch - 1, self._max_queue)
        self._wake = threading.Event()
        self._wake_pending = False
        self._closing = threading.Event()
        self._drained = threading.Event()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._c = dict.fromkeys(
            ("popped", "dropped_queue_full", "dropped_shutdown", "dropped_invalid", "dropped_unsent",
             "exported", "rejected", "spilled", "resent", "export_errors"), 0
        )  # fmt: skip
        self._delivery = Delivery(
            self._exporter, self._spill, self._c, self._log_once, stop=self._closing, **self._delivery_config
        )
        self._thread = threading.Thread(target=self._run, name="adaptd-sdk-worker", daemon=True)
        if self._closed:
            self._drained.set()
            return
        try:
            self._thread.start()
        except RuntimeError as exc:  # e.g. "can't start new thread": degrade, don't fail
            self._log_once("thread", "adaptd: cannot start the export worker: %s", exc)

    # -- the caller's side ---------------------------------------------------------------

    def emit(
        self,
        kind: str,
        _positional: object = NO_POSITIONAL,
        /,
        program: Any = None,
        module: Any = None,
        route: Any = None,
        model: Any = None,
        status: Any = None,
        duration_ms: Any = None,
        tokens_in: Any = None,
        tokens_out: Any = None,
        cost_usd: Any = None,
        error_type: Any = None,
        parent_id: Any = None,
        root_id: Any = None,
        execution_id: Any = None,
        provider: Any = None,
        cache_hit: Any = None,
        **fields: Any,
    ) -> None:
        """Enqueue one event; returns at once, never raises, never blocks.

        Call it as ``emit(kind, **fields)``: every field by keyword. Only the raw fields
        and the time are kept here; the worker adds ``id`` (UUIDv7), ``ts`` and
        ``source`` unless given, validates against ``adaptd.streams.events`` and drops (and
        counts) invalid events. When the queue is full the oldest event is dropped; after
        ``shutdown()`` the event itself is. Both are counted in ``stats()``.

        Why the long signature: collecting ``**fields`` builds a dict on every call,
        which was ~30% of this method's cost. The commonest fields are named parameters
        instead (bound to locals for free; None means "not given") and only the rest go
        through ``**fields``. Their order is not part of the API: a field passed by
        position fills ``_positional`` and the worker drops the event as invalid.

        Args:
            kind: The event kind, e.g. ``"execution"``.
            **fields: The kind's fields; unknown ones end up in the event's ``attrs``.
                ``ts`` may be a datetime, an ISO string or nanoseconds since the epoch.
        """
        q = self._q
        if len(q) >= self._check_at and not self._emit_slow(len(q)):
            return
        # Item layout (see adapters.encode.NAMED_FIELDS): 19 slots, within CPython's
        # tuple free list (< 20), so the allocation is cheap too.
        q.append((kind, self._now_ns(), fields, _positional, program, module, route, model, status,
                  duration_ms, tokens_in, tokens_out, cost_usd, error_type, parent_id, root_id,
                  execution_id, provider, cache_hit))  # fmt: skip

    def emit_dict(self, kind: str, fields: dict[str, Any], /) -> None:
        """``emit(kind, **fields)`` for a dict the caller hands over (no kwargs re-packing).

        ``fields`` becomes the SDK's (the worker completes it in place): pass a fresh
        dict and do not touch it afterwards. Same guarantees as ``emit()``.
        """
        q = self._q
        if len(q) >= self._check_at and not self._emit_slow(len(q)):
            return
        q.append((kind, self._now_ns(), fields))

    def emit_built(self, kind: str, fields: dict[str, Any], /) -> None:
        """``emit_dict()`` for integrations whose own code builds every field (the DSPy
        callback): the worker sends the event without validating it first.

        Validation on the worker costs ~5 µs per event under the host program's GIL; the
        daemon validates every event anyway and dead-letters an invalid one with its
        reason (``/v1/stats`` counts them), so a bug in an integration is still seen.
        Events a user composes go through ``emit()`` / ``emit_dict()``, which validate.
        """
        q = self._q
        if len(q) >= self._check_at and not self._emit_slow(len(q)):
            return
        q.append((kind, self._now_ns(), fields, BUILT))

    def emit_record(self, record: Record, /) -> None:
        """Enqueue an event that builds itself on the worker (``adaptd.adapters.encode.Record``).

        For integrations that record calls (the DSPy callback): the queued object is the
        record itself, nothing else is allocated here, and like ``emit_built()`` the
        worker sends the event without validating it first (the daemon does). A record
        whose ``to_json`` raises is dropped and counted (``dropped_invalid``). Same
        guarantees as ``emit()``: never raises, never blocks, oldest dropped when full.
        """
        q = self._q
        if len(q) >= self._check_at and not self._emit_slow(len(q)):
            return
        q.append(record)

    def feedback(
        self,
        execution: Any,
        score: float | None = None,
        label: str | None = None,
        comment: str | None = None,
        **fields: Any,
    ) -> None:
        """Enqueue a ``feedback`` event on an execution; never raises or blocks.

        Args:
            execution: The execution id (a string or UUID), or a DSPy ``Prediction``
                returned under ``AdaptdCallback`` (its execution is looked up).
            score: A metric's value (bools count as 0 / 1).
            label: A category, e.g. ``"thumbs_up"``.
            comment: Free text.
            **fields: Other feedback fields: ``metric``, ``program``, ``ts``, ``attrs``.

        An execution that cannot be resolved (a Prediction the callback never saw) makes
        an event without ``execution_id``, which the worker drops as invalid and counts.
        """
        eid = getattr(execution, "_adaptd_execution_id", execution)
        if isinstance(score, bool):
            score = float(score)
        self.emit("feedback", execution_id=eid, score=score, label=label, comment=comment, **fields)

    def _emit_slow(self, n: int) -> bool:
        """Returns whether to enqueue (False once shut down)."""
        try:
            c = self._c
            if self._closed:
                c["dropped_shutdown"] += 1
                return False
            if n >= self._max_queue:  # the append about to happen evicts the oldest
                c["dropped_queue_full"] += 1
                if c["dropped_queue_full"] == 1:
                    self._log_once("full", "adaptd: queue full (%d), dropping oldest events", self._max_queue)
            if not self._wake_pending:
                self._wake_pending = True
                self._wake.set()
        except Exception:
            pass
        return True

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event enqueued before the call is handled.

        Handled means acknowledged or rejected by the daemon, dropped as invalid, or
        written to the spill file. Spilled events are re-sent later, not by this call.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True when all were handled in time; False on timeout, when called from the
            worker itself, or when a shutdown could not drain the queue.
        """
        try:
            if self._closed or not self._thread.is_alive():
                return self._drained.is_set() and not self._q
            if threading.current_thread() is self._thread:
                return False
            done = threading.Event()
            with self._waiters_lock:
                self._waiters.append(done)
            self._wake.set()
            return done.wait(timeout)
        except Exception:
            return False

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Drain the queue once, stop the worker and close the exporter and the spill.

        Later ``emit()`` calls drop their event and count it (``dropped_shutdown``). A
        second call only reports whether the first one finished.

        Returns:
            True when the queue was drained within ``timeout`` seconds (None: no limit).
        """
        try:
            with self._shutdown_lock:
                first = not self._closed
                self._closed = True
                self._check_at = -1
            if first:
                atexit.unregister(self._atexit)
                self._closing.set()
                self._wake.set()
            ok = self._drained.wait(timeout)
        except Exception as exc:
            self._log_once("shutdown", "adaptd: shutdown failed: %r", exc)
            return False
        if first and ok:  # a worker still exporting keeps its exporter and spill open
            try:
                self._exporter.shutdown()
            except Exception as exc:
                self._log_once("exporter-shutdown", "adaptd: exporter shutdown failed: %r", exc)
            if self._spill is not None:
                self._spill.close()
        return ok

    def stats(self) -> dict[str, int]:
        """Counters since start (or since the fork that made this process).

        Returns:
            ``enqueued``, ``dropped_queue_full``, ``dropped_shutdown``, ``dropped_invalid``,
            ``dropped_unsent`` (failed with spilling disabled), ``exported`` (acknowledged,
            re-sent ones included), ``rejected`` (refused by the daemon), ``spilled``,
            ``spill_dropped``, ``resent``, ``export_errors`` (failed attempts),
            ``queue_len`` and ``spill_bytes``.
        """
        c = dict(self._c)
        queued = len(self._q)
        c["enqueued"] = c.pop("popped") + queued + c["dropped_queue_full"]
        c["queue_len"] = queued
        c["spill_dropped"] = self._spill.dropped if self._spill else 0
        c["spill_bytes"] = self._spill.bytes if self._spill else 0
        return c

    # -- the worker ----------------------------------------------------------------------

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged and len(self._logged) < 256:
            self._logged.add(key)
            log.warning(msg, *args)

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                woken = self._wake.wait(self._delay_s)
                self._wake.clear()
                self._wake_pending = False
                if self._closing.is_set():
                    break
                with self._waiters_lock:
                    waiters, self._waiters = self._waiters, []
                if waiters or not woken:
                    self._drain(len(self._q))
                else:  # woken early by a full batch: send full batches only
                    self._drain(len(self._q) // self._max_batch * self._max_batch)
                for done in waiters:
                    done.set()
                self._delivery.resend(busy=lambda: len(self._q) >= self._max_batch)
            except Exception as exc:  # a bug must not kill the worker for good
                self._log_once(f"worker:{type(exc).__name__}", "adaptd: export worker error: %r", exc)
        try:
            self._drain(len(self._q))
            self._c["dropped_shutdown"] += len(self._q)  # raced past the closed check
            self._q.clear()
        except Exception as exc:
            self._log_once("final", "adaptd: final drain failed: %r", exc)
        finally:
            self._drained.set()
            with self._waiters_lock:
                for done in self._waiters:
                    done.set()

    def _drain(self, n: int) -> None:
        """Build and deliver the ``n`` oldest queued events, a batch at a time."""
        q = self._q
        while n > 0:
            items = []
            for _ in range(min(n, self._max_batch)):
                try:
                    items.append(q.popleft())
                except IndexError:
                    n = 0
                    break
            n -= len(items)
            self._c["popped"] += len(items)
            kinds, lines, checked = [], [], []
            source, max_bytes = self._source, self._max_event_bytes
            for item in items:
                try:
                    if type(item) is not tuple:  # a record: builds itself, not validated here
                        lines.append(encode_record(item, source, max_bytes))
                        continue
                    line = encode(item, source, max_bytes)
                except InvalidEvent as exc:
                    self._drop_invalid(str(exc))
                    continue
                lines.append(line)
                if len(item) != 4 or item[3] is not BUILT:
                    checked.append(line)
                    kinds.append(item[0])
            valid, reasons = validate_batch(kinds, checked)
            for reason in reasons:
                self._drop_invalid(reason)
            if reasons:  # drop the invalid ones, keeping the queue's order
                invalid = {id(line) for line in checked} - {id(line) for line in valid}
                lines = [line for line in lines if id(line) not in invalid]
            if lines:
                self._delivery.deliver(lines)

    def _drop_invalid(self, reason: str) -> None:
        self._c["dropped_invalid"] += 1
        self._log_once(f"invalid:{reason}", "adaptd: dropped invalid event (%s)", reason)

    def _reinit_after_fork(self) -> None:
        """In a forked child: a fresh queue, counters and worker (the parent keeps its own)."""
        try:
            if self._spill is not None:
                self._spill.reset_after_fork()
            reset = getattr(self._exporter, "reset_after_fork", None)
            if callable(reset):
                reset()
            if self._own_rng:  # or parent and children would retry in lockstep
                self._delivery_config["rng"].seed()
            self._init_runtime()
        except Exception as exc:
            self._log_once("fork", "adaptd: restart after fork failed: %r", exc)
