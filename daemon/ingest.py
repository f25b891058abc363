"""Turning a request body into log records: decode, validate, dead-letter (pure, no I/O).

The hot path of the daemon.  A batch is parsed once with orjson, validated in one
pydantic-core call into plain dicts (which reports every invalid item with its index),
and each valid event is written to the log in canonical form: tenant set from the
credential, unknown fields folded into ``attrs``, ``ts`` in UTC, defaults filled in.
Invalid items become dead-letter records with their reason; they never cost the valid
events beside them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from adaptd.streams.events import DEFAULTS, DeadLetter, fold_unknown, new_id, wire_list_adapter

#: Longest payload excerpt kept in a dead letter.
DEAD_LETTER_PAYLOAD_CHARS = 4096


class IngestError(Exception):
    """The whole request is refused; ``status`` is the HTTP status, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits (see ``[limits]`` in config)."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 10_000
    max_event_bytes: int = 256 * 1024


@dataclass(slots=True)
class Prepared:
    """What a request turns into: log records in request order, and the verdicts."""

    records: list[bytes] = field(default_factory=list)
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


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
    (dead-lettered later) instead of failing the lines beside it.

    Raises:
        IngestError: 400 when a JSON body is malformed or empty.
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
    if isinstance(item, _BadLine):
        text = item.raw.decode("utf-8", "replace")
    else:
        try:
            text = orjson.dumps(item).decode()
        except TypeError:
            text = repr(item)
    return text[:DEAD_LETTER_PAYLOAD_CHARS]


#: Kinds only the daemon makes (processors' windows and signals, routing tables and admin
#: actions): a client sending them could forge its own history, alerts or routing.
DERIVED_KINDS = frozenset({"window", "signal", "adaptation"})


def prepare(
    items: list[Any], *, tenant: str, received: dt.datetime, limits: Limits, source: str = "",
    allow_derived: bool = False,
) -> Prepared:
    """Validate ``items`` for ``tenant`` and build the log records.

    Every item gets a verdict: valid events become records (tenant forced to ``tenant``,
    whatever the payload said); invalid ones become dead-letter records and an entry in
    ``rejected`` with their index and reason.  Events of ``DERIVED_KINDS`` are rejected
    unless ``allow_derived`` (the daemon's own admin actions).  An empty list gives an
    empty result.

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
    for i, item in enumerate(items):
        if isinstance(item, _BadLine):
            reasons[i] = item.reason
        elif not isinstance(item, dict):
            reasons[i] = f"event must be a JSON object, got {type(item).__name__}"
        elif not allow_derived and item.get("kind") in DERIVED_KINDS:
            reasons[i] = (f"kind {item['kind']!r} is made by the daemon itself and cannot be sent"
                          " (routing actions: POST /v1/routing/<program>/<action>)")
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
    for i, item in enumerate(items):
        reason = reasons.get(i)
        if reason is None:
            event = next(valid_iter)
            ts = event["ts"]
            if ts.tzinfo is None:
                event["ts"] = ts.replace(tzinfo=utc)
            elif ts.utcoffset():
                event["ts"] = ts.astimezone(utc)
            record = dumps({**DEFAULTS[event["kind"]], **event})
            if len(record) <= max_bytes:
                out.records.append(record)
                out.accepted += 1
                continue
            reason = f"event is {len(record)} bytes; the limit is {max_bytes} (limits.max_event_bytes)"
        out.rejected.append({"index": i, "reason": reason})
        out.records.append(dead_letter(item, reason, tenant=tenant, received=received, source=source))
    return out


def dead_letter(item: Any, reason: str, *, tenant: str, received: dt.datetime, source: str = "") -> bytes:
    """The log record of a dead letter for ``item``."""
    letter = DeadLetter(
        id=new_id(), ts=received, tenant=tenant, source=source, reason=reason, payload=_excerpt(item)
    )
    return orjson.dumps(letter.model_dump(mode="json"))


def gzip_body(data: bytes) -> bytes:
    """gzip ``data`` (for clients and tests)."""
    return gzip.compress(data)
