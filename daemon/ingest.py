"""Turning a request body into log records: decode, validate, dead-letter (pure, no I/O).

The hot path of the daemon.  A batch is parsed once with orjson, validated in one
pydantic-core call into plain dicts (which reports every invalid item with its index),
and each valid event is written to the log in canonical form: tenant set from the
credential, unknown fields folded into ``attrs``, ``ts`` in UTC, defaults filled in.
Invalid items become dead-letter records with their reason; they never cost the valid
events beside them: a JSON array that does not parse as a whole (a ``NaN``, a lone
surrogate, nesting past orjson's limit in one item) is split and parsed item by item.

What a client may never write (each refused item is dead-lettered with the reason):

- the kinds the daemon derives itself (``DERIVED_KINDS``: windows, signals, adaptations);
- any event whose ``source`` starts with ``adaptd.`` (``RESERVED_SOURCE_PREFIX``): those
  sources are the daemon's own (``adaptd.optimize`` jobs, ``adaptd.policy`` routing,
  ``adaptd.api`` admin actions, the processors), and the daemon trusts rows of its own
  sources (a job of source ``adaptd.optimize`` is resumed after a restart).  Clients may
  still report ``optimizer_run`` events of their own optimizations under their own
  source; the daemon never takes those for its jobs.  The SDK's default source is
  ``adaptd-python``, which is not reserved;
- events nested deeper than ``limits.max_depth``, or whose ``ts`` is more than
  ``limits.max_future_s`` ahead of the time the daemon received them.

Dead letters are written in full up to ``limits.dead_letters_per_s`` per tenant; beyond,
the item is still answered with its reason but only counted (``Prepared.suppressed``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from adaptd.daemon.dead_letter_limit import DeadLetterLimiter
from adaptd.daemon.json_items import NotAnArray, split_array
from adaptd.streams.events import DEFAULTS, DeadLetter, fold_unknown, new_id, wire_list_adapter

#: Longest payload excerpt kept in a dead letter.
DEAD_LETTER_PAYLOAD_CHARS = 4096


class IngestError(Exception):
    """The whole request is refused; ``status`` is the HTTP status, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


#: Sources that start with this are the daemon's own: clients cannot send them.
RESERVED_SOURCE_PREFIX = "adaptd."


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits (see ``[limits]`` in config).

    One ``Limits`` serves one app: it also holds the app's ``dead_letter_limiter`` (made
    from ``dead_letters_per_s`` unless one is given, e.g. with a test clock), whose state
    every request shares.  ``dataclasses.replace`` keeps the same limiter.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 10_000
    max_event_bytes: int = 256 * 1024
    #: deepest nesting of an event (the event object is level 1); deeper: dead letter
    max_depth: int = 64
    #: an event time further ahead of the receive time is dead-lettered (None: no bound)
    max_future_s: float | None = 300.0
    #: dead letters written in full per tenant per second; beyond, counted only
    dead_letters_per_s: float = 100.0
    dead_letter_limiter: DeadLetterLimiter | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dead_letter_limiter is None:
            object.__setattr__(self, "dead_letter_limiter", DeadLetterLimiter(self.dead_letters_per_s))


@dataclass(slots=True)
class Prepared:
    """What a request turns into: log records in request order, and the verdicts."""

    records: list[bytes] = field(default_factory=list)
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: rejected items answered but not written as dead letters (the tenant's rate is spent)
    suppressed: int = 0
    #: rejected because their ``ts`` was more than ``limits.max_future_s`` ahead
    future: int = 0


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity or gzip), refusing output past ``limit`` bytes.

    Raises:
        IngestError: 415 for an unsupported encoding, 400 for corrupt gzip, 413 when the
            decompressed body exceeds ``limit`` (a zip bomb costs us at most ``limit``).
    """
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip"):
        raise IngestError(415, f"unsupported Content-Encoding {enc!r}: send identity or gzip")
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise IngestError(400, f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise IngestError(413, f"decompressed body exceeds {limit} bytes (limits.max_body_bytes)")
    return out


def parse_items(body: bytes, content_type: str | None) -> list[Any]:
    """Split a body into items: a JSON array, one JSON object, or NDJSON.

    NDJSON is used when the content type says so or the body does not start with ``[``
    or ``{``-and-parse-as-one-object.  A bad NDJSON line becomes a ``_BadLine`` item
    (dead-lettered later) instead of failing the lines beside it.  Likewise a JSON array
    that does not parse as a whole is split into its items (``json_items.split_array``)
    and each bad item becomes a ``_BadLine``.

    Raises:
        IngestError: 400 when a body is empty, or malformed beyond telling its items apart
            (not an array, unclosed, unbalanced).
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    stripped = body.lstrip()
    if not stripped:
        raise IngestError(400, "empty body: send a JSON array of events or NDJSON")
    ndjson = ctype in ("application/x-ndjson", "application/ndjson", "application/jsonl")
    if not ndjson:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if stripped[:1] == b"{" and b"\n" in stripped.strip():
                ndjson = True
            elif stripped[:1] == b"[":
                return _items_one_by_one(body, exc)
            else:
                raise IngestError(400, f"malformed JSON: {exc}") from None
        else:
            if isinstance(value, list):
                return value
            if isinstance(value, dict):
                return [value]
            raise IngestError(400, "body must be a JSON array of event objects, or NDJSON")
    items: list[Any] = []
    for n, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(_BadLine(f"line {n}: malformed JSON: {exc}", line))
    return items


def _items_one_by_one(body: bytes, whole: Exception) -> list[Any]:
    """The items of a JSON array that did not parse as a whole, each parsed alone; the
    bad ones become ``_BadLine`` items.

    Raises:
        IngestError: 400 when the array's items cannot be told apart.
    """
    try:
        slices = split_array(body)
    except NotAnArray as exc:
        raise IngestError(400, f"malformed JSON: {whole} ({exc})") from None
    items: list[Any] = []
    for i, raw in enumerate(slices):
        if not raw:
            items.append(_BadLine(f"item {i}: empty (two commas in a row, or a trailing comma)", raw))
            continue
        try:
            items.append(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            hint = " (NaN and Infinity are not JSON: send null)" if b"NaN" in raw or b"Infinity" in raw else ""
            items.append(_BadLine(f"item {i}: malformed JSON: {exc}{hint}", raw))
    return items


class _BadLine:
    """An NDJSON line that did not parse; kept so its index and bytes reach the dead letters."""

    __slots__ = ("reason", "raw")

    def __init__(self, reason: str, raw: bytes) -> None:
        self.reason = reason
        self.raw = raw


def _reason(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return "; ".join(parts)


def _excerpt(item: Any) -> str:
    """At most ``DEAD_LETTER_PAYLOAD_CHARS`` of ``item`` as JSON; never raises (an item
    too deep for orjson is shown down to ``_EXCERPT_DEPTH`` levels)."""
    if isinstance(item, _BadLine):
        text = item.raw.decode("utf-8", "replace")
    else:
        try:
            text = orjson.dumps(item).decode()
        except (TypeError, ValueError):
            try:
                text = orjson.dumps(_shallow(item, _EXCERPT_DEPTH), default=repr).decode()
            except (TypeError, ValueError):
                text = f"<unprintable {type(item).__name__}>"
    return text[:DEAD_LETTER_PAYLOAD_CHARS]


#: Levels of an over-deep item kept in its dead letter's excerpt.
_EXCERPT_DEPTH = 16


def _shallow(value: Any, levels: int) -> Any:
    """``value`` with what lies deeper than ``levels`` replaced by ``"..."`` (recursion
    bounded by ``levels``; containers are cut to their first 100 entries)."""
    if isinstance(value, dict):
        if levels <= 0:
            return "..."
        return {str(k): _shallow(v, levels - 1) for k, v in list(value.items())[:100]}
    if isinstance(value, list):
        if levels <= 0:
            return "..."
        return [_shallow(v, levels - 1) for v in value[:100]]
    return value


def nesting_exceeds(item: Any, limit: int) -> bool:
    """Whether ``item`` holds dicts or lists more than ``limit`` levels deep (the item
    itself is level 1; a scalar is level 0).  Iterative: any depth is safe to check."""
    stack = [(item, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, level = pop()
        if level > limit:
            return True
        for child in (value.values() if type(value) is dict else value):
            if type(child) is dict or type(child) is list:
                push((child, level + 1))
    return False


#: Kinds only the daemon makes (processors' windows and signals, routing tables and admin
#: actions): a client sending them could forge its own history, alerts or routing.
DERIVED_KINDS = frozenset({"window", "signal", "adaptation"})


def prepare(
    items: list[Any], *, tenant: str, received: dt.datetime, limits: Limits, source: str = "",
    allow_derived: bool = False,
) -> Prepared:
    """Validate ``items`` for ``tenant`` and build the log records.

    Every item gets a verdict: valid events become records (tenant forced to ``tenant``,
    whatever the payload said); invalid ones get an entry in ``rejected`` with their index
    and reason, and a dead-letter record while the tenant's dead-letter rate allows
    (``Prepared.suppressed`` counts the others).  Unless ``allow_derived`` (the daemon's
    own events: admin actions, optimizer jobs), events of ``DERIVED_KINDS``, of a source
    starting with ``RESERVED_SOURCE_PREFIX``, or with ``ts`` more than
    ``limits.max_future_s`` after ``received`` are rejected.  Events nested deeper than
    ``limits.max_depth`` are always rejected.  An empty list gives an empty result.

    Raises:
        IngestError: 413 when there are more than ``limits.max_batch_events`` items.
    """
    if len(items) > limits.max_batch_events:
        raise IngestError(
            413,
            f"batch has {len(items)} events; the limit is {limits.max_batch_events}"
            " (limits.max_batch_events): split it",
        )
    reasons: dict[int, str] = {}
    candidates: list[dict[str, Any]] = []
    positions: list[int] = []
    max_depth = limits.max_depth
    for i, item in enumerate(items):
        if isinstance(item, _BadLine):
            reasons[i] = item.reason
        elif not isinstance(item, dict):
            reasons[i] = f"event must be a JSON object, got {type(item).__name__}"
        elif nesting_exceeds(item, max_depth):
            reasons[i] = f"event is nested more than {max_depth} levels deep (limits.max_depth)"
        elif not allow_derived and item.get("kind") in DERIVED_KINDS:
            reasons[i] = (f"kind {item['kind']!r} is made by the daemon itself and cannot be sent"
                          " (routing actions: POST /v1/routing/<program>/<action>)")
        elif not allow_derived and _reserved(item.get("source")):
            reasons[i] = (f"source {item['source']!r} is reserved for the daemon itself (sources starting with"
                          f" {RESERVED_SOURCE_PREFIX!r}): name your own source")
        else:
            item["tenant"] = tenant
            if source and not item.get("source"):
                item["source"] = source
            fold_unknown(item)
            candidates.append(item)
            positions.append(i)

    try:
        valid = wire_list_adapter.validate_python(candidates)
    except ValidationError as exc:
        # One pydantic call reports every invalid item; validate the rest once more.
        by_item: dict[int, list[dict[str, Any]]] = {}
        for err in exc.errors(include_url=False):
            by_item.setdefault(err["loc"][0], []).append(err)
        for j, errs in by_item.items():
            reasons[positions[j]] = _reason(errs)
        valid = wire_list_adapter.validate_python([c for j, c in enumerate(candidates) if j not in by_item])

    out = Prepared()
    valid_iter = iter(valid)
    dumps = orjson.dumps
    max_bytes = limits.max_event_bytes
    utc = dt.UTC
    latest = None
    if limits.max_future_s is not None and not allow_derived:
        latest = received + dt.timedelta(seconds=limits.max_future_s)
    limiter = limits.dead_letter_limiter
    for i, item in enumerate(items):
        reason = reasons.get(i)
        if reason is None:
            event = next(valid_iter)
            ts = event["ts"]
            if ts.tzinfo is None:
                event["ts"] = ts = ts.replace(tzinfo=utc)
            elif ts.utcoffset():
                try:
                    event["ts"] = ts = ts.astimezone(utc)
                except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC time
                    reason = f"ts {ts.isoformat()} is out of range once converted to UTC"
            if reason is None and latest is not None and ts > latest:
                out.future += 1
                reason = (f"ts {ts.isoformat()} is {(ts - received).total_seconds():.0f} s ahead of the daemon's clock;"
                          f" the limit is {limits.max_future_s:g} s (limits.max_future_s): fix the sender's clock")
            elif reason is None:
                try:
                    record = dumps({**DEFAULTS[event["kind"]], **event})
                except TypeError as exc:  # orjson's own nesting limit, below max_depth when it is set high
                    reason = f"event cannot be stored: {exc}"
                else:
                    if len(record) <= max_bytes:
                        out.records.append(record)
                        out.accepted += 1
                        continue
                    reason = f"event is {len(record)} bytes; the limit is {max_bytes} (limits.max_event_bytes)"
        out.rejected.append({"index": i, "reason": reason})
        if limiter is None or limiter.take(tenant, 1):
            out.records.append(dead_letter(item, reason, tenant=tenant, received=received, source=source))
        else:
            out.suppressed += 1
    return out


def _reserved(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(RESERVED_SOURCE_PREFIX)


def dead_letter(item: Any, reason: str, *, tenant: str, received: dt.datetime, source: str = "") -> bytes:
    """The log record of a dead letter for ``item``."""
    letter = DeadLetter(
        id=new_id(), ts=received, tenant=tenant, source=source, reason=reason, payload=_excerpt(item)
    )
    return orjson.dumps(letter.model_dump(mode="json"))


def gzip_body(data: bytes) -> bytes:
    """gzip ``data`` (for clients and tests)."""
    return gzip.compress(data)
