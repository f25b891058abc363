"""Turning a request body into log records: decode, validate, dead-letter (pure, no I/O).

The hot path of the daemon.  A batch is parsed once with orjson, validated in one
pydantic-core call straight into the stored form (``ingest_fast``: defaults filled in,
fields in stored order), and serialized in one orjson call (``serialize``); each valid
event is written to the log in canonical form: tenant set from the credential, unknown
fields folded into ``attrs``, ``ts`` in UTC, defaults filled in.  Only the items the
fast call refuses are checked one by one in Python (``_validate_full``), which names
their reason.  Invalid items become dead-letter records with their reason; they never
cost the valid events beside them: a JSON array that does not parse as a whole (a
``NaN``, a lone surrogate, nesting past orjson's limit in one item) is split and parsed
item by item.

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
import secrets
import zlib
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, cast

import orjson
from pydantic import ValidationError
from pydantic_core import TzInfo

from adaptd.daemon.dead_letter_limit import DeadLetterLimiter
from adaptd.daemon.ingest_fast import fast_refusals, fast_validator
from adaptd.daemon.json_items import NotAnArray, split_array
from adaptd.streams.events import DEFAULTS, MAX_NAME_LEN, DeadLetter, fold_unknown, new_id, wire_list_adapter

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

    The batch is validated in one call (``ingest_fast``); only the items that call
    refuses go through the full path, item by item, which names their reason (or accepts
    them: the fast call refuses more than the contract does, e.g. unknown fields to fold
    into ``attrs``).  Records and verdicts are the same either way.

    Raises:
        IngestError: 413 when there are more than ``limits.max_batch_events`` items.
    """
    if len(items) > limits.max_batch_events:
        raise IngestError(
            413,
            f"batch has {len(items)} events; the limit is {limits.max_batch_events}"
            " (limits.max_batch_events): split it",
        )
    verdicts, walked = _validate(items, tenant=tenant, limits=limits, source=source, allow_derived=allow_derived)
    latest = None
    if limits.max_future_s is not None and not allow_derived:
        latest = received + dt.timedelta(seconds=limits.max_future_s)
    ready, late, future = _settle(verdicts, tenant=tenant, source=source, received=received, latest=latest,
                                  limits=limits)
    stored = serialize(cast("list[dict[str, Any]]", [verdicts[i] for i in ready]))  # ready: valid ones
    max_bytes, max_depth = limits.max_event_bytes, limits.max_depth

    out = Prepared()
    if len(ready) == len(items) and _all_fit(stored, max_bytes, max_depth):  # the usual batch: all valid
        out.records = stored  # type: ignore[assignment]  # _all_fit: every one is bytes
        out.accepted = len(stored)
        return out
    records = out.records
    limiter = limits.dead_letter_limiter
    stored_at = dict(zip(ready, stored, strict=True))
    for i, item in enumerate(items):
        record = stored_at.get(i)
        if isinstance(record, bytes):
            # Each container writes one opening bracket (strings may add more): a record
            # with at most max_depth of them nests no deeper.
            if len(record) <= max_bytes and (
                record.count(b"{") + record.count(b"[") <= max_depth
                or i in walked or not nesting_exceeds(item, max_depth)
            ):
                records.append(record)
                out.accepted += 1
                continue
            # (when depth is the fault, not size, the reason is replaced just below)
            reason = f"event is {len(record)} bytes; the limit is {max_bytes} (limits.max_event_bytes)"
        elif isinstance(record, str):
            reason = record
        else:
            reason = late.get(i) or verdicts[i]  # type: ignore[assignment]
        if type(verdicts[i]) is dict:  # valid for _validate, refused here
            if i not in walked and nesting_exceeds(item, max_depth):
                # the full path checks depth first, before it touches the item
                reason = _too_deep(max_depth)
            else:
                _as_validated(item, tenant, source)
                out.future += i in future
        out.rejected.append({"index": i, "reason": reason})
        if limiter is None or limiter.take(tenant, 1):
            records.append(dead_letter(item, reason, tenant=tenant, received=received, source=source))
        else:
            out.suppressed += 1
    return out


def _settle(
    verdicts: list[Any], *, tenant: str, source: str, received: dt.datetime, latest: dt.datetime | None,
    limits: Limits,
) -> tuple[list[int], dict[int, str], set[int]]:
    """Settle each event of ``verdicts`` in place: the credential's tenant, ``source`` when
    it has none, ``ts`` in UTC.  Returns the indexes of the events to store, in order; the
    reasons of those refused here (``ts`` out of range once in UTC, or after ``latest``);
    and the indexes refused for being after ``latest``."""
    ready: list[int] = []
    late: dict[int, str] = {}
    future: set[int] = set()
    utc = dt.UTC
    # Datetimes with the same tzinfo object compare without calling utcoffset() (10x
    # cheaper): pydantic gives every "Z" time of a batch one TzInfo; the bound is kept in it.
    zero_tz, zero_latest = utc, latest
    for i, event in enumerate(verdicts):
        if type(event) is not dict:
            continue
        event["tenant"] = tenant
        if source and not event["source"]:
            event["source"] = source
        ts = event["ts"]
        tz = ts.tzinfo
        bound = latest
        if tz is zero_tz:
            bound = zero_latest
        elif tz is None:
            event["ts"] = ts = ts.replace(tzinfo=utc)
        elif ts.utcoffset():
            try:
                event["ts"] = ts = ts.astimezone(utc)
            except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC time
                late[i] = f"ts {ts.isoformat()} is out of range once converted to UTC"
                continue
        elif type(tz) in _FIXED_OFFSET_TZ:  # a fixed zero offset (not a zone: its offset varies)
            zero_tz = tz
            zero_latest = bound = None if latest is None else latest.replace(tzinfo=tz)
        if bound is not None and ts > bound:
            future.add(i)
            late[i] = (f"ts {ts.isoformat()} is {(ts - received).total_seconds():.0f} s ahead of the daemon's clock;"
                       f" the limit is {limits.max_future_s:g} s (limits.max_future_s): fix the sender's clock")
        else:
            ready.append(i)
    return ready, late, future


def _all_fit(stored: list[bytes | str], max_bytes: int, max_depth: int) -> bool:
    """Whether every one of ``stored`` is a record within ``max_bytes`` and with at most
    ``max_depth`` opening brackets (so nested no deeper), told in C-speed passes."""
    if not stored:
        return True
    if any(type(r) is not bytes for r in stored) or max(map(len, stored)) > max_bytes:
        return False
    records = cast("list[bytes]", stored)  # all bytes, checked just above
    return max(map(bytes.count, records, repeat(b"{"))) + max(map(bytes.count, records, repeat(b"["))) <= max_depth


#: A string no event holds (random per process), put between the events of a batch
#: serialized in one call; how orjson writes it between two items is where to cut.
_CUT = "\x00adaptd-cut-" + secrets.token_hex(16)
_CUT_BYTES = b"," + orjson.dumps(_CUT) + b","


def serialize(events: list[dict[str, Any]]) -> list[bytes | str]:
    """Each event as its log record (``orjson.dumps(event)``), or as the reason it cannot
    be stored (orjson's nesting limit, a value it cannot write).

    One orjson call writes the batch, cut apart after: the same bytes as one call per
    event at a third of the cost (a buffer per record, kept until the log has written it,
    is what costs).  Falls back to one call per event when the batch's call fails or the
    cut does not give one record per event.  An empty list gives an empty list.
    """
    if len(events) > 1:
        joined: list[Any] = [_CUT] * (2 * len(events) - 1)
        joined[::2] = events
        try:
            parts = orjson.dumps(joined)[1:-1].split(_CUT_BYTES)
        except TypeError:
            parts = []
        if len(parts) == len(events):
            return parts  # type: ignore[return-value]
    records: list[bytes | str] = []
    for event in events:
        try:
            records.append(orjson.dumps(event))
        except TypeError as exc:  # orjson's own nesting limit, below max_depth when it is set high
            records.append(f"event cannot be stored: {exc}")
    return records


#: tzinfo types whose offset is fixed: a zero one is UTC at every instant.
_FIXED_OFFSET_TZ = (TzInfo, dt.timezone)


def _too_deep(max_depth: int) -> str:
    return f"event is nested more than {max_depth} levels deep (limits.max_depth)"


def _validate(
    items: list[Any], *, tenant: str, limits: Limits, source: str, allow_derived: bool
) -> tuple[list[dict[str, Any] | str], set[int] | range]:
    """Per item, in order: the event as it will be stored (fields in stored order, defaults
    filled in; ``tenant``, ``source`` and ``ts`` still to be settled by the caller), or the
    reason it is refused; and the indexes whose nesting depth was checked already.

    One ``ingest_fast`` call validates the batch; the items it refuses go through
    ``_validate_full``, which checks depth too.  The depth of the others is the caller's
    to check (``prepare`` bounds it from the record's bytes).  The daemon's own events
    (``allow_derived``) and names the fast validator does not cover take the full path.
    """
    fast = None
    if not allow_derived and limits.max_depth >= 2 and len(tenant) <= MAX_NAME_LEN and len(source) <= MAX_NAME_LEN:
        fast = fast_validator(DERIVED_KINDS)
    if fast is None or not items:
        full = _validate_full(items, tenant=tenant, limits=limits, source=source, allow_derived=allow_derived)
        return full, range(len(items))
    verdicts: list[Any]
    try:
        verdicts = fast.validate_python(items)
        passed = None
    except ValidationError as exc:
        refused = {int(err["loc"][0])  # a list's errors are located by item index first
                   for err in exc.errors(include_url=False, include_context=False, include_input=False)}
        # validate the others once more (pydantic gives no output when an item fails)
        passed = [i for i in range(len(items)) if i not in refused]
        verdicts = [None] * len(items)
        if passed:
            for i, event in zip(passed, fast.validate_python([items[i] for i in passed]), strict=True):
                verdicts[i] = event
    if passed is None:
        again = fast_refusals(items, verdicts, reserved_prefix=RESERVED_SOURCE_PREFIX)
    else:
        later = fast_refusals([items[i] for i in passed], [verdicts[i] for i in passed],
                              reserved_prefix=RESERVED_SOURCE_PREFIX)
        again = sorted(refused.union(passed[j] for j in later))
    if again:
        full = _validate_full([items[i] for i in again], tenant=tenant, limits=limits, source=source,
                              allow_derived=allow_derived)
        for i, verdict in zip(again, full, strict=True):
            verdicts[i] = verdict
    return verdicts, set(again)


def _validate_full(
    items: list[Any], *, tenant: str, limits: Limits, source: str, allow_derived: bool
) -> list[dict[str, Any] | str]:
    """``_validate`` item by item in Python: every check, with its reason.

    Valid items are changed in place as the contract says (tenant forced, source filled
    in, unknown fields folded into ``attrs``) before they are validated; their verdict is
    the validated event merged into its kind's ``DEFAULTS``.
    """
    verdicts: list[Any] = [None] * len(items)
    candidates: list[dict[str, Any]] = []
    positions: list[int] = []
    max_depth = limits.max_depth
    for i, item in enumerate(items):
        if isinstance(item, _BadLine):
            verdicts[i] = item.reason
        elif not isinstance(item, dict):
            verdicts[i] = f"event must be a JSON object, got {type(item).__name__}"
        elif nesting_exceeds(item, max_depth):
            verdicts[i] = _too_deep(max_depth)
        elif not allow_derived and item.get("kind") in DERIVED_KINDS:
            verdicts[i] = (f"kind {item['kind']!r} is made by the daemon itself and cannot be sent"
                           " (routing actions: POST /v1/routing/<program>/<action>)")
        elif not allow_derived and _reserved(item.get("source")):
            verdicts[i] = (f"source {item['source']!r} is reserved for the daemon itself (sources starting with"
                           f" {RESERVED_SOURCE_PREFIX!r}): name your own source")
        else:
            _as_validated(item, tenant, source)
            candidates.append(item)
            positions.append(i)
    try:
        valid = wire_list_adapter.validate_python(candidates)
    except ValidationError as exc:
        # One pydantic call reports every invalid item; validate the rest once more.
        by_item: dict[int, list[Any]] = {}
        for err in exc.errors(include_url=False):
            by_item.setdefault(int(err["loc"][0]), []).append(err)
        for j, errs in by_item.items():
            verdicts[positions[j]] = _reason(errs)
        positions = [p for j, p in enumerate(positions) if j not in by_item]
        valid = wire_list_adapter.validate_python([c for j, c in enumerate(candidates) if j not in by_item])
    for i, event in zip(positions, valid, strict=True):
        verdicts[i] = {**DEFAULTS[event["kind"]], **event}
    return verdicts


def _as_validated(item: Any, tenant: str, source: str) -> None:
    """Change ``item`` in place as it is validated: tenant from the credential, source
    filled in when it has none, unknown fields folded into ``attrs`` (a dead letter's
    excerpt shows the item so).  Idempotent; a non-dict is left alone."""
    if isinstance(item, dict):
        item["tenant"] = tenant
        if source and not item.get("source"):
            item["source"] = source
        fold_unknown(item)


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
