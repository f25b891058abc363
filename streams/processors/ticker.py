"""When the daemon's clock appends a tick, so that windows of quiet traffic close.

Windows close on the watermark, and the watermark moves only with event time: when every
client goes quiet, the last windows would stay open until the next event, however long
that takes.  So while live traffic is quiet, the daemon appends a *tick* record to the log,
stamped with the wall clock; the runtime counts it for the watermark in log order like an
event (and hides it from processors).  Being in the log, a tick is seen by replay exactly
as it was live, so replay reproduces the closes it caused.

Ticks are for live traffic only.  Traffic is live when the newest events were at most
``live_lag_s`` old (event time against the wall clock) when the runtime processed them:
a client sending old events (a backfill of the last day) never gets ticks, which would
make its later events late.  Ticks start once the newest event time is ``first_s`` old and
stop once it is older than ``horizon_s`` (the longest window plus the allowed lateness:
by then every window it could close is closed).  Every ``fast_s`` for the first
``slow_after_s`` of quiet, then every ``slow_s``.  Pure: the caller passes the times.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import orjson

from adaptd.streams.events import TICK_KIND, new_id

#: The ``source`` of tick records.
SOURCE = "adaptd.clock"


@dataclass(slots=True)
class Ticker:
    """Decides when a tick is due (see the module docstring); times in seconds."""

    horizon_s: float
    live_lag_s: float = 60.0
    first_s: float = 0.25
    fast_s: float = 0.25
    slow_after_s: float = 60.0
    slow_s: float = 10.0
    last_tick_s: float = float("-inf")

    def due(self, now_s: float, live_high_s: float | None, lag_s: float | None) -> bool:
        """Whether to tick at wall time ``now_s`` when the newest event time seen is
        ``live_high_s`` and the newest events were ``lag_s`` old when processed (either
        None, as before any event or after a restart: never)."""
        if live_high_s is None or lag_s is None or lag_s > self.live_lag_s:
            return False
        quiet = now_s - live_high_s
        if quiet < self.first_s or quiet > self.horizon_s:
            return False
        return now_s - self.last_tick_s >= (self.fast_s if quiet < self.slow_after_s else self.slow_s)


def tick_record(now_s: float) -> bytes:
    """The log record of a tick at wall time ``now_s``: no tenant, so no tenant's reads or
    tail ever show it, and a kind clients cannot send (ingest refuses unknown kinds)."""
    ts = dt.datetime.fromtimestamp(now_s, dt.UTC).isoformat()
    return orjson.dumps({"id": str(new_id()), "ts": ts, "kind": TICK_KIND, "source": SOURCE})
