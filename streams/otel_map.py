"""OpenTelemetry spans as adaptd events (pure): shared by OTLP ingest and the SDK's OTel bridge.

The input is a plain *span dict*, whatever the span came from (an OTLP protobuf or JSON
request, or an SDK ``ReadableSpan``)::

    {"name": "ChainOfThought.forward",
     "trace_id": "32 hex digits", "span_id": "16 hex digits",
     "parent_span_id": "16 hex digits" or None or "",
     "start_ns": 1763805600000000000, "end_ns": ...,      # unix nanoseconds
     "status_code": 2, "status_message": "...",          # 0 unset, 1 ok, 2 error
     "attributes": {...}, "events": [{"name": ..., "attributes": {...}}],
     "resource": {"service.name": ...}, "scope": "openinference.instrumentation.dspy"}

Only ``trace_id``, ``span_id`` and ``start_ns`` are required. The output is event dicts
ready for ``adaptd.daemon.ingest.prepare``: one ``execution`` per span and, for a span that is an
LM call (OpenInference kind ``LLM``, or GenAI request model / usage attributes), one
``lm_call`` too.  Ids are UUIDv5 of the tenant (when given: the daemon's OTLP ingest
always gives it) and the trace and span ids, so a re-sent span maps to the same events
and is stored once, parent links within a tenant resolve, and two tenants that send the
same span (trace and span ids travel between services) never share an event id.

Fields: ``ts`` is the span start, ``duration_ms`` end - start (absent when the end is
missing or earlier); ``program`` is attribute ``adaptd.program``, else resource
``service.name`` (unless OTel's default ``unknown_service...``), else the span name;
``module`` the span name; ``module_type`` ``openinference.span.kind`` or
``gen_ai.operation.name``; ``route`` ``adaptd.route``; ``parent_id`` the execution id of
the parent span; ``root_id`` only on root spans (themselves: a child cannot know its root;
``trace_id`` groups a tree). Status ERROR gives ``status="error"`` with ``error_type`` /
``error_message`` from the ``exception`` span event, else the status message.

Content (``input.value``, ``output.value``, ``llm.input_messages.*``, ``gen_ai.prompt``,
...) is never copied into ``attrs``: it becomes ``inputs`` / ``outputs`` =
``{"value": features(text)}``, plus ``{"fields": {name: features(value)}}`` when the text is
a JSON object of named scalar values (a call's arguments, a prediction's fields) and, only
with ``capture_content=True``, also ``{"content": text}`` (at most ``MAX_CONTENT_CHARS``).  The other attributes are kept in
``attrs``, flattened and bounded (see the ``MAX_ATTR*`` constants) so that one span cannot
outgrow the event size limit.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from adaptd.streams.events import MAX_NAME_LEN, MAX_TEXT_LEN
from adaptd.streams.features import features, features_many
from adaptd.streams.otlp_pricing import price_missing_cost

#: Namespace of the ids derived from spans. Never change it: stable ids are what make a
#: re-sent span land on the rows it already has.
NAMESPACE = uuid.UUID("3b0f5a6e-8f2c-5d7e-9c41-6a2e0d9b7f13")
_NAMESPACE_BYTES = NAMESPACE.bytes
_sha1 = hashlib.sha1

#: At most this many attributes per event in ``attrs`` (span, then scope, then resource);
#: the rest are dropped and counted in ``attrs["otel.dropped_attributes"]``.
MAX_ATTRS = 64
#: String attribute values are cut to this many characters (counted in
#: ``attrs["otel.truncated_attributes"]``); array values to ``MAX_ATTR_ITEMS`` items.
MAX_ATTR_CHARS = 1024
MAX_ATTR_ITEMS = 32
#: Keys longer than this are dropped (counted as dropped).
MAX_KEY_CHARS = 256
#: Budget of characters (keys + string values, 8 per number) across one event's
#: ``attrs``; attributes past it are dropped.  With the caps above this bounds ``attrs``
#: to ~20 KB of JSON, far under the default 256 KB event limit.
MAX_ATTRS_CHARS = 16_384
#: Under this (key + value characters) neither the key nor the value cap can apply.
_SMALL = min(MAX_KEY_CHARS, MAX_ATTR_CHARS)
#: Raw content kept per input / output when ``capture_content`` is on.
MAX_CONTENT_CHARS = MAX_TEXT_LEN
#: Non-exception span event names kept (in ``attrs["otel.events"]``).
MAX_EVENT_NAMES = 16

#: The default ``service.name`` of OTel SDKs (``unknown_service`` or
#: ``unknown_service:<executable>``): not a program name.
_UNKNOWN_SERVICE = "unknown_service"
_ERROR_NAMES = frozenset({"ERROR", "STATUS_CODE_ERROR"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HEX = re.compile(r"[0-9a-f]+")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_ZEROS = {32: _ZERO_TRACE, 16: _ZERO_SPAN}
_HEX_MATCH = _HEX.fullmatch

# Attribute keys read into event fields.  Where several name the same field, the first
# present (in this order) wins and the others stay in ``attrs``.
_PROGRAM = ("adaptd.program",)
_ROUTE = ("adaptd.route",)
_PROGRAM_VERSION = ("adaptd.program_version",)
_MODULE_TYPE = ("openinference.span.kind", "gen_ai.operation.name")
_MODEL = ("llm.model_name", "gen_ai.request.model", "gen_ai.response.model")
_PROVIDER = ("llm.provider", "llm.system", "gen_ai.system", "gen_ai.provider.name")
_TOKENS_IN = ("llm.token_count.prompt", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_TOKENS_OUT = ("llm.token_count.completion", "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_COST = ("llm.cost.total",)
#: Used for the cost only when ``llm.cost.total`` is absent (then summed); kept in attrs.
_COST_PARTS = ("llm.cost.prompt", "llm.cost.completion")
#: Any of these makes a span without an OpenInference kind an LM call.
_GENAI_LM_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
                  "gen_ai.usage.output_tokens")
_FIELD_KEYS = frozenset(_PROGRAM + _ROUTE + _PROGRAM_VERSION + _MODULE_TYPE + _MODEL + _PROVIDER
                        + _TOKENS_IN + _TOKENS_OUT + _COST)

# Content: exact keys and key prefixes, input side and output side.
_INPUT_KEYS = frozenset({"input.value", "llm.prompts", "llm.prompt_template.variables", "gen_ai.prompt",
                         "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.tool.call.arguments",
                         "gen_ai.retrieval.query.text", "reranker.query", "reranker.input_documents"})
_INPUT_PREFIXES = ("llm.input_messages.", "llm.prompts.", "gen_ai.prompt.", "input.images.")
_OUTPUT_KEYS = frozenset({"output.value", "llm.choices", "gen_ai.completion", "gen_ai.output.messages",
                          "gen_ai.tool.call.result", "gen_ai.retrieval.documents", "reranker.output_documents"})
_OUTPUT_PREFIXES = ("llm.output_messages.", "llm.choices.", "gen_ai.completion.", "retrieval.documents.",
                    "embedding.embeddings.", "output.images.")
#: Not content although under a content prefix.
_NOT_CONTENT = frozenset({"gen_ai.prompt.name"})

_PLAIN, _FIELD, _INPUT, _OUTPUT = 0, 1, 2, 3
#: Key -> class memo (keys repeat across spans); cleared when it grows past this.
_KEY_CLASS: dict[str, int] = {}
_KEY_CLASS_MAX = 50_000


class SpanError(ValueError):
    """The span cannot be mapped; ``str()`` says why (e.g. a malformed span id)."""


@dataclass(slots=True)
class Mapped:
    """The events of a list of spans, and the spans that could not be mapped."""

    #: Event dicts, in span order (an LM span's execution then its lm_call).
    events: list[dict[str, Any]] = field(default_factory=list)
    #: For each event, the index of the span it came from.
    span_index: list[int] = field(default_factory=list)
    #: Span index -> reason, for spans that gave no event.
    rejected: dict[int, str] = field(default_factory=dict)


def execution_id(trace_id: str, span_id: str, tenant: str | None = None) -> uuid.UUID:
    """The id of the ``execution`` of span ``span_id`` (hex) in trace ``trace_id`` (hex).

    Equal to ``derived_id(NAMESPACE, tenant, trace_id, span_id)``, or without a tenant
    ``derived_id(NAMESPACE, trace_id, span_id)``, computed without its generic joining
    (this runs once or twice per ingested span).  The trace and span ids are hex of a
    fixed length, so no tenant name can make two different triples hash alike.
    """
    key = f"{trace_id}\x1f{span_id}" if tenant is None else f"{tenant}\x1f{trace_id}\x1f{span_id}"
    return _uuid5(_sha1(_NAMESPACE_BYTES + key.encode()).digest())


def lm_call_id(execution: uuid.UUID) -> uuid.UUID:
    """The id of the ``lm_call`` made from the span whose execution id is ``execution``.

    Equal to ``derived_id(NAMESPACE, "lm_call", execution)``.
    """
    return _uuid5(_sha1(_NAMESPACE_BYTES + f"lm_call\x1f{execution}".encode()).digest())


_UUID_NEW = object.__new__
_UUID_SET = object.__setattr__
_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_V5 = (0x8000 << 48) | (5 << 76)
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid5(digest: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=digest[:16], version=5)``, without ``UUID.__init__``'s argument
    handling (half the cost of an id): the same variant and version bits, the same slots
    (``int``, ``is_safe``) set the way ``__init__`` sets them."""
    out = _UUID_NEW(uuid.UUID)
    _UUID_SET(out, "int", (int.from_bytes(digest[:16]) & _UUID_CLEAR) | _UUID_V5)
    _UUID_SET(out, "is_safe", _SAFE_UNKNOWN)
    return out


def is_lm_span(attributes: Mapping[str, Any]) -> bool:
    """True when a span with these attributes is an LM call, i.e. also gets an ``lm_call``:
    OpenInference kind ``LLM``, or any GenAI request / response model or usage attribute."""
    return attributes.get("openinference.span.kind") == "LLM" or any(map(attributes.__contains__, _GENAI_LM_KEYS))


def map_spans(spans: Iterable[Mapping[str, Any]], *, capture_content: bool = False,
              tenant: str | None = None) -> Mapped:
    """Map every span (see the module docstring); a span that cannot be mapped is rejected.

    ``tenant`` is mixed into every id (see ``execution_id``); None keeps the ids of the
    trace and span alone (the SDK's bridge, which does not know its tenant).

    The content texts of all spans are featurized at the end, in one batch
    (``features_many``), equal texts once (nested spans of one trace often repeat their
    parent's input).

    Returns:
        The events and the rejected spans with their reasons; empty for no spans.
    """
    out = Mapped()
    # (content dict, text): features filled in below, all texts of the call in one batch.
    pending: list[tuple[dict[str, Any], str]] = []
    resources: dict[int, tuple[Mapping[str, Any], list[tuple[str, Any]], str | None]] = {}
    # trace_id + span_id -> execution id (one tenant per call): a parent's id is computed once.
    ids: dict[str, uuid.UUID] = {}
    for i, span in enumerate(spans):
        try:
            events = map_span(span, capture_content=capture_content, tenant=tenant, _pending=pending,
                              _resources=resources, _ids=ids)
        except SpanError as exc:
            out.rejected[i] = str(exc)
            continue
        out.events.extend(events)
        out.span_index.extend([i] * len(events))
    if pending:
        unique = list(dict.fromkeys(text for _, text in pending))
        feats = dict(zip(unique, features_many(unique)))
        for content, text in pending:
            content["value"] = feats[text]
    return out


def map_span(
    span: Mapping[str, Any],
    *,
    capture_content: bool = False,
    tenant: str | None = None,
    _pending: list[tuple[dict[str, Any], str]] | None = None,
    _resources: dict[int, Any] | None = None,
    _ids: dict[str, uuid.UUID] | None = None,
) -> list[dict[str, Any]]:
    """The events of one span: ``[execution]`` or ``[execution, lm_call]``.

    ``tenant`` is mixed into the ids (see ``map_spans``); the event's own ``tenant``
    field is not set here (ingest sets it from the credential).

    Raises:
        SpanError: ``trace_id`` / ``span_id`` missing, not hex of the right length, or
            all zeros; ``parent_span_id`` malformed; ``start_ns`` missing or not positive.
    """
    trace_id = _hex_id(span.get("trace_id"), 32, "trace_id")
    span_id = _hex_id(span.get("span_id"), 16, "span_id")
    parent = span.get("parent_span_id") or None
    if parent is not None:
        parent = _hex_id(parent, 16, "parent_span_id")
    start = span.get("start_ns")
    if not isinstance(start, int) or isinstance(start, bool) or start <= 0:
        raise SpanError(f"span {span_id}: start_ns must be positive unix nanoseconds, got {start!r}")
    end = span.get("end_ns")
    name = span.get("name")
    if type(name) is str and name:
        name = name[:MAX_NAME_LEN]
    else:
        name = _name(name) or "span"
    if _ids is None:
        eid = execution_id(trace_id, span_id, tenant)
    else:
        cached = _ids.get(trace_id + span_id)
        if cached is None:
            cached = _ids[trace_id + span_id] = execution_id(trace_id, span_id, tenant)
        eid = cached

    # One pass over the attributes: fields, content, the rest (bounded) into attrs.
    known: dict[str, Any] = {}
    inputs: list[tuple[str, Any]] = []
    outputs: list[tuple[str, Any]] = []
    attrs: dict[str, Any] = {}
    caps = _Caps()
    classes = _KEY_CLASS
    count, budget = 0, MAX_ATTRS_CHARS  # caps' count and budget, in locals for the loop
    for key, value in (span.get("attributes") or {}).items():
        cls = classes.get(key)
        if cls is None:
            cls = _classify(key)
        if cls == _PLAIN:
            # Inline fast path for the common small scalar; caps.put does the rest.
            kind = type(value)
            if kind is str:
                size = len(value) + len(key)
                small = size <= _SMALL
            else:
                size = len(key) + 8
                small = (kind is int or kind is float or kind is bool) and size <= _SMALL
            if small and count < MAX_ATTRS and size <= budget:
                count += 1
                budget -= size
                attrs[key] = value
            else:
                caps.count, caps.budget = count, budget
                caps.put(attrs, key, value)
                count, budget = caps.count, caps.budget
        elif cls == _FIELD:
            known[key] = value
        elif cls == _INPUT:
            inputs.append((key, value))
        else:
            outputs.append((key, value))
    caps.count, caps.budget = count, budget

    # Status and error, from the status and the `exception` event (OTel's convention).
    code = span.get("status_code")
    failed = code == 2 or (isinstance(code, str) and code.upper() in _ERROR_NAMES)
    error_type = error_message = None
    event_names: list[str] = []
    for ev in span.get("events") or ():
        ev_name = ev.get("name")
        if ev_name == "exception":
            ev_attrs = ev.get("attributes") or {}
            if error_type is None and ev_attrs.get("exception.type"):
                error_type = _name(ev_attrs.get("exception.type"))
            if error_message is None and ev_attrs.get("exception.message"):
                error_message = str(ev_attrs["exception.message"])[:MAX_TEXT_LEN]
        elif len(event_names) < MAX_EVENT_NAMES and ev_name:
            event_names.append(str(ev_name)[:MAX_NAME_LEN])
    if error_message is None and span.get("status_message"):
        error_message = str(span["status_message"])[:MAX_TEXT_LEN]
    if event_names:
        caps.put(attrs, "otel.events", event_names)
    scope = span.get("scope")
    if scope:
        caps.put(attrs, "otel.scope", scope)

    resource = span.get("resource") or {}
    res_attrs, res_size, service = _resource(resource, _resources)

    picked = _pick_fields(known) if known else _NOTHING
    program = picked.get(_PROGRAM_F) or service or name
    event: dict[str, Any] = {
        "kind": "execution",
        "id": eid,
        "ts": _EPOCH + dt.timedelta(microseconds=start // 1000),
        "program": program,
        "module": name,
        "status": "error" if failed else "ok",
        "trace_id": trace_id,
        "span_id": span_id,
        "attrs": attrs,
    }
    if isinstance(end, int) and end >= start:
        event["duration_ms"] = (end - start) / 1e6
    if parent is not None:
        if _ids is None:
            event["parent_id"] = execution_id(trace_id, parent, tenant)
        else:
            pid = _ids.get(trace_id + parent)
            if pid is None:
                pid = _ids[trace_id + parent] = execution_id(trace_id, parent, tenant)
            event["parent_id"] = pid
    else:
        event["root_id"] = eid  # a root span is its own root; children do not know theirs
    if failed:
        if error_type is not None:
            event["error_type"] = error_type
        if error_message is not None:
            event["error_message"] = error_message
    route = None
    if known:
        module_type = picked.get(_MODULE_TYPE_F)
        route = picked.get(_ROUTE_F)
        version = picked.get(_VERSION_F)
        for key, value in (("module_type", module_type), ("route", route), ("program_version", version)):
            if value is not None:
                event[key] = value
    if inputs:
        event["inputs"] = _content(inputs, "input.value", capture_content, _pending)
    if outputs:
        event["outputs"] = _content(outputs, "output.value", capture_content, _pending)

    lm: dict[str, Any] | None = None
    if known:  # (an LM span has a field key)
        is_lm = is_lm_span(known)  # every key it reads is a field key, so `known` holds it
        used = picked["used"]
        model = picked.get(_MODEL_F)
        provider = picked.get(_PROVIDER_F)
        tokens_in = picked.get(_TOKENS_IN_F)
        tokens_out = picked.get(_TOKENS_OUT_F)
        cost = picked.get(_COST_F)
        if cost is None:
            amounts = [_amount(attrs[k]) for k in _COST_PARTS if k in attrs]
            parts = [a for a in amounts if a is not None]
            if parts and len(parts) == len(amounts):
                cost = sum(parts)
        for key, value in (("model", model), ("tokens_in", tokens_in), ("tokens_out", tokens_out),
                           ("cost_usd", cost)):
            if value is not None:
                event[key] = value
        if is_lm:
            lm = {"kind": "lm_call", "id": lm_call_id(eid), "ts": event["ts"], "execution_id": eid,
                  "program": program, "model": model or "unknown", "status": event["status"]}
            for key, value in (("provider", provider), ("route", route), ("tokens_in", tokens_in),
                               ("tokens_out", tokens_out), ("cost_usd", cost),
                               ("duration_ms", event.get("duration_ms")),
                               ("error_type", event.get("error_type"))):
                if value is not None:
                    lm[key] = value
            if cost is None:  # model and tokens but no cost: LiteLLM's list price, marked estimated
                price_missing_cost(event, lm)
        if len(used) < len(known):
            for key, value in known.items():  # read but not used for a field: keep it
                if key not in used:
                    caps.put(attrs, key, value)
    # Last: the span's own attributes matter more.  All at once when they are small.
    if res_size is not None and caps.count + len(res_attrs) <= MAX_ATTRS and res_size <= caps.budget:
        attrs.update(res_attrs)
        caps.count += len(res_attrs)
        caps.budget -= res_size
    else:
        for key, value in res_attrs.items():
            caps.put(attrs, key, value)
    caps.finish(attrs)
    return [event] if lm is None else [event, lm]


# ---------------------------------------------------------------------------- helpers


def _classify(key: str) -> int:
    if key in _FIELD_KEYS:
        cls = _FIELD
    elif key in _NOT_CONTENT:
        cls = _PLAIN
    elif key in _INPUT_KEYS or key.startswith(_INPUT_PREFIXES):
        cls = _INPUT
    elif key in _OUTPUT_KEYS or key.startswith(_OUTPUT_PREFIXES):
        cls = _OUTPUT
    else:
        cls = _PLAIN
    if len(_KEY_CLASS) >= _KEY_CLASS_MAX:  # keys come from clients: keep the memo bounded
        _KEY_CLASS.clear()
    _KEY_CLASS[key] = cls
    return cls


def _hex_id(value: Any, digits: int, what: str) -> str:
    # Fast path: lower-case hex of the right length (what every decoded OTLP span has).
    if type(value) is str and len(value) == digits and _HEX_MATCH(value) and value != _ZEROS[digits]:
        return value
    if isinstance(value, (bytes, bytearray)):
        value = value.hex()
    if not isinstance(value, str) or len(value) != digits:
        raise SpanError(f"{what} must be {digits} hex digits, got {value!r}"[:300])
    value = value.lower()
    if not _HEX.fullmatch(value):
        raise SpanError(f"{what} must be {digits} hex digits, got {value!r}"[:300])
    if value == (_ZERO_TRACE if digits == 32 else _ZERO_SPAN):
        raise SpanError(f"{what} is all zeros (invalid in OpenTelemetry)")
    return value


def _name(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return (value if isinstance(value, str) else str(value))[:MAX_NAME_LEN]


def _pick_fields(known: dict[str, Any]) -> dict[Any, Any]:
    """The value of each field whose keys are in ``known``, and under ``"used"`` the keys used.

    A field's value is that of its first key (in ``_FIELDS`` order) present whose value
    converts (``_name``, ``_count``, ``_amount``) to something other than None; the other
    keys of the field are not used (they stay in ``attrs``).  One pass over ``known``.
    """
    if len(known) == 1:  # the common case (a span kind alone): no ranking
        for key, value in known.items():
            converted = _FIELD_OF[key][2](value)
            return _NOTHING if converted is None else {_FIELD_OF[key][0]: converted, "used": {key}}
    best: dict[str, tuple[int, Any, str]] = {}
    for key, value in known.items():
        fname, rank, convert = _FIELD_OF[key]
        held = best.get(fname)
        if held is not None and held[0] < rank:
            continue
        converted = convert(value)
        if converted is not None:
            best[fname] = (rank, converted, key)
    out: dict[Any, Any] = {fname: held[1] for fname, held in best.items()}
    out["used"] = {held[2] for held in best.values()}
    return out


def _count(value: Any) -> int | None:
    """A token count: a non-negative integer (an integral float or numeric string too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number >= 0 and number == int(number) else None


def _amount(value: Any) -> float | None:
    """A cost: a finite non-negative number (or numeric string)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _content(parts: list[tuple[str, Any]], main: str, capture: bool,
             pending: list[tuple[dict[str, Any], str]] | None) -> dict[str, Any]:
    """``{"value": features(text)}`` (+ ``"fields"``, + ``"content"`` when captured) of one
    side's content.

    The text is the ``main`` attribute (``input.value`` / ``output.value``) when present,
    else the content attributes' string values joined by newlines, in span order.  With
    ``pending`` (``map_spans``), a string's features are left to the caller: ``"value"``
    is None and ``(the dict, text)`` is appended to ``pending``.  When the text is a JSON
    object of at most ``MAX_CONTENT_FIELDS`` named scalar values (what OpenInference
    records for a module call's arguments and a prediction's fields), ``"fields"`` holds
    each one's features, ``{"question": features(...)}``: the same as the SDK's callback
    and ``observe`` send, so drift sees the same fields whatever the entry point.
    """
    text: Any = None
    for key, value in parts:
        if key == main:
            text = value
            break
    if text is None:
        if len(parts) == 1:
            text = parts[0][1]
        else:
            text = "\n".join(v if isinstance(v, str) else str(v) for _, v in parts)
    out: dict[str, Any]
    if pending is not None and isinstance(text, str):
        out = {"value": None}
        pending.append((out, text))
    else:
        out = {"value": features(text)}
    named = _named_values(text)
    if named:
        out["fields"] = dict(zip(named, features_many(list(named.values()))))
    if capture:
        raw = text if isinstance(text, str) else str(text)
        out["content"] = raw[:MAX_CONTENT_CHARS]
        if len(raw) > MAX_CONTENT_CHARS:
            out["truncated"] = True
    return out


#: A JSON object text with more named values than this gets no per-field features.
MAX_CONTENT_FIELDS = 16
_SCALARS = (str, int, float, bool, type(None))


def _named_values(text: Any) -> dict[str, Any] | None:
    """The object a JSON text holds when it is ``{name: scalar, ...}`` (1 to
    ``MAX_CONTENT_FIELDS`` names), else None (not JSON, not an object, nested values)."""
    if not isinstance(text, str) or not text.startswith("{") or len(text) > MAX_CONTENT_CHARS:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not 0 < len(value) <= MAX_CONTENT_FIELDS:
        return None
    return value if all(isinstance(v, _SCALARS) for v in value.values()) else None


def _resource(resource: Mapping[str, Any], memo: dict[int, Any] | None) -> tuple[dict[str, Any], int | None, str | None]:
    """The resource's attributes as ``resource.<key>``, their size when every one is a small
    scalar (else None), and the resource's program name (or None).

    Memoized per resource object within one ``map_spans`` call (every span of a
    ResourceSpans shares its dict).
    """
    if memo is not None:
        hit = memo.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1], hit[2], hit[3]
    service = resource.get("service.name")
    if not isinstance(service, str) or not service or service.startswith(_UNKNOWN_SERVICE):
        service = None
    else:
        service = service[:MAX_NAME_LEN]
    pairs = {"resource." + k: v for k, v in resource.items()}
    size: int | None = 0
    for key, value in pairs.items():
        item = len(key) + (len(value) if isinstance(value, str) else 8)
        if item > _SMALL or not isinstance(value, (str, int, float, bool)) or size is None:
            size = None
        else:
            size += item
    if memo is not None:
        memo[id(resource)] = (resource, pairs, size, service)
    return pairs, size, service


class _Caps:
    """Bounds on one event's ``attrs``: count, per-value size, total size (see MAX_ATTR*)."""

    __slots__ = ("count", "budget", "dropped", "truncated")

    def __init__(self) -> None:
        self.count = 0
        self.budget = MAX_ATTRS_CHARS
        self.dropped = 0
        self.truncated = 0

    def put(self, attrs: dict[str, Any], key: str, value: Any) -> None:
        """Add ``key`` (a dict value is flattened into ``key.sub`` keys) unless over a cap."""
        if type(value) is not str and isinstance(value, Mapping):
            for sub, item in value.items():
                self.put(attrs, f"{key}.{sub}", item)
            return
        if self.count >= MAX_ATTRS or len(key) > MAX_KEY_CHARS:
            self.dropped += 1
            return
        if isinstance(value, str):
            if len(value) > MAX_ATTR_CHARS:
                value = value[:MAX_ATTR_CHARS]
                self.truncated += 1
            size = len(value)
        elif isinstance(value, (list, tuple)):
            value, size = self._list(value)
        elif isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(bytes(value[:MAX_ATTR_CHARS])).decode()
            size = len(value)
        elif value is None or isinstance(value, (bool, int, float)):
            size = 8
        else:
            value = str(value)[:MAX_ATTR_CHARS]
            size = len(value)
        size += len(key)
        if size > self.budget:
            self.dropped += 1
            return
        self.budget -= size
        self.count += 1
        attrs[key] = value

    def _list(self, value: list[Any] | tuple[Any, ...]) -> tuple[list[Any], int]:
        if len(value) > MAX_ATTR_ITEMS:
            value = value[:MAX_ATTR_ITEMS]
            self.truncated += 1
        items: list[Any] = []
        size = 0
        for item in value:
            if isinstance(item, str):
                if len(item) > MAX_ATTR_CHARS:
                    item = item[:MAX_ATTR_CHARS]
                    self.truncated += 1
                size += len(item)
            elif item is None or isinstance(item, (bool, int, float)):
                size += 8
            else:
                item = str(item)[:MAX_ATTR_CHARS]
                size += len(item)
            items.append(item)
        return items, size

    def finish(self, attrs: dict[str, Any]) -> None:
        """Record what was dropped or cut (these two keys are never themselves dropped)."""
        if self.dropped:
            attrs["otel.dropped_attributes"] = self.dropped
        if self.truncated:
            attrs["otel.truncated_attributes"] = self.truncated


# Field name -> its keys in order and how a value converts; ``_FIELD_OF`` inverts it.
_PROGRAM_F, _ROUTE_F, _VERSION_F, _MODULE_TYPE_F = "program", "route", "program_version", "module_type"
_MODEL_F, _PROVIDER_F, _TOKENS_IN_F, _TOKENS_OUT_F, _COST_F = "model", "provider", "tokens_in", "tokens_out", "cost"
_FIELDS: tuple[tuple[str, tuple[str, ...], Any], ...] = (
    (_PROGRAM_F, _PROGRAM, _name), (_ROUTE_F, _ROUTE, _name), (_VERSION_F, _PROGRAM_VERSION, _name),
    (_MODULE_TYPE_F, _MODULE_TYPE, _name), (_MODEL_F, _MODEL, _name), (_PROVIDER_F, _PROVIDER, _name),
    (_TOKENS_IN_F, _TOKENS_IN, _count), (_TOKENS_OUT_F, _TOKENS_OUT, _count), (_COST_F, _COST, _amount),
)
_FIELD_OF: dict[str, tuple[str, int, Any]] = {
    key: (fname, rank, convert) for fname, keys, convert in _FIELDS for rank, key in enumerate(keys)
}
assert _FIELD_OF.keys() == _FIELD_KEYS  # every field key belongs to exactly one field
_NOTHING: dict[Any, Any] = {"used": frozenset()}
