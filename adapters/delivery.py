"""Getting batches to the daemon: send, else retry, else spill; re-send the spill later.

A small state machine owned by the client's worker thread (never shared):

* **online**: a batch is exported with up to ``max_retries`` retries (exponential backoff,
  full jitter). Still failing transiently, it is spilled and we go offline.
* **offline** until a jittered, doubling delay (capped at ``offline_max_s``) expires:
  batches go straight to the spill, so an unreachable daemon never stalls the worker.
  When the delay is over, the next send (a spilled chunk or a new batch) is a probe:
  one attempt, no retries. Success brings us back online; failure doubles the delay.

Spilled events are re-sent oldest first, a bounded number of chunks per worker wake-up,
and removed from the spill once the daemon answered for them (accepted or refused).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

from adaptd.adapters.exporter import Backoff, Exporter, ExportResult, export_with_retries
from adaptd.adapters.spill import Spill

log = logging.getLogger("adaptd.sdk")

#: Spilled chunks re-sent per worker wake-up, so fresh events are never starved.
RESEND_CHUNKS_PER_WAKE = 8


class Delivery:
    """Sends batches for one client's worker thread (not thread-safe by design)."""

    def __init__(
        self,
        exporter: Exporter,
        spill: Spill | None,
        counters: dict[str, int],
        log_once: Callable[..., None],
        *,
        max_retries: int,
        backoff: Backoff,
        offline_max_s: float,
        max_batch: int,
        max_request_bytes: int,
        clock: Callable[[], float],
        rng: random.Random,
        stop: threading.Event,
    ) -> None:
        """Args:
        exporter: How to send.
        spill: Where failed batches wait; None drops them (counted ``dropped_unsent``).
        counters: The client's counters, updated in place.
        log_once: ``log_once(key, msg, *args)``: logs a warning once per key.
        max_retries: Retries of a transient failure while online.
        backoff: Retry backoff; its ``initial_s`` also starts the offline delay.
        offline_max_s: Cap of the delay between probes while offline.
        max_batch: Most events per re-sent chunk.
        max_request_bytes: Most bytes per request (new batches are split to fit).
        clock: Monotonic seconds.
        rng: Jitter.
        stop: Set at shutdown: no more retries or re-sends, just spill.
        """
        self._exporter = exporter
        self._spill = spill
        self._c = counters
        self._log_once = log_once
        self._max_retries = max_retries
        self._backoff = backoff
        self._offline_max_s = offline_max_s
        self._max_batch = max_batch
        self._max_request_bytes = max_request_bytes
        self._clock = clock
        self._rng = rng
        self._stop = stop
        self._offline_until: float | None = None
        self._offline_delay = 0.0

    @property
    def offline(self) -> bool:
        """Whether the last attempt failed and no probe has succeeded since."""
        return self._offline_until is not None

    def _waiting(self) -> bool:
        return self._offline_until is not None and self._clock() < self._offline_until

    def deliver(self, lines: list[bytes]) -> None:
        """Send new events (serialized), split to respect ``max_request_bytes``."""
        start, size = 0, 0
        for i, line in enumerate(lines):
            if size and size + len(line) > self._max_request_bytes:
                self._deliver_part(lines[start:i])
                start, size = i, 0
            size += len(line) + 1
        self._deliver_part(lines[start:])

    def _deliver_part(self, lines: list[bytes]) -> None:
        if self._waiting():
            self._spill_or_drop(lines)  # known unreachable: do not stall on the network
            return
        probing = self.offline
        res = self._send(lines, 0 if probing or self._stop.is_set() else self._max_retries)
        if res.outcome == "transient":
            self._spill_or_drop(lines)
            self._go_offline(res)
            return
        if probing:
            self._go_online()
        self._account(res, len(lines))

    def resend(self, busy: Callable[[], bool]) -> None:
        """Re-send spilled events, oldest first, while ``busy()`` is False.

        Stops at shutdown, while offline (until the probe time), when the spill is empty
        or after ``RESEND_CHUNKS_PER_WAKE`` chunks.
        """
        spill = self._spill
        if spill is None:
            return
        for _ in range(RESEND_CHUNKS_PER_WAKE):
            if self._stop.is_set() or busy() or self._waiting() or not spill.has_backlog():
                return
            chunk = spill.next_chunk(self._max_batch, self._max_request_bytes)
            if not chunk:
                return
            res = self._send(chunk, 0)
            if res.outcome == "transient":
                self._go_offline(res)
                return
            if self.offline:
                self._go_online()
            spill.ack(len(chunk))  # answered for: accepted or refused for good
            self._account(res, len(chunk))
            self._c["resent"] += res.accepted

    def _send(self, lines: Sequence[bytes], retries: int) -> ExportResult:
        res, failures = export_with_retries(
            self._exporter, lines, retries, self._backoff, self._rng, self._stop
        )
        self._c["export_errors"] += failures
        if failures and res.reason.startswith("exporter raised"):
            self._log_once(res.reason.partition(":")[0], "adaptd: %s", res.reason)
        return res

    def _account(self, res: ExportResult, n: int) -> None:
        c = self._c
        if res.outcome == "ok":
            c["exported"] += res.accepted
            c["rejected"] += len(res.rejected)
            for _, reason in res.rejected:
                self._log_once(f"rejected:{reason}", "adaptd: daemon rejected an event: %s", reason)
        else:
            c["rejected"] += n
            key = f"permanent:{res.reason.partition(':')[0]}"
            self._log_once(key, "adaptd: daemon refused a batch: %s", res.reason)

    def _spill_or_drop(self, lines: list[bytes]) -> None:
        if self._spill is None:
            self._c["dropped_unsent"] += len(lines)
            return
        self._c["spilled"] += self._spill.append(lines)

    def _go_offline(self, res: ExportResult) -> None:
        doubled = max(self._backoff.initial_s, self._offline_delay * 2)
        self._offline_delay = min(self._offline_max_s, doubled)
        delay = self._rng.uniform(self._offline_delay / 2, self._offline_delay)
        self._offline_until = self._clock() + max(delay, res.retry_after or 0.0)
        where = self._spill.directory if self._spill else "nowhere (spilling disabled)"
        key = f"offline:{res.reason.partition(':')[0]}"
        self._log_once(key, "adaptd: daemon unreachable (%s); spilling to %s", res.reason, where)

    def _go_online(self) -> None:
        self._offline_until, self._offline_delay = None, 0.0
        log.info("adaptd: daemon reachable again")
