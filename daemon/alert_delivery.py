"""Alert delivery workers: one bounded queue and one thread per configured sink.

- **webhook**: ``POST`` the signal JSON;
- **slack**: ``POST`` a Slack incoming-webhook message (``text`` + ``blocks``);
- **pagerduty**: ``POST`` an Events API v2 event (trigger on open/update, resolve on
  resolved, ``dedup_key`` = the incident id);
- **apprise**: notify one Apprise URL (Opsgenie, Microsoft Teams, email, ...); Apprise is
  imported only when such a sink is built;
- **command**: run ``argv`` (no shell) with the signal JSON on stdin and a timeout;
- **file**: append the signal as one NDJSON line.

HTTP sinks retry connection errors, 408, 429 and 5xx with exponential backoff (a 429's
``Retry-After`` is honoured up to ``max_retry_after_s``); other answers are failures.
Apprise does not say why a notification failed, so every Apprise failure is retried.
Failures are logged and counted (``stats``), never raised.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import orjson

from adaptd.daemon.alert_config import (
    AlertSettings,
    CommandSink,
    FileSink,
    HttpSink,
    PagerDutySink,
    SlackSink,
    WebhookSink,
)
from adaptd.daemon.alert_format import apprise_message, pagerduty_event, redact_url, slack_message

logger = logging.getLogger("adaptd.alerts")


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
                    logger.warning("alert sink %s %s: signal %s not delivered: %s", self.kind, redact_url(self.name),
                                   event.get("id"), redact_url(error))

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
        """Deliver one signal; return None on success, else the reason it failed.

        Every sink class overrides this (the webhook, Slack, PagerDuty, Apprise, command
        and file sinks); the base class has nothing to deliver to.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (after ``stop``)."""

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {"sink": self.kind, "name": self.name, "delivered": self.delivered, "failed": self.failed,
                "retries": self.retries, "dropped": self.dropped, "queued": queued, "last_error": self.last_error}


def retry_after(value: str | None, limit: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, at most ``limit``; None when absent
    or not a number of seconds (an HTTP date is ignored: the backoff applies)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds != seconds or seconds < 0 else min(seconds, limit)


class HttpDelivery(Sink):
    """POST a JSON body per signal (``body_for``) to ``url``, with retries."""

    kind = "http"

    def __init__(self, config: HttpSink, url: str, queue_size: int, headers: dict[str, str] | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        super().__init__(url, queue_size)
        self.config, self.url, self._secrets = config, url, secrets
        self._headers = {"content-type": "application/json", "user-agent": "adaptd-alerts", **(headers or {})}
        self._client = httpx.Client(timeout=config.timeout_s, follow_redirects=False)

    def body_for(self, event: dict, body: bytes) -> bytes:
        """The request body for a signal (``body``: the signal event as JSON)."""
        return body

    def _refused(self, response: httpx.Response) -> str:
        """``HTTP 400: <the receiver's reason>`` with any secret of this sink cut out."""
        text = response.text.strip().replace("\n", " ")[:200]
        for secret in self._secrets:
            text = text.replace(secret, "…")
        return f"HTTP {response.status_code}" + (f": {text}" if text else "")

    def deliver(self, event: dict, body: bytes) -> str | None:
        c = self.config
        content = self.body_for(event, body)
        reason = "not attempted"
        for attempt in range(c.retries + 1):
            wait = c.backoff_s * 2**attempt
            try:
                response = self._client.post(self.url, content=content, headers=self._headers)
                status = response.status_code
                if 200 <= status < 300:
                    return None
                if status < 500 and status not in (408, 429):
                    return self._refused(response)  # the receiver refused this signal: retrying will not help
                reason = f"HTTP {status}"
                asked = retry_after(response.headers.get("retry-after"), c.max_retry_after_s)
                if status == 429 and asked is not None:
                    wait = max(wait, asked)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < c.retries:
                self.retries += 1
                if not self._pause(wait):
                    return f"{reason} (stopped before retrying)"
        return f"{reason} after {c.retries + 1} attempts"

    def close(self) -> None:
        self._client.close()


class WebhookDelivery(HttpDelivery):
    kind = "webhook"

    def __init__(self, config: WebhookSink, queue_size: int) -> None:
        super().__init__(config, config.url, queue_size, headers=config.headers)


class SlackDelivery(HttpDelivery):
    kind = "slack"

    def __init__(self, config: SlackSink, queue_size: int) -> None:
        super().__init__(config, config.url, queue_size)

    def body_for(self, event: dict, body: bytes) -> bytes:
        return orjson.dumps(slack_message(event))


class PagerDutyDelivery(HttpDelivery):
    kind = "pagerduty"

    def __init__(self, config: PagerDutySink, queue_size: int) -> None:
        key = config.routing_key.get_secret_value()
        super().__init__(config, config.url, queue_size, secrets=(key,))
        self._key, self._pd = key, config

    def body_for(self, event: dict, body: bytes) -> bytes:
        return orjson.dumps(pagerduty_event(event, self._key, self._pd.severity, self._pd.source))


class AppriseDelivery(Sink):
    """Notify one Apprise URL; named ``scheme://…`` (the rest of an Apprise URL is secret)."""

    kind = "apprise"

    def __init__(self, url: str, retries: int, backoff_s: float, queue_size: int) -> None:
        super().__init__(url.partition("://")[0] + "://…", queue_size)
        apprise = importlib.import_module("apprise")  # only here: a daemon without such a sink never loads it
        self._apprise = apprise.Apprise()
        if not self._apprise.add(url):
            raise ValueError(f"{self.name}: not a URL Apprise can notify")
        self._retries, self._backoff_s = retries, backoff_s

    def deliver(self, event: dict, body: bytes) -> str | None:
        title, text, notify_type = apprise_message(event)
        reason = "not attempted"
        for attempt in range(self._retries + 1):
            result = self._apprise.notify(body=text, title=title, notify_type=notify_type)
            if result:
                return None
            logs = [str(getattr(e, "message", e)) for e in getattr(result, "logs", list)()]  # Apprise >= 2
            reason = logs[-1] if logs else "Apprise reported a failure"
            if attempt < self._retries:
                self.retries += 1
                if not self._pause(self._backoff_s * 2**attempt):
                    return f"{reason} (stopped before retrying)"
        return f"{reason} after {self._retries + 1} attempts"


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
    """One delivery worker per configured sink (one per Apprise URL); none started."""
    q = settings.queue_size
    sinks: list[Sink] = [WebhookDelivery(w, q) for w in settings.webhooks]
    sinks += [SlackDelivery(s, q) for s in settings.slack]
    sinks += [PagerDutyDelivery(p, q) for p in settings.pagerduty]
    sinks += [AppriseDelivery(url.get_secret_value(), a.retries, a.backoff_s, q)
              for a in settings.apprise for url in a.urls]
    sinks += [CommandDelivery(c, q) for c in settings.commands]
    sinks += [FileDelivery(f, q) for f in settings.files]
    return sinks
