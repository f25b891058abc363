"""OTLP/HTTP trace requests: decode to span dicts, turn into log records, encode answers (pure).

``POST /v1/traces`` bodies are ``ExportTraceServiceRequest`` messages, as protobuf
(``application/x-protobuf``) or in OTLP's JSON mapping (``application/json``: camelCase
fields, trace and span ids in hex, int64 as numbers or strings).  Both are decoded with
the official opentelemetry-proto classes into the plain span dicts of
``adaptd.streams.otel_map``, which maps them onto events; ``adaptd.daemon.ingest.prepare`` then
validates those like any ``/v1/events`` batch.

Answers follow the OTLP/HTTP spec: an ``ExportTraceServiceResponse`` in the request's
encoding, with ``partial_success`` when spans were rejected, and for a refused request a
``google.rpc.Status`` (code + message) in the request's encoding.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from adaptd.daemon.ingest import IngestError, Limits, Prepared, dead_letter, prepare
from adaptd.streams.otel_map import map_spans

PROTOBUF = "protobuf"
JSON = "json"
PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPES = frozenset({"application/json"})
MEDIA_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
#: Source of the events made from spans.
SOURCE = "otlp"
#: Reasons quoted in ``partial_success.error_message`` (the rest are counted).
MAX_REASONS = 5

#: HTTP status -> google.rpc.Code, for the Status body of a refused request.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 429: 8, 503: 14}


@dataclass(slots=True)
class TraceBatch:
    """What one request turns into: the log records and the OTLP verdict."""

    records: list[bytes]
    spans: int
    accepted_events: int
    dead_letters: int
    rejected_spans: int
    error_message: str
    #: dead letters answered but not written (the tenant's dead-letter rate was spent)
    suppressed: int = 0
    #: events refused because their time was beyond ``limits.max_future_s``
    future: int = 0


def body_format(content_type: str | None) -> str:
    """``PROTOBUF`` or ``JSON`` for a request's ``Content-Type``.

    Raises:
        IngestError: 415 for a missing or other content type.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in PROTOBUF_TYPES:
        return PROTOBUF
    if ctype in JSON_TYPES:
        return JSON
    raise IngestError(
        415, f"unsupported Content-Type {ctype or '(none)'!r}: send application/x-protobuf or application/json"
    )


def decode(body: bytes, fmt: str) -> list[dict[str, Any]]:
    """The span dicts (see ``adaptd.streams.otel_map``) of an ExportTraceServiceRequest body.

    An empty protobuf body is an empty request (no spans).

    Raises:
        IngestError: 400 with the reason when the body is not a valid request.
    """
    if fmt == PROTOBUF:
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise IngestError(400, f"malformed OTLP protobuf: {exc}") from None
    else:
        request = _parse_json(body)
    return spans_of(request)


def _parse_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"malformed OTLP JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IngestError(400, "malformed OTLP JSON: the body must be an ExportTraceServiceRequest object")
    _hex_ids_to_base64(data)
    try:
        # OTLP: receivers ignore fields they do not know (newer senders may add some).
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise IngestError(400, f"malformed OTLP JSON: {exc}") from None
    except RecursionError:
        raise IngestError(400, "malformed OTLP JSON: values nested too deeply") from None


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP JSON writes ids in hex where protobuf's JSON mapping expects base64: convert.

    Raises:
        IngestError: 400 naming the first id that is not hex.
    """
    for r, rs in enumerate(_list(data.get("resourceSpans"))):
        for s, ss in enumerate(_list(rs.get("scopeSpans") if isinstance(rs, dict) else None)):
            for n, span in enumerate(_list(ss.get("spans") if isinstance(ss, dict) else None)):
                if not isinstance(span, dict):
                    continue
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                _convert(span, ("traceId", "spanId", "parentSpanId"), where)
                for k, link in enumerate(_list(span.get("links"))):
                    if isinstance(link, dict):
                        _convert(link, ("traceId", "spanId"), f"{where}.links[{k}]")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _convert(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise IngestError(400, f"malformed OTLP JSON: {where}.{key} is not hex: {value[:80]!r}") from None


def spans_of(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Flatten a decoded request into span dicts, reading the protobuf fields directly.

    Every span of a ResourceSpans shares one resource dict (``otel_map`` relies on that to
    map a resource once).
    """
    spans: list[dict[str, Any]] = []
    append = spans.append
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                events = sp.events
                append({
                    "name": sp.name,
                    "trace_id": sp.trace_id.hex(),
                    "span_id": sp.span_id.hex(),
                    "parent_span_id": sp.parent_span_id.hex() or None,
                    "start_ns": sp.start_time_unix_nano,
                    "end_ns": sp.end_time_unix_nano,
                    "status_code": sp.status.code,
                    "status_message": sp.status.message,
                    "attributes": _attributes(sp.attributes),
                    "events": [{"name": e.name, "attributes": _attributes(e.attributes)} for e in events]
                    if events else [],
                    "resource": resource,
                    "scope": scope,
                })
    return spans


def _attributes(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = kv.value
        # Most values are non-empty strings: one field read instead of WhichOneof + read.
        out[kv.key] = v.string_value or _value(v)
    return out


def _value(v: Any) -> Any:
    """An AnyValue as a Python value (bytes as base64 text, kvlist as a dict)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def prepare_spans(
    spans: list[dict[str, Any]], *, tenant: str, received: dt.datetime, limits: Limits, capture_content: bool = False
) -> TraceBatch:
    """Map ``spans`` onto events and build their log records for ``tenant``.

    Event ids are derived from the tenant, trace and span ids
    (``adaptd.streams.otel_map.execution_id``): a re-sent span keeps its ids, and the
    same span sent by two tenants gives each its own events.

    A span that cannot be mapped is dead-lettered whole, with the reason.  An event that
    fails validation (or the size limit) is dead-lettered like on ``/v1/events``; its span
    counts as rejected although its other, valid event is kept.  No spans give no records.

    Raises:
        IngestError: 413 when there are more than ``limits.max_batch_events`` spans.
    """
    if len(spans) > limits.max_batch_events:
        raise IngestError(
            413, f"request has {len(spans)} spans; the limit is {limits.max_batch_events}"
            " (limits.max_batch_events): export smaller batches (BatchSpanProcessor max_export_batch_size)",
        )
    # The tenant is part of every id: trace and span ids are seen by every service a
    # trace crosses, so two tenants may well send the same span.
    mapped = map_spans(spans, capture_content=capture_content, tenant=tenant)
    # A span gives at most two events: the per-span limit above is the real bound.
    prepared: Prepared = prepare(
        mapped.events, tenant=tenant, received=received, source=SOURCE,
        limits=dataclasses.replace(limits, max_batch_events=max(len(mapped.events), 1)),
    )
    reasons: dict[int, str] = dict(mapped.rejected)
    for rejected in prepared.rejected:
        i = mapped.span_index[rejected["index"]]
        reasons.setdefault(i, f"{mapped.events[rejected['index']].get('kind')}: {rejected['reason']}")
    records = prepared.records
    limiter = limits.dead_letter_limiter
    unmapped = list(mapped.rejected.items())
    # Unmappable spans share the tenant's dead-letter rate with invalid events.
    allowed = len(unmapped) if limiter is None else limiter.take(tenant, len(unmapped))
    for i, reason in unmapped[:allowed]:
        records.append(dead_letter(spans[i], reason, tenant=tenant, received=received, source=SOURCE))
    dead = len(prepared.rejected) + len(mapped.rejected)
    return TraceBatch(
        records=records, spans=len(spans), accepted_events=prepared.accepted, dead_letters=dead,
        rejected_spans=len(reasons), error_message=_summary(reasons, spans) if reasons else "",
        suppressed=prepared.suppressed + len(unmapped) - allowed, future=prepared.future,
    )


def _summary(reasons: dict[int, str], spans: list[dict[str, Any]]) -> str:
    parts = []
    for i in sorted(reasons)[:MAX_REASONS]:
        span_id = spans[i].get("span_id") or "?"
        parts.append(f"span {i} ({span_id}): {reasons[i]}")
    more = len(reasons) - MAX_REASONS
    tail = f"; ... and {more} more" if more > 0 else ""
    return f"{len(reasons)} of {len(spans)} spans rejected (dead-lettered): " + "; ".join(parts) + tail


def ingest(
    body: bytes, fmt: str, *, tenant: str, received: dt.datetime, limits: Limits, capture_content: bool = False
) -> TraceBatch:
    """Decode and prepare one request body (the work ``POST /v1/traces`` hands to a thread).

    Raises:
        IngestError: 400 for a malformed body, 413 for too many spans.
    """
    return prepare_spans(decode(body, fmt), tenant=tenant, received=received, limits=limits,
                         capture_content=capture_content)


def encode_response(batch: TraceBatch | None, fmt: str) -> bytes:
    """The ExportTraceServiceResponse body; ``partial_success`` only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if batch is not None and batch.rejected_spans:
        response.partial_success.rejected_spans = batch.rejected_spans
        response.partial_success.error_message = batch.error_message
    if fmt == PROTOBUF:
        return response.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(response))


def encode_status(http_status: int, message: str, fmt: str) -> bytes:
    """A ``google.rpc.Status`` body for a refused request (OTLP/HTTP's error answer)."""
    code = _RPC_CODES.get(http_status, 2)  # 2: UNKNOWN
    if fmt == JSON:
        return orjson.dumps({"code": code, "message": message})
    # Status is {int32 code = 1; string message = 2;}: hand-encoded rather than pulling
    # in googleapis-common-protos for two fields.
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)

