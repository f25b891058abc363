"""POST /v1/traces (OTLP/HTTP) against a real ``adaptd up``: protobuf, JSON, gzip, auth, tenancy."""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from adaptd.streams.otel_map import execution_id, lm_call_id

TOKEN_A = "token-acme-otlp-0123456789"
TOKEN_B = "token-globex-otlp-0123456789"
CONFIG = f"""
[limits]
max_event_bytes = 8192

[[tenants]]
name = "acme"
tokens = ["{TOKEN_A}"]

[[tenants]]
name = "globex"
tokens = ["{TOKEN_B}"]
"""
PB = {"Content-Type": "application/x-protobuf"}
START = 1_763_805_600_000_000_000
_next_id = iter(range(1, 1_000_000))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("otlp")
    config = root / "adaptd.toml"
    config.write_text(CONFIG)
    d = DaemonProcess(root / "data", config=config, env={"ADAPTD_TEST_TOKEN": TOKEN_A}).start()
    yield d
    assert d.stop() == 0, d.output()[-3000:]


def client(daemon: DaemonProcess, token: str | None = TOKEN_A) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=daemon.url, headers=headers, timeout=15)


# ---------------------------------------------------------------- building requests


def ids() -> tuple[bytes, bytes]:
    """A fresh (trace id, span id) pair, unique in this test session."""
    n = next(_next_id) + os.getpid() * 1_000_000
    return n.to_bytes(16, "big"), (n + 7).to_bytes(8, "big")


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def pb_span(trace_id: bytes, span_id: bytes, name: str, parent: bytes = b"", attributes: dict | None = None,
            error: str | None = None) -> Span:
    span = Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
                start_time_unix_nano=START, end_time_unix_nano=START + 40_000_000,
                attributes=[KeyValue(key=k, value=any_value(v)) for k, v in (attributes or {}).items()])
    if error:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return span


def pb_request(program: str, spans: list[Span]) -> ExportTraceServiceRequest:
    resource_spans = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=program)))
    resource_spans.scope_spans[0].scope.name = "test"
    return ExportTraceServiceRequest(resource_spans=[resource_spans])


def llm_trace(program: str) -> tuple[ExportTraceServiceRequest, list[str]]:
    """A two-span trace (CHAIN root, LLM child) of ``program``; also its span ids (hex)."""
    trace_id, root = ids()
    child = (int.from_bytes(root, "big") + 1).to_bytes(8, "big")
    request = pb_request(program, [
        pb_span(trace_id, root, "Predict.forward", attributes={"openinference.span.kind": "CHAIN",
                                                               "input.value": "the secret question"}),
        pb_span(trace_id, child, "LM.__call__", parent=root, attributes={
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
            "llm.token_count.prompt": 11, "llm.token_count.completion": 2, "llm.cost.total": 0.5}),
    ])
    return request, [root.hex(), child.hex()]


def executions_of(daemon: DaemonProcess, program: str, expect: int, token: str = TOKEN_A) -> list[dict]:
    """``program``'s executions once at least ``expect`` are projected (fails after 15 s)."""
    with client(daemon, token) as c:
        def rows() -> list[dict] | None:
            items = c.get("/v1/executions", params={"program": program, "limit": 1000}).json()["items"]
            return items if len(items) >= expect else None

        return wait_until(rows, timeout=15)


def lm_calls_of(daemon: DaemonProcess, program: str, count: int) -> list[dict]:
    """The first ``count`` lm_call events of ``program`` in the log (the live tail from offset 0)."""
    params = {"kind": "lm_call", "program": program, "from_offset": 0, "max_events": count}
    events = []
    with client(daemon) as c, c.stream("GET", "/v1/stream", params=params) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    return events


# ------------------------------------------------------------------------- tests


def test_protobuf_spans_land_as_executions_and_lm_calls(daemon: DaemonProcess) -> None:
    request, (root, child) = llm_trace("otlp-pb")
    with client(daemon) as c:
        answer = c.post("/v1/traces", content=request.SerializeToString(), headers=PB)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(answer.content).HasField("partial_success")

    rows = {r["span_id"]: r for r in executions_of(daemon, "otlp-pb", expect=2)}
    assert set(rows) == {root, child}
    assert rows[child]["parent_id"] == rows[root]["id"]
    assert (rows[child]["module"], rows[child]["module_type"], rows[child]["model"]) == (
        "LM.__call__", "LLM", "gpt-4o-mini")
    assert (rows[child]["tokens_in"], rows[child]["tokens_out"], rows[child]["cost_usd"]) == (11, 2, 0.5)
    assert rows[root]["duration_ms"] == 40.0
    assert rows[root]["tenant"] == "acme" and rows[root]["source"] == "otlp"
    assert rows[root]["inputs"]["value"]["len"] == len("the secret question")
    assert "secret" not in orjson.dumps(rows[root]).decode()  # features, not the text

    [lm_call] = lm_calls_of(daemon, "otlp-pb", 1)
    assert lm_call["execution_id"] == rows[child]["id"]
    assert (lm_call["model"], lm_call["provider"], lm_call["tokens_in"]) == ("gpt-4o-mini", "openai", 11)


def test_json_spans_with_hex_ids_land_and_get_a_json_answer(daemon: DaemonProcess) -> None:
    trace_id, span_id = ids()
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otlp-json"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [{
            "traceId": trace_id.hex(), "spanId": span_id.hex(), "parentSpanId": "", "name": "chat gpt-4o",
            "kind": 3, "startTimeUnixNano": str(START), "endTimeUnixNano": str(START + 5_000_000),
            "attributes": [
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "9"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 4}},
                {"key": "retries", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"boolValue": True}]}}},
            ],
            "status": {"code": 2, "message": "rate limited"},
            "someFutureField": {"ignored": True},
        }]}],
    }]}
    with client(daemon) as c:
        answer = c.post("/v1/traces", content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {}

    [row] = executions_of(daemon, "otlp-json", expect=1)
    assert row["id"] == str(execution_id(trace_id.hex(), span_id.hex(), "acme"))
    assert (row["model"], row["tokens_in"], row["tokens_out"]) == ("gpt-4o", 9, 4)
    assert (row["status"], row["error_message"]) == ("error", "rate limited")
    assert row["attrs"]["retries"] == [1, True]
    [lm_call] = lm_calls_of(daemon, "otlp-json", 1)
    assert lm_call["id"] == str(lm_call_id(execution_id(trace_id.hex(), span_id.hex(), "acme")))
    assert lm_call["status"] == "error"


def test_gzip_protobuf_body_is_accepted(daemon: DaemonProcess) -> None:
    request, _ = llm_trace("otlp-gzip")
    with client(daemon) as c:
        answer = c.post("/v1/traces", content=gzip.compress(request.SerializeToString()),
                        headers={**PB, "Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert len(executions_of(daemon, "otlp-gzip", expect=2)) == 2


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (b"\xff\xff\xff not protobuf", PB, 400, "malformed OTLP protobuf"),
        (b'{"resourceSpans": [', {"Content-Type": "application/json"}, 400, "malformed OTLP JSON"),
        (b'{"resourceSpans": 5}', {"Content-Type": "application/json"}, 400, "malformed OTLP JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
         {"Content-Type": "application/json"}, 400, "resourceSpans[0].scopeSpans[0].spans[0].traceId is not hex"),
        (b"\x1f\x8b not gzip", {**PB, "Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "send application/x-protobuf or application/json"),
    ],
    ids=["protobuf", "json-syntax", "json-shape", "json-hex-id", "gzip", "content-type"],
)
def test_malformed_requests_are_refused_with_the_reason(daemon: DaemonProcess, body: bytes, headers: dict,
                                                        status: int, reason: str) -> None:
    with client(daemon) as c:
        answer = c.post("/v1/traces", content=body, headers=headers)
    assert answer.status_code == status
    if answer.headers["content-type"] == "application/json":
        message = answer.json()["message"]
    else:  # google.rpc.Status in protobuf: field 1 code, field 2 message
        message = answer.content.decode("utf-8", "replace")
    assert reason in message
    with client(daemon) as c:
        assert c.get("/v1/health").status_code == 200  # the daemon is still up


def test_missing_or_unknown_token_is_401(daemon: DaemonProcess) -> None:
    request, _ = llm_trace("otlp-noauth")
    with client(daemon, token=None) as c:
        assert c.post("/v1/traces", content=request.SerializeToString(), headers=PB).status_code == 401
    with client(daemon, token="not-a-token") as c:
        assert c.post("/v1/traces", content=request.SerializeToString(), headers=PB).status_code == 401


def test_tenant_comes_from_the_token_not_the_payload(daemon: DaemonProcess) -> None:
    request, _ = llm_trace("otlp-tenant")
    request.resource_spans[0].resource.attributes.append(KeyValue(key="tenant", value=AnyValue(string_value="acme")))
    with client(daemon, TOKEN_B) as c:
        assert c.post("/v1/traces", content=request.SerializeToString(), headers=PB).status_code == 200
    rows = executions_of(daemon, "otlp-tenant", expect=2, token=TOKEN_B)
    assert {r["tenant"] for r in rows} == {"globex"}
    with client(daemon, TOKEN_A) as c:
        assert c.get("/v1/executions", params={"program": "otlp-tenant"}).json()["items"] == []


def test_rejected_spans_are_reported_as_partial_success_and_dead_lettered(daemon: DaemonProcess) -> None:
    trace_id, good = ids()
    _, too_big = ids()
    request = pb_request("otlp-partial", [
        pb_span(trace_id, good, "ok"),
        pb_span(trace_id, b"\x01\x02", "short-id"),  # an 8-byte span id is required
        # Within the per-attribute caps but past this daemon's max_event_bytes (8192).
        pb_span(trace_id, too_big, "huge", attributes={f"a{i}": "x" * 1000 for i in range(12)}),
    ])
    with client(daemon) as c:
        dead_before = c.get("/v1/stats").json()["dead_letters"]
        answer = c.post("/v1/traces", content=request.SerializeToString(), headers=PB)
        stats = c.get("/v1/stats").json()
    assert answer.status_code == 200, answer.text
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 2
    assert "2 of 3 spans rejected" in partial.error_message
    assert "span_id must be 16 hex digits" in partial.error_message
    assert "limits.max_event_bytes" in partial.error_message
    assert stats["dead_letters"] - dead_before == 2
    [row] = executions_of(daemon, "otlp-partial", expect=1)
    assert row["span_id"] == good.hex()

    as_json = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": trace_id.hex(), "spanId": "0" * 16, "name": "zero", "startTimeUnixNano": START}]}]}]}
    with client(daemon) as c:
        answer = c.post("/v1/traces", content=orjson.dumps(as_json), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    assert answer.json()["partialSuccess"]["rejectedSpans"] == "1"  # int64 is a string in OTLP JSON
    assert "all zeros" in answer.json()["partialSuccess"]["errorMessage"]


def test_resent_spans_are_stored_once(daemon_factory) -> None:
    d = daemon_factory().start()
    request, _ = llm_trace("otlp-resend")
    body = request.SerializeToString()
    with httpx.Client(base_url=d.url, timeout=15) as c:
        for _ in range(3):  # e.g. an exporter retrying after a timeout
            assert c.post("/v1/traces", content=body, headers=PB).status_code == 200
        wait_until(lambda: (s := c.get("/v1/stats").json())["events_projected"] == 9 and s["projector_lag"] == 0)
        assert len(c.get("/v1/executions", params={"program": "otlp-resend"}).json()["items"]) == 2
    assert d.stop() == 0, d.output()[-3000:]
    with duckdb.connect(str(d.data_dir / "adaptd.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM executions WHERE program = 'otlp-resend'").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM lm_calls WHERE program = 'otlp-resend'").fetchone() == (1,)


def test_capture_content_setting_keeps_raw_span_text(daemon_factory) -> None:
    d = daemon_factory(env={"ADAPTD_OTLP__CAPTURE_CONTENT": "true"}).start()
    request, _ = llm_trace("otlp-capture")
    with httpx.Client(base_url=d.url, timeout=15) as c:
        assert c.post("/v1/traces", content=request.SerializeToString(), headers=PB).status_code == 200
    rows = executions_of(d, "otlp-capture", expect=2)
    [root] = [r for r in rows if r["parent_id"] is None]
    assert root["inputs"]["content"] == "the secret question"


# ------------------------------------------------------------- a real DSPy program


@pytest.fixture
def traced_dspy(daemon: DaemonProcess) -> Iterator[Any]:
    with openinference_tracing(daemon) as provider:
        yield provider


@contextlib.contextmanager
def openinference_tracing(daemon: DaemonProcess) -> Iterator[Any]:
    """OpenInference's DSPy instrumentation exporting to ``adaptd.daemon`` over OTLP/HTTP protobuf."""
    import dspy
    from openinference.instrumentation.dspy import DSPyInstrumentor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-dspy-qa"}))
    exporter = OTLPSpanExporter(endpoint=f"{daemon.url}/v1/traces", headers={"Authorization": f"Bearer {TOKEN_A}"})
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # OpenInference's uninstrument() puts back the function *under* DSPy's own
    # @with_callbacks wrapper, which silently turns DSPy callbacks off for the rest of the
    # process; put the methods back ourselves.
    patched, stack = [], [dspy.Module, dspy.BaseLM, dspy.Adapter, dspy.Retrieve, dspy.Tool]
    while stack:  # it patches subclasses too (DummyLM, LM...)
        cls = stack.pop()
        patched.append(cls)
        stack.extend(cls.__subclasses__())
    saved = [(cls, dict(vars(cls))) for cls in patched]
    instrumentor = DSPyInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider
    finally:
        instrumentor.uninstrument()
        for cls, methods in saved:
            for name in ("__call__", "acall", "forward", "aforward"):
                if name in methods:
                    setattr(cls, name, methods[name])
                elif name in vars(cls):  # patched onto a class that inherited it
                    delattr(cls, name)
        provider.shutdown()


def test_dspy_program_traced_with_openinference_lands_as_an_execution_tree(
    daemon: DaemonProcess, traced_dspy: Any
) -> None:
    import dspy

    runs = 2
    lm = dspy.utils.DummyLM([{"reasoning": "Paris is the capital.", "answer": "Paris"}] * runs)
    program = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=lm):
        for _ in range(runs):
            assert program(question="What is the capital of France?").answer == "Paris"
    assert traced_dspy.force_flush(timeout_millis=15_000)

    spans_per_run = 5  # ChainOfThought > Predict > Predict(StringSignature) > ChatAdapter > DummyLM
    rows = executions_of(daemon, "otlp-dspy-qa", expect=runs * spans_per_run)
    assert len(rows) == runs * spans_per_run
    by_id = {r["id"]: r for r in rows}
    roots = [r for r in rows if r["parent_id"] is None]
    assert [r["module"] for r in roots] == ["ChainOfThought.forward"] * runs
    for row in rows:  # every parent is a span of the same trace
        if row["parent_id"] is not None:
            assert by_id[row["parent_id"]]["trace_id"] == row["trace_id"]

    def chain(row: dict) -> list[str]:
        """Module names from ``row`` up to its root (bounded: a cycle fails the test)."""
        path = [row["module"]]
        while row["parent_id"] is not None and len(path) <= len(rows):
            row = by_id[row["parent_id"]]
            path.append(row["module"])
        return path

    llm_rows = [r for r in rows if r["module_type"] == "LLM"]
    assert len(llm_rows) == runs
    assert chain(llm_rows[0]) == ["DummyLM.__call__", "ChatAdapter.__call__", "Predict(StringSignature).forward",
                                  "Predict.forward", "ChainOfThought.forward"]
    assert {r["model"] for r in llm_rows} == {"dummy"}
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["inputs"]["value"]["type"] == "str" for r in rows)

    lm_calls = lm_calls_of(daemon, "otlp-dspy-qa", runs)
    assert sorted(c["execution_id"] for c in lm_calls) == sorted(r["id"] for r in llm_rows)
    assert {c["model"] for c in lm_calls} == {"dummy"}


def test_the_same_program_captured_by_otlp_and_by_the_callback_lands_as_equivalent_executions(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """One program, run the same way under OpenInference (OTLP) and under AdaptdCallback:
    the same program runs (roots), the same LM calls under the same predictor, the same
    outcomes. The span trees differ in depth (OpenInference also makes spans for the
    adapter and the inner predictor call), the executions they describe do not."""
    import dspy

    from adaptd.adapters import AdaptdCallback, Client

    def run_program(callbacks: list) -> None:
        lm = dspy.utils.DummyLM([{"reasoning": "r", "answer": "Paris"}, {"reasoning": "r", "answer": "Rome"}])
        program = dspy.ChainOfThought("question -> answer")
        with dspy.context(lm=lm, callbacks=callbacks):
            assert program(question="Capital of France?").answer == "Paris"
            assert program(question="Capital of Italy?").answer == "Rome"

    before = len(httpx.get(f"{daemon.url}/v1/executions", params={"program": "otlp-dspy-qa", "limit": 1000},
                           headers={"Authorization": f"Bearer {TOKEN_A}"}).json()["items"])
    with openinference_tracing(daemon) as provider:
        run_program([])  # this goes over OTLP as "otlp-dspy-qa"
        assert provider.force_flush(timeout_millis=15_000)
    # Not both at once: under OpenInference's wrappers DSPy skips the LM callbacks.
    sdk = Client(daemon.url, TOKEN_A, spill_dir=tmp_path / "spill", schedule_delay_ms=10)
    try:
        callback = AdaptdCallback(program="callback-dspy-qa", client=sdk)
        run_program([callback])
        assert sdk.flush(15) and sdk.stats()["exported"] == 2 * 3 and callback.errors == 0
    finally:
        sdk.shutdown(5)

    cb_rows = executions_of(daemon, "callback-dspy-qa", expect=2 * 2)
    otlp_rows = executions_of(daemon, "otlp-dspy-qa", expect=before + 2 * 5)
    otlp_rows = sorted(otlp_rows, key=lambda r: r["ts"])[-10:]  # this test's two runs

    def summary(rows: list[dict], is_lm: Any) -> dict:
        roots = sorted((r for r in rows if r["parent_id"] is None), key=lambda r: r["ts"])
        return {
            "runs": [(r["module"].removesuffix(".forward"), r["status"]) for r in roots],
            "lm_models": sorted(r["model"] for r in rows if is_lm(r)),
            "statuses": {r["status"] for r in rows},
            "root_output_lens": [r["outputs"] is not None for r in roots],
        }

    otlp = summary(otlp_rows, lambda r: r["module_type"] == "LLM")
    callback = summary(cb_rows, lambda r: r["module_type"] == "Predict")
    assert otlp == callback == {
        "runs": [("ChainOfThought", "ok"), ("ChainOfThought", "ok")],
        "lm_models": ["dummy", "dummy"],
        "statuses": {"ok"},
        "root_output_lens": [True, True],
    }
