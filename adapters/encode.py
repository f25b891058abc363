"""Turning queued items into JSON events: ``(kind, time_ns, fields)`` tuples and records.

This is the worker's half of ``emit()``: everything the caller's thread skipped (the
UUIDv7, the timestamp, serialization, validation) happens here, away from the host's
hot path. Pure functions of their inputs, apart from the UUIDv7's randomness.

Integrations that record calls (the DSPy callback) may queue a *record* instead of a
tuple: any object with a ``to_json(source) -> bytes`` method (``Record``), which builds
its own event on the worker. One object per event instead of a tuple, a dict and a
completer keeps fewer objects alive while events wait, which is what the host's garbage
collector pays for.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

import orjson
import uuid_utils
from pydantic import ValidationError

from adaptd.streams.events import wire_list_adapter

_JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class InvalidEvent(ValueError):
    """An event the SDK drops; ``str()`` is a short reason, stable enough to log once."""


_prefixes: dict[int, str] = {}  # second -> "YYYY-MM-DDTHH:MM:SS.", a handful at a time


def iso_ts(ns: int) -> str:
    """Format nanoseconds since the epoch as ISO-8601 UTC with microseconds and ``Z``.

    E.g. ``iso_ts(0) == "1970-01-01T00:00:00.000000Z"``.
    """
    sec = ns // 1_000_000_000
    prefix = _prefixes.get(sec)
    if prefix is None:  # events cluster in few seconds: format each second once
        if len(_prefixes) >= 16:
            _prefixes.clear()
        prefix = _prefixes[sec] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    return "%s%06dZ" % (prefix, ns // 1000 % 1_000_000)


#: Fields ``Client.emit()`` takes as named parameters, in the order its queue items hold
#: them after ``(kind, time_ns, fields, positional_guard)``.
NAMED_FIELDS = (
    "program", "module", "route", "model", "status", "duration_ms", "tokens_in", "tokens_out",
    "cost_usd", "error_type", "parent_id", "root_id", "execution_id", "provider", "cache_hit",
)  # fmt: skip

#: A field holding ``fn(fields) -> None``: the worker calls it to complete the event in
#: place before serializing it (integrations defer feature extraction this way, off the
#: caller's thread). If it raises, the event is still sent, marked in ``attrs``.
DEFER = "_adaptd_defer"

#: Default of ``emit()``'s positional-only guard: anything else means a field was passed
#: by position.
NO_POSITIONAL: Any = object()

#: Fourth slot of an item from ``Client.emit_built()``: an event an integration built
#: from its own code, which the worker sends without validating it first (the daemon
#: still validates every event and dead-letters an invalid one with its reason).
BUILT: Any = object()

#: Events per ``validate_json`` call. pydantic builds every validated event as Python
#: objects at once; past a few hundred, the garbage collector's passes over them cost
#: more than the validation (28 µs per event in batches of 1,000 against 5 in tens).
VALIDATE_CHUNK = 64


def encode(item: tuple[Any, ...], source: str, max_bytes: int) -> bytes:
    """Complete a queued event in place and serialize it as one JSON object.

    Args:
        item: ``(kind, time_ns, fields)`` from ``emit_dict()``, that plus ``BUILT``
            from ``emit_built()``, or that plus the guard and ``NAMED_FIELDS`` values
            (None: not given) from ``emit()``.
        source: ``source`` to set unless the event has one.
        max_bytes: Largest serialized event accepted.

    Adds ``kind``; ``id`` (a UUIDv7 of the emit time) unless given; ``ts`` from the emit
    time unless given (a given int is taken as nanoseconds since the epoch); ``source``
    unless given. Runs a ``DEFER`` completer first. Values JSON cannot represent are
    serialized with ``str()``.

    Raises:
        InvalidEvent: fields passed by position, unserializable (e.g. a failing
            ``__str__``), or larger than ``max_bytes``.
    """
    kind, t_ns, fields = item[0], item[1], item[2]
    try:
        if len(item) > 3 and item[3] is not BUILT:
            if item[3] is not NO_POSITIONAL:
                raise InvalidEvent(f"{kind}: fields must be passed by keyword")
            for name, value in zip(NAMED_FIELDS, item[4:]):
                if value is not None:
                    fields[name] = value
        defer = fields.pop(DEFER, None)
        if defer is not None:
            try:
                defer(fields)
            except Exception as exc:  # a user object's method failed: keep the event
                attrs = fields.get("attrs")
                if not isinstance(attrs, dict):
                    attrs = fields["attrs"] = {}
                attrs["adaptd_defer_error"] = type(exc).__name__
        fields["kind"] = kind
        if fields.get("id") is None:
            fields["id"] = str(uuid_utils.uuid7(nanoseconds=t_ns))
        ts = fields.get("ts")
        if ts is None:
            fields["ts"] = iso_ts(t_ns)
        elif isinstance(ts, int):
            fields["ts"] = iso_ts(ts)
        if "source" not in fields:
            fields["source"] = source
        line = orjson.dumps(fields, default=str, option=_JSON_OPTS)
    except InvalidEvent:
        raise
    except Exception as exc:  # a broken __str__, a recursive structure...
        raise InvalidEvent(f"{kind}: {type(exc).__name__}") from exc
    if len(line) > max_bytes:
        raise InvalidEvent(f"{kind}: larger than {max_bytes} bytes")
    return line


class Record(Protocol):
    """A queued event that builds itself on the worker (see the module docstring)."""

    def to_json(self, source: str) -> bytes:
        """The event as one JSON object, with ``source`` unless it names its own.

        May raise; the event is then dropped and counted as invalid.
        """
        ...


def encode_record(record: Record, source: str, max_bytes: int) -> bytes:
    """Serialize a queued record (``Record``) after checking its size.

    Raises:
        InvalidEvent: ``to_json`` raised (the reason names the record's class and the
            exception's), or the event is larger than ``max_bytes``.
    """
    try:
        line = record.to_json(source)
    except Exception as exc:
        raise InvalidEvent(f"{type(record).__name__}: {type(exc).__name__}") from exc
    if len(line) > max_bytes:
        raise InvalidEvent(f"{type(record).__name__}: larger than {max_bytes} bytes")
    return line


def _reason(kind: object, errors: list[Any]) -> str:
    if errors and errors[0]["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"unknown kind {str(kind)[:40]!r}"
    return "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['type']}" for e in errors[:3])


def validate_batch(kinds: list[str], lines: list[bytes]) -> tuple[list[bytes], list[str]]:
    """Check serialized events with the daemon's own validator (``wire_list_adapter``).

    Validates the JSON the daemon will receive rather than Python objects (a
    ``uuid_utils.UUID`` or a numpy float is fine once serialized), ``VALIDATE_CHUNK``
    events per call: cheaper than a call per event, and each error carries its event's
    index. Unknown fields are ignored here; the daemon keeps them in ``attrs``.

    Args:
        kinds: Each event's kind (for the reasons), parallel to ``lines``.
        lines: Serialized events.

    Returns:
        The valid lines in their order, and one reason per invalid event, e.g.
        ``"execution.program: missing"`` or ``"unknown kind 'x'"``. Empty input gives
        two empty lists.
    """
    valid: list[bytes] = []
    reasons: list[str] = []
    for start in range(0, len(lines), VALIDATE_CHUNK):
        chunk = lines[start : start + VALIDATE_CHUNK]
        try:
            wire_list_adapter.validate_json(b"[" + b",".join(chunk) + b"]")
            valid.extend(chunk)
            continue
        except ValidationError as exc:
            bad: dict[int, list[Any]] = {}
            for err in exc.errors(include_url=False, include_input=False):
                # A list's errors are located by the item's index first (pydantic types
                # a location part as int | str).
                bad.setdefault(cast(int, err["loc"][0]), []).append(err)
        reasons.extend(_reason(kinds[start + i], errors) for i, errors in sorted(bad.items()))
        valid.extend(line for i, line in enumerate(chunk) if i not in bad)
    return valid, reasons
