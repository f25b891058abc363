"""The events this package appends to the log, and the appending itself.

Jobs are persisted as ``optimizer_run`` events (source ``adaptd.optimize``), not in a
table of their own: the log is the source of truth and DuckDB a read model rebuilt by
``adaptd replay``, so a jobs table written beside the projection would be lost (or
diverge) on every rebuild, while events replay with everything else.  A job's state is
its latest event; its specification travels in the ``queued`` event's ``details``.
Rollout steps are ``adaptation`` events of the same source; those named like the admin
actions (``canary``, ``promote``, ``rollback``) are obeyed by the routing policy.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from adaptd.daemon.ingest import Limits, prepare
from adaptd.streams.events import new_id

SOURCE = "adaptd.optimize"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def optimizer_run(tenant: str, job_id: str, program: str, optimizer: str, status: str, *, ts: float,
                  details: dict[str, Any], program_version: str | None = None, score_before: float | None = None,
                  score_after: float | None = None, cost_usd: float | None = None,
                  lm_calls: int | None = None) -> dict[str, Any]:
    """An ``optimizer_run`` event dict (``ts`` in epoch seconds)."""
    return {"id": str(new_id()), "ts": _iso(ts), "kind": "optimizer_run", "tenant": tenant, "source": SOURCE,
            "job_id": job_id, "program": program, "optimizer": optimizer, "status": status,
            "program_version": program_version, "score_before": score_before, "score_after": score_after,
            "cost_usd": cost_usd, "lm_calls": lm_calls, "details": details}


def adaptation(tenant: str, action: str, program: str, *, ts: float, reason: str, route: str | None = None,
               details: dict[str, Any] | None = None, caused_by: Sequence[str] = ()) -> dict[str, Any]:
    """An ``adaptation`` event dict of this package (``ts`` in epoch seconds)."""
    return {"id": str(new_id()), "ts": _iso(ts), "kind": "adaptation", "tenant": tenant, "source": SOURCE,
            "action": action, "program": program, "route": route, "reason": reason[:4000],
            "caused_by": [str(c) for c in caused_by], "details": details or {}}


class AppendError(RuntimeError):
    """The events could not be made durable (log closed or failing, or invalid: a bug)."""


class Appender:
    """Appends this package's events durably and waits until DuckDB shows them.

    Args:
        log: the daemon's stream log.
        store: the read model (``position()`` tells how far it has projected).
        limits: ingest limits (events are validated like any other).
    """

    def __init__(self, log: Any, store: Any, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.store, self.limits, self.clock = log, store, limits, clock

    def append(self, events: Sequence[dict[str, Any]], *, timeout: float = 30.0, projected: bool = True) -> list[int]:
        """Append ``events`` and return their offsets once durable; with ``projected``,
        also wait (up to ``timeout``) until the read model has projected them, so the next
        query sees them.  No events: [].

        Raises:
            AppendError: an event is invalid, the log refused or timed out.
        """
        if not events:
            return []
        tenant = events[0]["tenant"]
        prepared = prepare([dict(e) for e in events], tenant=tenant, received=dt.datetime.now(dt.UTC),
                           limits=self.limits, allow_derived=True)
        if prepared.rejected:
            raise AppendError(f"optimize event invalid: {prepared.rejected[0]['reason']}")
        try:
            offsets = self.log.submit(prepared.records).result(timeout=timeout)
        except Exception as exc:
            raise AppendError(f"log refused optimize events: {exc}") from exc
        if projected:
            self.wait_projected(max(offsets) + 1, timeout)
        return list(offsets)

    def wait_projected(self, offset: int, timeout: float) -> bool:
        """Wait until the read model's position reaches ``offset`` (polling, bounded by
        ``timeout``); returns whether it did."""
        deadline = self.clock() + timeout
        while self.store.position() < offset:
            if self.clock() > deadline:
                return False
            time.sleep(0.01)
        return True
