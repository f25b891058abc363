"""Alerts: deliver anomaly and drift ``signal`` events to the services teams use.

``AlertDispatcher`` follows the log as consumer group ``alerts`` in its own thread (so
ingest never waits for it): it picks the ``signal`` records, keeps the states and
severities the settings ask for (by default ``open`` and ``resolved``: one incident, two
messages), drops repeats of an id it delivered recently (a processor restart re-emits
its last signals) and signals older than ``max_age_s`` (a processor rebuild re-emits
history), and hands each signal to every sink's bounded queue.  One worker thread per
sink delivers (``alert_delivery``): webhook, Slack, PagerDuty, Apprise (Opsgenie,
Microsoft Teams, email, ...), command, file.  The settings are in ``alert_config``, the
messages in ``alert_format``; this module re-exports them as before.

Failures are logged and counted (``stats``), never raised.  A full queue drops its oldest
signal and counts it.  The group's position is committed only up to the oldest signal a
sink has not finished, so a restart re-delivers what was pending (at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from adaptd.daemon.alert_config import (
    SEVERITY,
    AlertSettings,
    AppriseSink,
    CommandSink,
    FileSink,
    PagerDutySink,
    SlackSink,
    WebhookSink,
)
from adaptd.daemon.alert_delivery import (
    AppriseDelivery,
    CommandDelivery,
    FileDelivery,
    PagerDutyDelivery,
    Sink,
    SlackDelivery,
    WebhookDelivery,
    build_sinks,
)
from adaptd.daemon.alert_format import redact_url
from adaptd.streams.log.base import LogError, StreamLog
from adaptd.streams.processors.base import to_us

__all__ = ["AlertDispatcher", "AlertSettings", "AppriseDelivery", "AppriseSink", "CommandDelivery", "CommandSink",
           "FileDelivery", "FileSink", "PagerDutyDelivery", "PagerDutySink", "Sink", "SlackDelivery", "SlackSink",
           "WebhookDelivery", "WebhookSink", "build_sinks", "redact_url", "redacted_stats"]

logger = logging.getLogger("adaptd.alerts")


# ---------------------------------------------------------------------- dispatcher


class AlertDispatcher:
    """Follows the log (group ``alerts``) and feeds the sinks.  See the module docstring.

    Counters: ``signals`` (accepted for delivery), ``filtered`` (state / severity / age),
    ``duplicates``, ``unreadable``, ``errors`` / ``last_error`` (log failures).
    """

    def __init__(self, log: StreamLog, settings: AlertSettings, *, group: str = "alerts",
                 clock: Callable[[], float] = time.time, remember: int = 10_000, partition: int = 0) -> None:
        """Args:
            log: the stream log to follow.
            settings: sinks and filters.
            group: consumer group whose position is committed.
            clock: wall-clock seconds (only for ``max_age_s``).
            remember: how many delivered signal ids are remembered to drop repeats.
        """
        self.log, self.settings, self.group, self.partition = log, settings, group, partition
        self.sinks = build_sinks(settings)
        self._clock, self._remember = clock, remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.position = 0
        self.committed: int | None = None
        self.signals = self.filtered = self.duplicates = self.unreadable = self.errors = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the sink workers and the log follower."""
        committed = self.log.committed(self.group, self.partition)
        if committed is not None:
            self.position = committed
        elif self.settings.from_beginning:
            self.position = self.log.start_offset(self.partition)
        else:
            self.position = self.log.end_offset(self.partition)
        for sink in self.sinks:
            sink.start()
        self._thread = threading.Thread(target=self._loop, name="adaptd-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following, let the sinks finish their queues for up to ``timeout`` s,
        commit what was delivered.  Safe before ``start`` and twice."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        for sink in self.sinks:
            sink.stop(deadline)
        for sink in self.sinks:
            sink.close()
        self._commit()

    # ------------------------------------------------------------------ following

    def _loop(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            try:
                records = self.log.read(self.position, s.batch, self.partition)
                if records:
                    for record in records:
                        self._take(record.offset, record.value)
                    self.position = records[-1].offset + 1
                self._commit()
                if not records:
                    self.log.wait(self.position, s.poll_s, self.partition)
            except Exception as exc:  # the log may recover; never die
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.error("alerts: %s", self.last_error)
                self._stop.wait(s.poll_s)

    def _take(self, offset: int, value: bytes) -> None:
        if b'"signal"' not in value:  # cheap: most records are source events
            return
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return
        if not isinstance(event, dict) or event.get("kind") != "signal":
            return
        if not self._wanted(event):
            self.filtered += 1
            return
        sid = str(event.get("id"))
        if sid in self._seen:
            self.duplicates += 1
            return
        self._seen[sid] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self.signals += 1
        body = orjson.dumps(event)
        for sink in self.sinks:
            sink.offer(offset, event, body)

    def _wanted(self, event: dict) -> bool:
        s = self.settings
        state = event.get("state", "open")
        if state not in s.states:
            return False
        if state != "resolved" and SEVERITY.get(event.get("severity", ""), 1) < SEVERITY[s.min_severity]:
            return False
        if s.max_age_s is not None:
            try:
                age = self._clock() - to_us(event["ts"]) / 1e6
            except (KeyError, TypeError, ValueError):
                return False
            if age > s.max_age_s:
                return False
        return True

    def _commit(self) -> None:
        pending = [p for p in (sink.pending() for sink in self.sinks) if p is not None]
        upto = min([self.position, *pending])
        if upto == self.committed:
            return
        try:
            self.log.commit(self.group, upto, self.partition)
            self.committed = upto
        except LogError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("alerts: cannot commit position %d: %s", upto, exc)

    def lag(self) -> int:
        """Records in the log not looked at yet."""
        return max(0, self.log.end_offset(self.partition) - self.position)

    def stats(self) -> dict[str, Any]:
        """Figures for ``/v1/stats`` (JSON-ready)."""
        try:
            lag = self.lag()
        except LogError:
            lag = None
        return {"position": self.position, "committed": self.committed, "lag": lag, "signals": self.signals,
                "filtered": self.filtered, "duplicates": self.duplicates, "unreadable": self.unreadable,
                "errors": self.errors, "last_error": self.last_error, "sinks": [s.stats() for s in self.sinks]}


def redacted_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``AlertDispatcher.stats()`` safe to show: URLs redacted (``redact_url``;
    Apprise URLs to their scheme), a command sink named by its program only (its arguments
    may hold secrets).  Sinks that redact to the same name are told apart by `` #2``, ``#3``."""
    out = {**stats, "last_error": redact_url(stats["last_error"]) if stats.get("last_error") else stats.get("last_error")}
    sinks, names = [], set()
    for sink in stats.get("sinks", []):
        sink = dict(sink)
        name, kind = str(sink.get("name", "")), sink.get("sink")
        if kind == "command":
            name = name.split(" ", 1)[0] + (" …" if " " in name else "")
        else:
            name = redact_url(name, keep_host=kind != "apprise")
        unique, n = name, 1
        while unique in names:  # two Slack channels are both https://hooks.slack.com/…
            n += 1
            unique = f"{name} #{n}"
        names.add(unique)
        sink["name"] = unique
        if sink.get("last_error"):
            sink["last_error"] = redact_url(str(sink["last_error"]), keep_host=kind != "apprise")
        sinks.append(sink)
    out["sinks"] = sinks
    return out
