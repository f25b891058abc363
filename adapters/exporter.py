"""Exporters: how a batch of events travels (the client decides when).

An exporter receives a batch as a list of already-serialized JSON objects (``bytes``, one
event each) and makes exactly one attempt to deliver it. It classifies the outcome as
``ok``, ``permanent`` (resending cannot help: drop and count) or ``transient`` (retry
later, then spill); retries, backoff and spilling belong to the client.

Events arrive serialized because the client needs the bytes anyway (for the spill file)
and re-sent spilled events are never parsed again.
"""

from __future__ import annotations

import gzip
import random
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

Outcome = Literal["ok", "permanent", "transient"]

#: Status codes worth retrying besides 5xx: request timeout and throttling. Every other
#: non-2xx status (400, 401, 403, 413, 415, 422, 404...) is permanent.
TRANSIENT_STATUS = frozenset({408, 429})

#: Longest ``Retry-After`` the client honours, so a bad header cannot stall the worker.
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export attempt achieved.

    Attributes:
        outcome: ``ok`` (the receiver answered for the batch), ``permanent`` (the whole
            batch is refused for good) or ``transient`` (try again later).
        accepted: Events the receiver accepted (``ok`` only).
        rejected: ``(index, reason)`` of events refused inside an ``ok`` batch.
        reason: Why the attempt failed, short and stable enough to log once per reason.
        retry_after: Seconds the receiver asked us to wait (``Retry-After``), if any.
    """

    outcome: Outcome
    accepted: int = 0
    rejected: tuple[tuple[int, str], ...] = ()
    reason: str = ""
    retry_after: float | None = None

    @classmethod
    def success(cls, n: int) -> ExportResult:
        """All ``n`` events accepted."""
        return cls("ok", accepted=n)


class Exporter(Protocol):
    """How a batch is sent. Implementations must be safe to call from one worker thread."""

    def export(self, events: Sequence[bytes]) -> ExportResult:
        """Make one attempt to deliver ``events`` (serialized JSON objects, never empty).

        Returns:
            The outcome. May raise; the client treats an exception as ``transient``.
        """
        ...

    def shutdown(self) -> None:
        """Release resources; called once when the client shuts down."""
        ...


def parse_ack(body: bytes, n: int) -> ExportResult:
    """Turn a 2xx response body into a result.

    Args:
        body: ``{"accepted": n, "rejected": [{"index": i, "reason": "..."}]}``, or anything
            else (an empty or foreign body counts as "all accepted": the status said so).
        n: Events in the batch.

    Returns:
        An ``ok`` result; rejected indices outside ``range(n)`` are ignored.
    """
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return ExportResult.success(n)
    rejected: list[tuple[int, str]] = []
    for item in doc.get("rejected") or ():
        if isinstance(item, dict) and isinstance(item.get("index"), int) and 0 <= item["index"] < n:
            rejected.append((item["index"], str(item.get("reason", "rejected"))[:200]))
    accepted = doc.get("accepted")
    if not isinstance(accepted, int) or accepted < 0:
        accepted = n - len(rejected)
    return ExportResult("ok", accepted=accepted, rejected=tuple(rejected))


def classify_status(status: int, body: bytes, n: int, retry_after: str | None) -> ExportResult:
    """Map an HTTP answer to a result, per the ingest contract.

    2xx is ``ok``; 408, 429 and 5xx are ``transient``; every other status (400, 401, 403,
    413, 422, but also 404 or an unfollowed redirect) is ``permanent``, because resending
    the same bytes to the same URL cannot change the answer.
    """
    if 200 <= status < 300:
        return parse_ack(body, n)
    reason = f"HTTP {status}"
    if status in TRANSIENT_STATUS or status >= 500:
        wait: float | None = None
        if retry_after:
            try:
                wait = min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
            except ValueError:  # an HTTP-date: rare enough to fall back to our own backoff
                wait = None
        return ExportResult("transient", reason=reason, retry_after=wait)
    detail = body[:200].decode("utf-8", "replace").strip()
    return ExportResult("permanent", reason=f"{reason}: {detail}" if detail else reason)


def _suppress_instrumentation() -> object | None:
    """Mark our own HTTP calls as not-to-be-traced when OpenTelemetry is loaded.

    Otherwise an instrumented httpx would turn every export into a span, which an
    OTel bridge would turn into events to export: a feedback loop.
    """
    ctx = sys.modules.get("opentelemetry.context")
    if ctx is None:  # never import it ourselves: the host may not use it
        return None
    try:
        return ctx.attach(ctx.set_value(ctx._SUPPRESS_INSTRUMENTATION_KEY, True))
    except Exception:
        return None


def export_once(exporter: Exporter, events: Sequence[bytes]) -> ExportResult:
    """One attempt through ``exporter``; never raises.

    Returns:
        The exporter's result. An exception becomes ``transient`` with the reason
        ``"exporter raised <type>: <message>"``; a foreign return value counts as
        success when it is None or True and as ``transient`` otherwise.
    """
    token = _suppress_instrumentation()
    try:
        res = exporter.export(events)
        if isinstance(res, ExportResult):
            return res
        if res is None or res is True:
            return ExportResult.success(len(events))
        return ExportResult("transient", reason="exporter reported failure")
    except Exception as exc:
        reason = f"exporter raised {type(exc).__name__}: {str(exc)[:200]}"
        return ExportResult("transient", reason=reason)
    finally:
        if token is not None:
            try:
                sys.modules["opentelemetry.context"].detach(token)  # type: ignore[attr-defined]
            except Exception:
                pass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``k`` waits U(0, min(cap, base*2**k))."""

    initial_s: float = 0.1
    max_s: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return rng.uniform(0, min(self.max_s, self.initial_s * 2**attempt))


def export_with_retries(
    exporter: Exporter,
    events: Sequence[bytes],
    retries: int,
    backoff: Backoff,
    rng: random.Random,
    stop: threading.Event,
) -> tuple[ExportResult, int]:
    """Export, retrying a ``transient`` outcome up to ``retries`` times.

    Waits honour ``Retry-After`` when the receiver sent one; one longer than
    ``backoff.max_s`` ends the retries (the caller then backs off as a whole rather than
    holding the batch). Setting ``stop`` (shutdown) ends the waiting at once.

    Returns:
        The last result and the number of failed (transient) attempts.
    """
    failures = 0
    for attempt in range(retries + 1):
        res = export_once(exporter, events)
        if res.outcome != "transient":
            return res, failures
        failures += 1
        if attempt == retries:
            break
        delay = res.retry_after if res.retry_after is not None else backoff.delay(attempt, rng)
        if delay > backoff.max_s:
            break
        if stop.wait(delay):
            break
    return res, failures


class HttpExporter:
    """POSTs a batch as one JSON array to ``{url}/v1/events`` (the daemon's ingest).

    The ``httpx.Client`` is created on first use, in the thread that exports, and dropped
    (not closed: its sockets belong to the parent) after a fork.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 5.0,
        compression: Literal["gzip"] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Args:
        url: The daemon's base URL, e.g. ``http://127.0.0.1:7710``.
        token: Bearer token sent as ``Authorization`` when given.
        timeout_s: Timeout for connecting, sending and reading each request.
        compression: ``"gzip"`` compresses bodies over 1 KiB; ``None`` (default) sends
            them plain, which is cheaper for a daemon on loopback.
        headers: Extra headers for every request.
        """
        self.endpoint = url.rstrip("/") + "/v1/events"
        self._timeout_s = timeout_s
        self._compression = compression
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http: Any = None

    def _client(self) -> Any:
        if self._http is None:
            import httpx  # lazily: ~100 ms of import the host only pays when it exports

            self._http = httpx.Client(timeout=self._timeout_s, follow_redirects=False)
        return self._http

    def export(self, events: Sequence[bytes]) -> ExportResult:
        """Send ``events`` once. Network errors and timeouts come back as ``transient``."""
        import httpx

        body = b"[" + b",".join(events) + b"]"
        headers = self._headers
        if self._compression == "gzip" and len(body) > 1024:
            body = gzip.compress(body, compresslevel=5)
            headers = {**headers, "Content-Encoding": "gzip"}
        try:
            resp = self._client().post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:  # connect refused, timeouts, protocol errors
            return ExportResult("transient", reason=type(exc).__name__)
        retry_after = resp.headers.get("retry-after")
        return classify_status(resp.status_code, resp.content, len(events), retry_after)

    def reset_after_fork(self) -> None:
        """Forget the parent's connection pool (the child must not share its sockets)."""
        self._http = None

    def shutdown(self) -> None:
        """Close the connection pool; later exports open a new one."""
        http, self._http = self._http, None
        if http is not None:
            http.close()


@dataclass
class InMemoryExporter:
    """Keeps every exported batch in memory, decoded; for tests.

    Attributes:
        batches: One list of event dicts per successful export, in export order.
        result: When set, returned by every export instead of success (nothing is kept).
        shut_down: Whether ``shutdown()`` was called.
    """

    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    result: ExportResult | None = None
    shut_down: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def export(self, events: Sequence[bytes]) -> ExportResult:
        """Record the batch (unless ``result`` says otherwise) and report success."""
        if self.result is not None:
            return self.result
        decoded = [orjson.loads(e) for e in events]
        with self._lock:
            self.batches.append(decoded)
        return ExportResult.success(len(decoded))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every exported event, flattened, in export order."""
        with self._lock:
            return [e for batch in self.batches for e in batch]

    def reset_after_fork(self) -> None:
        """New lock in a forked child (the parent's worker may have held the old one)."""
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget everything exported so far."""
        with self._lock:
            self.batches.clear()

    def shutdown(self) -> None:
        """Mark the exporter shut down (exports still work, so tests can inspect)."""
        self.shut_down = True
