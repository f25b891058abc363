"""The OpenTelemetry bridge: an app's own spans become adaptd events through the SDK."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import wait_until
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from adaptd.adapters import AdaptdSpanProcessor, Client, InMemoryExporter
from adaptd.streams.otel_map import execution_id


@pytest.fixture
def bridged():
    exporter = InMemoryExporter()
    client = Client(exporter=exporter, spill_dir=False, schedule_delay_ms=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(AdaptdSpanProcessor(client))
    yield provider.get_tracer("app"), client, exporter
    provider.shutdown()
    client.shutdown(5)


def test_spans_become_executions_in_their_tree_and_llm_spans_also_lm_calls(bridged):
    tracer, client, exporter = bridged
    with tracer.start_as_current_span("answer") as root:
        root.set_attribute("openinference.span.kind", "CHAIN")
        root.set_attribute("input.value", "Where is my parcel 1234?")
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
            llm.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 120,
                                "gen_ai.usage.output_tokens": 30, "app.shard": 7})  # fmt: skip
    assert client.flush(10)
    events = list(exporter.events)
    by_kind = {(e["kind"], e["module"] if e["kind"] == "execution" else None): e for e in events}
    assert sorted(by_kind) == [("execution", "answer"), ("execution", "chat gpt-4o-mini"), ("lm_call", None)]
    top, chat = by_kind["execution", "answer"], by_kind["execution", "chat gpt-4o-mini"]
    ctx = root.get_span_context()
    assert top["id"] == str(execution_id(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
    assert chat["parent_id"] == top["id"] and top.get("parent_id") is None and top["root_id"] == top["id"]
    assert {top["program"], chat["program"]} == {"support-bot"}
    assert "1234" not in str(top) and top["inputs"]["value"]["len"] == len("Where is my parcel 1234?")
    call = by_kind["lm_call", None]
    assert call["execution_id"] == chat["id"] and call["model"] == "gpt-4o-mini"
    assert (call["tokens_in"], call["tokens_out"], call["provider"]) == (120, 30, "openai")
    assert chat["attrs"]["app.shard"] == 7


def test_an_error_span_is_an_error_execution_and_the_app_sees_its_own_exception(bridged):
    tracer, client, exporter = bridged
    with pytest.raises(TimeoutError):
        with tracer.start_as_current_span("retrieve") as span:
            span.set_status(Status(StatusCode.ERROR, "vector store timed out"))
            raise TimeoutError("vector store timed out")
    assert client.flush(10)
    (event,) = exporter.events
    assert event["status"] == "error" and event["error_type"] == "TimeoutError"
    assert "timed out" in event["error_message"]


def test_bridged_spans_land_in_a_real_daemon(daemon_factory, tmp_path: Path):
    daemon = daemon_factory("bridge").start()
    client = Client(daemon.url, spill_dir=tmp_path / "spill", schedule_delay_ms=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "bridged-app"}))
    provider.add_span_processor(AdaptdSpanProcessor(client))
    tracer = provider.get_tracer("app")
    try:
        for i in range(5):
            with tracer.start_as_current_span("handle", attributes={"request": i}):
                with tracer.start_as_current_span("llm", attributes={"llm.model_name": "gpt-4o-mini",
                                                                     "openinference.span.kind": "LLM"}):  # fmt: skip
                    pass
        provider.force_flush()

        def landed():
            page = httpx.get(f"{daemon.url}/v1/executions", params={"program": "bridged-app"}, timeout=10).json()
            return page["items"] if len(page["items"]) == 10 else None

        rows = wait_until(landed, timeout=30)
    finally:
        provider.shutdown()
        client.shutdown(5)
    assert sorted(r["module"] for r in rows) == ["handle"] * 5 + ["llm"] * 5
    assert all(r["model"] == "gpt-4o-mini" for r in rows if r["module"] == "llm")
