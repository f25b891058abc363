"""``AdaptdSpanProcessor``: forward an OpenTelemetry app's spans to adaptd through the SDK.

For apps already instrumented with OpenTelemetry (OpenInference, OpenLLMetry, GenAI
semantic conventions) that would rather not run an OTLP exporter::

    provider.add_span_processor(adapters.AdaptdSpanProcessor())

Each ended span becomes the same events the daemon makes from OTLP (``adaptd.streams.otel_map``:
an ``execution``, plus an ``lm_call`` for an LM span), batched, retried and spilled like
every SDK event. ``on_end`` only enqueues a reference to the span; the mapping runs on
the SDK's worker thread. Nothing here raises into the app.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

import adaptd.adapters as _sdk
from adaptd.adapters.client import Client
from adaptd.adapters.encode import DEFER
from adaptd.streams.otel_map import is_lm_span, map_span


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """The plain span dict ``adaptd.streams.otel_map`` reads, from an SDK span."""
    ctx = span.context
    parent = span.parent
    status = span.status
    resource = span.resource
    scope = span.instrumentation_scope
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status_code": status.status_code.value if status is not None else 0,
        "status_message": (status.description or "") if status is not None else "",
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "resource": dict(resource.attributes) if resource is not None else {},
        "scope": scope.name if scope is not None else None,
    }


class AdaptdSpanProcessor(SpanProcessor):
    """An OpenTelemetry ``SpanProcessor`` that sends every ended span to adaptd."""

    def __init__(self, client: Client | None = None, *, capture_content: bool = False) -> None:
        """Args:
            client: Where to send events; default: the SDK's default client.
            capture_content: Also send raw input / output text (otherwise features only).
        """
        self.client = client
        self.capture_content = capture_content

    def _client(self) -> Client:
        return self.client or _sdk.get_client()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            client = self._client()
            mapping = _SpanEvents(self, span)
            client.emit_dict("execution", {DEFER: mapping.filler(0)})
            # Both events are enqueued here, not from the worker, so flush() covers both.
            if is_lm_span(span.attributes or {}):
                client.emit_dict("lm_call", {DEFER: mapping.filler(1)})
        except Exception:  # never into the app
            pass

    def shutdown(self) -> None:
        """Flush what was enqueued; the client itself stays usable (it may be shared)."""
        self._client().flush(5.0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._client().flush(timeout_millis / 1000)


class _SpanEvents:
    """Maps one span once, on the worker; each queued event takes its part."""

    __slots__ = ("owner", "span", "events")

    def __init__(self, owner: AdaptdSpanProcessor, span: ReadableSpan) -> None:
        self.owner, self.span = owner, span
        self.events: list[dict[str, Any]] | None = None

    def filler(self, index: int) -> Any:
        def fill(fields: dict[str, Any]) -> None:
            if self.events is None:
                self.events = map_span(span_dict(self.span), capture_content=self.owner.capture_content)
            fields.update(self.events[index])  # an IndexError drops the event as invalid

        return fill
