"""Mapping OpenTelemetry spans (OpenInference and GenAI semantic conventions) onto events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from adaptd.streams.events import derived_id, parse_event
from adaptd.streams.features import features
from adaptd.streams.otel_map import (
    MAX_ATTR_CHARS,
    MAX_ATTRS,
    MAX_CONTENT_CHARS,
    NAMESPACE,
    execution_id,
    is_lm_span,
    lm_call_id,
    map_span,
    map_spans,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"
CHILD = "5fb397be34d26b51"
START = 1_763_805_600_000_000_000  # 2025-11-22T10:00:00Z
QUESTION = "What is the capital of France?"
PROMPT_JSON = '{"messages": [{"role": "user", "content": "What is the capital of France?"}]}'


def span(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Predict.forward", "trace_id": TRACE, "span_id": CHILD, "parent_span_id": ROOT,
        "start_ns": START, "end_ns": START + 250_000_000, "status_code": 0, "status_message": "",
        "attributes": {}, "events": [], "resource": {"service.name": "qa"}, "scope": "test.scope",
    }
    base.update(fields)
    return base


def test_openinference_llm_span_maps_to_an_execution_and_an_lm_call_with_exact_fields() -> None:
    attributes = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.token_count.prompt": 120,
        "llm.token_count.completion": 30,
        "llm.token_count.total": 150,
        "llm.cost.total": 0.000036,
        "llm.invocation_parameters": '{"temperature": 0.0}',
        "input.value": PROMPT_JSON,
        "input.mime_type": "application/json",
        "output.value": "Paris",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": QUESTION,
        "llm.output_messages.0.message.content": "Paris",
        "session.id": "s-1",
    }
    execution, lm_call = map_span(span(name="LM.__call__", attributes=attributes))

    eid = execution_id(TRACE, CHILD)
    ts = dt.datetime(2025, 11, 22, 10, 0, tzinfo=dt.UTC)
    assert execution == {
        "kind": "execution", "id": eid, "ts": ts, "program": "qa", "module": "LM.__call__",
        "module_type": "LLM", "status": "ok", "trace_id": TRACE, "span_id": CHILD,
        "parent_id": execution_id(TRACE, ROOT), "duration_ms": 250.0,
        "model": "gpt-4o-mini", "tokens_in": 120, "tokens_out": 30, "cost_usd": 0.000036,
        "inputs": {"value": features(PROMPT_JSON)}, "outputs": {"value": features("Paris")},
        "attrs": {
            "llm.token_count.total": 150, "llm.invocation_parameters": '{"temperature": 0.0}',
            "input.mime_type": "application/json", "session.id": "s-1", "otel.scope": "test.scope",
            "llm.system": "openai", "resource.service.name": "qa",
        },
    }
    assert lm_call == {
        "kind": "lm_call", "id": lm_call_id(eid), "ts": ts, "execution_id": eid, "program": "qa",
        "model": "gpt-4o-mini", "provider": "openai", "status": "ok", "tokens_in": 120, "tokens_out": 30,
        "cost_usd": 0.000036, "duration_ms": 250.0,
    }


def test_genai_semconv_span_maps_model_provider_usage_and_operation() -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4",
        "gen_ai.response.model": "claude-sonnet-4-20250514",
        "gen_ai.usage.input_tokens": 42,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]',
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}]',
    }
    execution, lm_call = map_span(span(name="chat claude-sonnet-4", attributes=attributes, resource={}))

    assert execution["module_type"] == "chat"
    assert execution["model"] == "claude-sonnet-4"
    assert (execution["tokens_in"], execution["tokens_out"]) == (42, 7)
    assert "cost_usd" not in execution
    assert execution["program"] == "chat claude-sonnet-4"  # no service.name: the span name
    assert execution["inputs"] == {"value": features(attributes["gen_ai.input.messages"])}
    assert execution["outputs"] == {"value": features(attributes["gen_ai.output.messages"])}
    # The response model did not become the model field, so it is kept.
    assert execution["attrs"] == {"gen_ai.request.temperature": 0.2, "otel.scope": "test.scope",
                                  "gen_ai.response.model": "claude-sonnet-4-20250514"}
    assert lm_call["model"] == "claude-sonnet-4"
    assert lm_call["provider"] == "anthropic"
    assert (lm_call["tokens_in"], lm_call["tokens_out"]) == (42, 7)


def test_genai_usage_alone_makes_an_lm_call_and_deprecated_prompt_attributes_are_content() -> None:
    attributes = {"gen_ai.system": "openai", "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": 3.0,
                  "gen_ai.prompt.0.content": "hi", "gen_ai.prompt.0.role": "user", "gen_ai.prompt.name": "greet",
                  "gen_ai.completion.0.content": "hello"}
    execution, lm_call = map_span(span(attributes=attributes))

    assert lm_call["model"] == "unknown"
    assert lm_call["provider"] == "openai"
    assert (execution["tokens_in"], execution["tokens_out"]) == (12, 3)
    assert execution["inputs"] == {"value": features("hi\nuser")}
    assert execution["outputs"] == {"value": features("hello")}
    assert execution["attrs"]["gen_ai.prompt.name"] == "greet"  # a name, not content


def test_chain_span_gives_only_an_execution_named_by_service_or_adaptd_attributes() -> None:
    [chain] = map_span(span(attributes={"openinference.span.kind": "CHAIN"}, resource={"service.name": "qa"}))
    assert (chain["program"], chain["module"], chain["module_type"]) == ("qa", "Predict.forward", "CHAIN")
    assert "model" not in chain and "route" not in chain

    [named] = map_span(span(attributes={"adaptd.program": "rag", "adaptd.route": "fast",
                                        "adaptd.program_version": "v3"}))
    assert (named["program"], named["route"], named["program_version"]) == ("rag", "fast", "v3")

    [default] = map_span(span(resource={"service.name": "unknown_service:python3"}))
    assert default["program"] == "Predict.forward"  # OTel's default service name is not a program


def test_root_span_is_its_own_root_and_children_link_to_their_parent() -> None:
    [root] = map_span(span(span_id=ROOT, parent_span_id=None))
    [child] = map_span(span(span_id=CHILD, parent_span_id=ROOT))
    assert "parent_id" not in root and root["root_id"] == root["id"]
    assert child["parent_id"] == root["id"]
    assert "root_id" not in child


def test_mapping_is_deterministic_so_a_resent_span_keeps_its_ids() -> None:
    s = span(attributes={"openinference.span.kind": "LLM", "llm.model_name": "m"})
    first, second = map_span(s), map_span(dict(s))
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert first == second
    assert first[0]["id"] != map_span(span(span_id="1" * 16))[0]["id"]


def test_ids_are_the_namespaced_uuid5_of_trace_and_span_ids() -> None:
    eid = execution_id(TRACE, CHILD)
    assert eid == derived_id(NAMESPACE, TRACE, CHILD)
    assert (eid.version, eid.variant) == (5, "specified in RFC 4122")
    assert lm_call_id(eid) == derived_id(NAMESPACE, "lm_call", eid)


def test_a_tenant_is_mixed_into_every_id_and_links_resolve_within_the_tenant() -> None:
    assert execution_id(TRACE, CHILD, "acme") == derived_id(NAMESPACE, "acme", TRACE, CHILD)
    acme = map_spans([span(span_id=ROOT, parent_span_id=None), span(span_id=CHILD, parent_span_id=ROOT)],
                     tenant="acme").events
    beta = map_spans([span(span_id=ROOT, parent_span_id=None), span(span_id=CHILD, parent_span_id=ROOT)],
                     tenant="beta").events
    assert acme[1]["parent_id"] == acme[0]["id"] and beta[1]["parent_id"] == beta[0]["id"]
    assert {e["id"] for e in acme}.isdisjoint(e["id"] for e in beta)
    assert [e["span_id"] for e in acme] == [e["span_id"] for e in beta] == [ROOT, CHILD]  # kept as they came
    assert "tenant" not in acme[0]  # ingest sets the tenant from the credential


def test_error_status_takes_type_and_message_from_the_exception_event() -> None:
    events = [{"name": "retry", "attributes": {}},
              {"name": "exception", "attributes": {"exception.type": "ValueError", "exception.message": "bad input",
                                                   "exception.stacktrace": "Traceback ..."}}]
    [failed] = map_span(span(status_code=2, status_message="ValueError: bad input", events=events))
    assert failed["status"] == "error"
    assert (failed["error_type"], failed["error_message"]) == ("ValueError", "bad input")
    assert failed["attrs"]["otel.events"] == ["retry"]

    [by_status] = map_span(span(status_code="STATUS_CODE_ERROR", status_message="timed out"))
    assert by_status["status"] == "error"
    assert by_status["error_message"] == "timed out" and "error_type" not in by_status

    [handled] = map_span(span(status_code=1, events=events))  # exception recorded, span OK
    assert handled["status"] == "ok" and "error_type" not in handled


def test_content_is_stored_as_features_never_raw_by_default() -> None:
    secret = "my password is hunter2 and my card is 4111"
    s = span(attributes={"input.value": secret, "output.value": secret + " ok",
                         "llm.input_messages.0.message.content": secret})
    events = map_span(s)
    dumped = orjson.dumps(events).decode()
    assert "hunter2" not in dumped
    assert events[0]["inputs"] == {"value": features(secret)}
    assert events[0]["inputs"]["value"]["hv"]  # the text sketch drift detection reads


def test_capture_content_keeps_the_raw_text_bounded() -> None:
    long = "word " * (MAX_CONTENT_CHARS // 4)
    [execution] = map_span(span(attributes={"input.value": "short question", "output.value": long}),
                           capture_content=True)
    assert execution["inputs"] == {"value": features("short question"), "content": "short question"}
    assert execution["outputs"]["content"] == long[:MAX_CONTENT_CHARS]
    assert execution["outputs"]["truncated"] is True
    assert execution["outputs"]["value"] == features(long)


def test_messages_are_the_content_when_there_is_no_input_value() -> None:
    [execution] = map_span(span(attributes={"llm.input_messages.0.message.content": "be brief",
                                            "llm.input_messages.1.message.content": QUESTION}))
    assert execution["inputs"] == {"value": features("be brief\n" + QUESTION)}


def test_attrs_are_flattened_and_bounded() -> None:
    attributes: dict[str, Any] = {f"k{i:03d}": i for i in range(MAX_ATTRS + 50)}
    attributes["k000"] = {"nested": {"deep": 1}}
    attributes["k001"] = "x" * (MAX_ATTR_CHARS * 3)
    attributes["k002"] = list(range(100))
    [execution] = map_span(span(attributes=attributes))
    attrs = execution["attrs"]
    assert attrs["k000.nested.deep"] == 1
    assert attrs["k001"] == "x" * MAX_ATTR_CHARS
    assert len(attrs["k002"]) == 32
    assert attrs["otel.truncated_attributes"] == 2
    assert len(attrs) == MAX_ATTRS + 2  # plus the two counters
    # 50 span attributes past the cap, then the scope and the resource's service.name.
    assert attrs["otel.dropped_attributes"] == 52
    parse_event(execution)


def test_attrs_of_a_huge_span_stay_far_below_the_event_size_limit() -> None:
    attributes = {f"attribute.{i}": "v" * 100_000 for i in range(1000)}
    [execution] = map_span(span(attributes=attributes))
    assert len(orjson.dumps(execution)) < 32 * 1024
    assert execution["attrs"]["otel.dropped_attributes"] > 900


def test_cost_is_the_sum_of_parts_without_a_total_and_bad_numbers_stay_in_attrs() -> None:
    attributes = {"openinference.span.kind": "LLM", "llm.model_name": "m", "llm.cost.prompt": 0.25,
                  "llm.cost.completion": 0.5, "llm.token_count.prompt": -3, "llm.token_count.completion": "many"}
    execution, lm_call = map_span(span(attributes=attributes))
    assert execution["cost_usd"] == lm_call["cost_usd"] == 0.75
    assert "tokens_in" not in execution and "tokens_out" not in lm_call
    assert execution["attrs"]["llm.token_count.prompt"] == -3
    assert execution["attrs"]["llm.token_count.completion"] == "many"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": "abc"}, "trace_id must be 32 hex digits"),
        ({"trace_id": "z" * 32}, "trace_id must be 32 hex digits"),
        ({"span_id": "0" * 16}, "span_id is all zeros"),
        ({"parent_span_id": "123"}, "parent_span_id must be 16 hex digits"),
        ({"start_ns": 0}, "start_ns must be positive"),
    ],
)
def test_malformed_spans_are_rejected_with_the_reason_and_the_others_mapped(fields: dict, reason: str) -> None:
    mapped = map_spans([span(span_id=ROOT, parent_span_id=None), span(**fields)])
    assert list(mapped.rejected) == [1]
    assert reason in mapped.rejected[1]
    assert [e["span_id"] for e in mapped.events] == [ROOT]
    assert mapped.span_index == [0]


def test_map_spans_indexes_events_by_span_and_every_event_is_valid() -> None:
    spans = [span(span_id=ROOT, parent_span_id=None, attributes={"openinference.span.kind": "CHAIN"}),
             span(span_id=CHILD, attributes={"openinference.span.kind": "LLM", "llm.model_name": "m"}),
             span(span_id="1" * 16, end_ns=START - 1)]  # ends before it starts: no duration
    mapped = map_spans(spans)
    assert [e["kind"] for e in mapped.events] == ["execution", "execution", "lm_call", "execution"]
    assert mapped.span_index == [0, 1, 1, 2]
    assert "duration_ms" not in mapped.events[-1]
    for event in mapped.events:
        parse_event(event)
    assert map_spans([]).events == []


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"openinference.span.kind": "LLM"}, True),
        ({"openinference.span.kind": "CHAIN", "llm.model_name": "m"}, False),
        ({"gen_ai.request.model": "m"}, True),
        ({"gen_ai.usage.output_tokens": 1}, True),
        ({"gen_ai.operation.name": "chat"}, False),
        ({}, False),
    ],
)
def test_is_lm_span_says_which_spans_also_give_an_lm_call(attributes: dict, expected: bool) -> None:
    assert is_lm_span(attributes) is expected
    kinds = [e["kind"] for e in map_span(span(attributes=attributes))]
    assert kinds == (["execution", "lm_call"] if expected else ["execution"])


def test_execution_ids_are_ordinary_version_5_uuids() -> None:
    import pickle
    import uuid

    eid = execution_id(TRACE, CHILD, "acme")
    plain = uuid.UUID(bytes=eid.bytes)  # the same 128 bits through UUID's own constructor
    assert eid == plain and hash(eid) == hash(plain) and str(eid) == str(plain)
    assert eid.version == 5 and eid.is_safe is uuid.SafeUUID.unknown
    assert pickle.loads(pickle.dumps(eid)) == eid


def _varied_spans() -> list[dict[str, Any]]:
    """Spans exercising every branch: children before parents, repeats, LM / GenAI / chain,
    fields whose first key does not convert, errors, content of every shape, bad spans."""
    resource = {"service.name": "qa", "host.name": "h1"}
    other_resource = {"service.name": "unknown_service:python", "deployment": {"env": "prod"}}
    return [
        span(span_id="2" * 16, parent_span_id=ROOT, resource=resource,
             attributes={"openinference.span.kind": "CHAIN", "input.value": QUESTION, "output.value": "Paris"}),
        span(span_id=ROOT, parent_span_id=None, resource=resource,
             attributes={"openinference.span.kind": "CHAIN", "input.value": QUESTION, "output.value": "Paris"}),
        span(span_id=CHILD, resource=resource, attributes={
            "openinference.span.kind": "LLM", "llm.model_name": "", "gen_ai.request.model": "gpt-x",
            "llm.provider": "openai", "llm.system": "openai", "llm.token_count.prompt": "12",
            "llm.token_count.completion": -3, "gen_ai.usage.output_tokens": 7.0, "llm.cost.prompt": 0.5,
            "llm.cost.completion": "0.25", "llm.input_messages.0.message.content": QUESTION,
            "llm.input_messages.0.message.role": "user", "llm.output_messages.0.message.content": 42,
            "adaptd.route": "fast", "adaptd.program": "qa-prog", "adaptd.program_version": 3}),
        span(span_id="3" * 16, status_code=2, status_message="boom", resource=other_resource,
             events=[{"name": "exception", "attributes": {"exception.type": "ValueError",
                                                          "exception.message": "bad"}},
                     {"name": "retry", "attributes": {}}],
             attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5,
                         "gen_ai.prompt": ["a", "b"], "gen_ai.completion": {"text": "c"},
                         "big": "x" * 5000, "nested": {"a": {"b": 1}}, "blob": b"\x00\x01"}),
        span(span_id="4" * 16, trace_id=TRACE.upper(), name="", attributes={"input.value": "é ünïcode text"}),
        span(span_id="5" * 16, trace_id=bytes.fromhex(TRACE), parent_span_id=bytes.fromhex(ROOT)),
        span(span_id=CHILD, resource=resource, attributes={"openinference.span.kind": "LLM"}),  # re-sent
        span(span_id="0" * 16),  # rejected: all zeros
        span(span_id="6" * 16, start_ns=0),  # rejected: no start
        span(span_id="7" * 16, parent_span_id="xyz"),  # rejected: malformed parent
        span(span_id="8" * 16, attributes={f"k{i}": i for i in range(MAX_ATTRS + 5)}),
    ]


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("tenant", [None, "acme"])
def test_map_spans_in_one_batch_equals_mapping_each_span_alone(capture: bool, tenant: str | None) -> None:
    # map_spans shares ids, resources and featurizes every text in one batch; map_span
    # alone does none of that: the events must be the same.
    spans = _varied_spans()
    mapped = map_spans(spans, capture_content=capture, tenant=tenant)
    alone: list[dict[str, Any]] = []
    rejected: dict[int, str] = {}
    for i, s in enumerate(spans):
        try:
            alone.extend(map_span(s, capture_content=capture, tenant=tenant))
        except ValueError as exc:
            rejected[i] = str(exc)
    assert mapped.events == alone
    assert mapped.rejected == rejected and sorted(rejected) == [7, 8, 9]
    for event in mapped.events:
        parse_event({**event, "tenant": tenant or "default"})
    llm = mapped.events[mapped.span_index.index(2)]
    assert llm["model"] == "gpt-x" and llm["attrs"]["llm.model_name"] == ""  # first convertible key wins
    assert llm["tokens_in"] == 12 and llm["tokens_out"] == 7 and llm["cost_usd"] == 0.75
    assert llm["program"] == "qa-prog" and llm["route"] == "fast" and llm["program_version"] == "3"
    assert llm["inputs"]["value"] == features(f"{QUESTION}\nuser")  # the messages' attributes, joined
