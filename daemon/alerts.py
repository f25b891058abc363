"""Alert sinks: deliver anomaly and drift ``signal`` events to webhooks, commands and files.

``AlertDispatcher`` follows the log as consumer group ``alerts`` in its own thread (so
ingest never waits for it): it picks the ``signal`` records, keeps the states and
severities the settings ask for (by default ``open`` and ``resolved``: one incident, two
messages), drops repeats of an id it delivered recently (a processor restart re-emits
its last signals) and signals older than ``max_age_s`` (a processor rebuild re-emits
history), and hands each signal to every sink's bounded queue.  One worker thread per
sink delivers:

- **webhook**: ``POST`` the signal JSON with a timeout; connection errors, 408, 429 and
  5xx are retried with exponential backoff, other answers are failures;
- **command**: run ``argv`` (no shell) with the signal JSON on stdin and a timeout; a
  non-zero exit is a failure;
- **file**: append the signal as one NDJSON line.

Failures are logged and counted (``stats``), never raised.  A full queue drops its oldest
signal and counts it.  The group's position is committed only up to the oldest signal a
sink has not finished, so a restart re-delivers what was pending (at least once).
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adaptd.streams.log.base import LogError, StreamLog
from adaptd.streams.processors.base import to_us

logger = logging.getLogger("adaptd.alerts")

_SEVERITY = {"info": 0, "warning": 1, "critical": 2}


class WebhookSink(BaseModel):
    """POST each signal as JSON to ``url``."""

    model_config = ConfigDict(extra="forbid")

    url: str
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=20, description="attempts after the first")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="first pause; doubles per retry")
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook url {value!r} must start with http:// or https://")
        return value


class CommandSink(BaseModel):
    """Run ``argv`` (no shell) with the signal JSON on stdin."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=10.0, gt=0, le=600)


class FileSink(BaseModel):
    """Append each signal to ``path`` as one JSON line."""

    model_config = ConfigDict(extra="forbid")

    path: Path


class AlertSettings(BaseModel):
    """Where signals go (``[alerts]`` in the config; ``ADAPTD_ALERTS__...`` in the env)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="run the dispatcher when at least one sink is configured")
    webhooks: list[WebhookSink] = Field(default_factory=list)
    commands: list[CommandSink] = Field(default_factory=list)
    files: list[FileSink] = Field(default_factory=list)
    states: list[Literal["open", "update", "resolved"]] = Field(default=["open", "resolved"], min_length=1)
    min_severity: Literal["info", "warning", "critical"] = Field(
        default="info", description="open / update signals below it are not sent (resolved always are)")
    max_age_s: float | None = Field(default=3600.0, gt=0, description="skip signals older than this (event time vs now)")
    from_beginning: bool = Field(default=False, description="first start: read the whole log (default: only new signals)")
    queue_size: int = Field(default=1000, ge=1, description="signals waiting per sink; beyond, the oldest is dropped")
    batch: int = Field(default=1000, ge=1)
    poll_s: float = Field(default=0.5, gt=0, le=60)

    @property
    def has_sinks(self) -> bool:
        """True when at least one sink is configured."""
        return bool(self.webhooks or self.commands or self.files)


# ---------------------------------------------------------------------- sinks


class Sink:
    """A bounded queue and a worker thread delivering to one destination.

    Counters: ``delivered``, ``failed``, ``retries``, ``dropped`` (queue overflow) and
    ``last_error``.
    """

    kind = "sink"

    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self._queue: deque[tuple[int, dict, bytes]] = deque()
        self._size = queue_size
        self._cond = threading.Condition()
        self._busy: int | None = None  # offset being delivered
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self.delivered = self.failed = self.retries = self.dropped = 0
        self.last_error: str | None = None

    def offer(self, offset: int, event: dict, body: bytes) -> None:
        """Queue a signal (never blocks; a full queue drops its oldest)."""
        with self._cond:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((offset, event, body))
            self._cond.notify()

    def pending(self) -> int | None:
        """The lowest log offset queued or being delivered (None: idle)."""
        with self._cond:
            offsets = [self._queue[0][0]] if self._queue else []
            if self._busy is not None:
                offsets.append(self._busy)
            return min(offsets, default=None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"adaptd-alerts-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Finish the queue until ``deadline`` (monotonic), then end the worker."""
        self._deadline = deadline
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if not self._queue or (self._stop.is_set() and time.monotonic() >= self._deadline):
                    return
                offset, event, body = self._queue.popleft()
                self._busy = offset
            try:
                error = self.deliver(event, body)
            except Exception as exc:  # a sink never takes the dispatcher down
                error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._busy = None
                if error is None:
                    self.delivered += 1
                else:
                    self.failed += 1
                    self.last_error = error
                    logger.warning("alert sink %s: signal %s not delivered: %s", self.name, event.get("id"), error)

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (less when stopping past the deadline); False: give up now."""
        if self._stop.is_set():  # draining: pause only if the deadline allows it
            if time.monotonic() + seconds >= self._deadline:
                return False
            time.sleep(seconds)
            return True
        self._stop.wait(seconds)  # a stop cuts the pause short; the drain decides the rest
        return not (self._stop.is_set() and time.monotonic() >= self._deadline)

    def deliver(self, event: dict, body: bytes) -> str | None:
        """Deliver one signal; return None on success, else the reason it failed."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (after ``stop``)."""

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {"sink": self.kind, "name": self.name, "delivered": self.delivered, "failed": self.failed,
                "retries": self.retries, "dropped": self.dropped, "queued": queued, "last_error": self.last_error}


class WebhookDelivery(Sink):
    kind = "webhook"

    def __init__(self, config: WebhookSink, queue_size: int) -> None:
        super().__init__(config.url, queue_size)
        self.config = config
        self._client = httpx.Client(timeout=config.timeout_s, follow_redirects=False)

    def deliver(self, event: dict, body: bytes) -> str | None:
        c = self.config
        headers = {"content-type": "application/json", "user-agent": "adaptd-alerts", **c.headers}
        reason = "not attempted"
        for attempt in range(c.retries + 1):
            try:
                response = self._client.post(c.url, content=body, headers=headers)
                status = response.status_code
                if 200 <= status < 300:
                    return None
                reason = f"HTTP {status}"
                if status < 500 and status not in (408, 429):
                    return reason  # the receiver refused this signal: retrying will not help
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < c.retries:
                self.retries += 1
                if not self._pause(c.backoff_s * 2**attempt):
                    return f"{reason} (stopped before retrying)"
        return f"{reason} after {c.retries + 1} attempts"

    def close(self) -> None:
        self._client.close()


class CommandDelivery(Sink):
    kind = "command"

    def __init__(self, config: CommandSink, queue_size: int) -> None:
        super().__init__(" ".join(config.argv), queue_size)
        self.config = config

    def deliver(self, event: dict, body: bytes) -> str | None:
        try:
            done = subprocess.run(self.config.argv, input=body + b"\n", capture_output=True,
                                  timeout=self.config.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return f"timed out after {self.config.timeout_s}s (killed)"
        except OSError as exc:
            return f"cannot run {self.config.argv[0]!r}: {exc}"
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
            return f"exit status {done.returncode}" + (f": {tail}" if tail else "")
        return None


class FileDelivery(Sink):
    kind = "file"

    def __init__(self, config: FileSink, queue_size: int) -> None:
        super().__init__(str(config.path), queue_size)
        self.path = Path(config.path)

    def deliver(self, event: dict, body: bytes) -> str | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:  # one write per line: lines never interleave
                fh.write(body + b"\n")
        except OSError as exc:
            return f"cannot append to {self.path}: {exc}"
        return None


def build_sinks(settings: AlertSettings) -> list[Sink]:
    """One delivery worker per configured sink (none started)."""
    q = settings.queue_size
    return ([WebhookDelivery(w, q) for w in settings.webhooks] + [CommandDelivery(c, q) for c in settings.commands]
            + [FileDelivery(f, q) for f in settings.files])


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
        if state != "resolved" and _SEVERITY.get(event.get("severity", ""), 1) < _SEVERITY[s.min_severity]:
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


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/\s?#'\"]+)[^\s'\"]*")


def redact_url(text: str) -> str:
    """``text`` with every URL cut to ``scheme://host/…`` (credentials, path and query gone).

    Webhook URLs often carry their secret in the path or query (Slack, Discord), and
    error messages repeat the URL.  Text without a URL comes back unchanged.
    """
    def cut(match: re.Match[str]) -> str:
        host = match.group(2).rpartition("@")[2]  # user:password@ goes too
        return f"{match.group(1)}://{host}/…"

    return _URL.sub(cut, text)


def redacted_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``AlertDispatcher.stats()`` safe to show: URLs redacted (``redact_url``),
    a command sink named by its program only (its arguments may hold secrets)."""
    out = {**stats, "last_error": redact_url(stats["last_error"]) if stats.get("last_error") else stats.get("last_error")}
    sinks = []
    for sink in stats.get("sinks", []):
        sink = dict(sink)
        name = str(sink.get("name", ""))
        sink["name"] = name.split(" ", 1)[0] + (" …" if " " in name else "") if sink.get("sink") == "command" \
            else redact_url(name)
        if sink.get("last_error"):
            sink["last_error"] = redact_url(str(sink["last_error"]))
        sinks.append(sink)
    out["sinks"] = sinks
    return out
