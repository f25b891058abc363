"""The DSPy callback: real DSPy programs (DummyLM, and dspy.LM with mock_response offline)
become the exact event tree, with usage and cost, features instead of raw text, and
feedback from Evaluate."""

from __future__ import annotations

import json
import os
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import litellm
import pytest
from dspy.utils import DummyLM
from dspy_programs import Pipeline

from adaptd.adapters import AdaptdCallback, Client, InMemoryExporter, execution_id_of, session

MOCK_ANSWER = "[[ ## reasoning ## ]]\nbecause it is\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"



def run(target, lm, callback, **inputs):
    """Call ``target`` under ``callback`` with ``lm`` (settings scoped to the call)."""
    with dspy.context(lm=lm, callbacks=[callback]):
        return target(**inputs)


def sent(client: Client, exporter: InMemoryExporter) -> list[dict]:
    assert client.flush(10)
    return list(exporter.events)


def tree(events: list[dict]) -> list[tuple]:
    """``(depth, kind, program, module, module_type/model)`` in start order, depth-first."""
    by_id = {e["id"]: e for e in events}
    children: dict[str | None, list[dict]] = {}
    for e in events:
        parent = e.get("parent_id") if e["kind"] == "execution" else e.get("execution_id")
        if e["kind"] in ("execution", "lm_call"):
            assert parent is None or parent in by_id, f"dangling parent of {e}"
            children.setdefault(parent, []).append(e)
    out: list[tuple] = []

    def walk(parent: str | None, depth: int) -> None:
        for e in sorted(children.get(parent, []), key=lambda e: (e["ts"], e["id"])):
            detail = e.get("module_type") if e["kind"] == "execution" else e["model"]
            out.append((depth, e["kind"], e["program"], e.get("module"), detail))
            walk(e["id"], depth + 1)

    walk(None, 0)
    return out


def test_chain_of_thought_becomes_a_module_tree_with_its_lm_call(client, exporter):
    cot = dspy.ChainOfThought("question -> answer")
    lm = DummyLM([{"reasoning": "capital", "answer": "Paris"}])
    pred = run(cot, lm, AdaptdCallback(client=client), question="Capital of France?")
    assert pred.answer == "Paris"
    events = sent(client, exporter)
    assert tree(events) == [
        (0, "execution", "ChainOfThought", "ChainOfThought", "ChainOfThought"),
        (1, "execution", "ChainOfThought", "predict", "Predict"),
        (2, "lm_call", "ChainOfThought", None, "dummy"),
    ]
    modules = {e["module"]: e for e in events if e["kind"] == "execution"}
    root, predict = modules["ChainOfThought"], modules["predict"]
    assert root["parent_id"] is None and root["root_id"] == root["id"] == execution_id_of(pred)
    assert predict["root_id"] == root["id"] and predict["status"] == "ok"
    assert predict["attrs"]["signature"] == "question -> reasoning, answer"
    assert predict["attrs"]["adapter"] == "ChatAdapter" and predict["attrs"]["adapter_parse_ms"] >= 0
    assert root["duration_ms"] >= predict["duration_ms"] > 0
    assert {e["attrs"]["session_id"] for e in events} == {root["attrs"]["session_id"]}


def test_react_with_a_tool_records_each_step_and_tool_call(client, exporter):
    def lookup(city: str) -> str:
        """Return the population of a city."""
        return f"{city}: 2.1 million"

    react = dspy.ReAct("question -> answer", tools=[lookup])
    lm = DummyLM([
        {"next_thought": "look it up", "next_tool_name": "lookup", "next_tool_args": {"city": "Paris"}},
        {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "the tool said so", "answer": "2.1 million"},
    ])  # fmt: skip
    pred = run(react, lm, AdaptdCallback(program="population", client=client), question="How many live in Paris?")
    assert pred.answer == "2.1 million"
    assert tree(sent(client, exporter)) == [
        (0, "execution", "population", "ReAct", "ReAct"),
        (1, "execution", "population", "react", "Predict"),
        (2, "lm_call", "population", None, "dummy"),
        (1, "execution", "population", "lookup", "tool"),
        (1, "execution", "population", "react", "Predict"),
        (2, "lm_call", "population", None, "dummy"),
        (1, "execution", "population", "finish", "tool"),
        (1, "execution", "population", "extract", "ChainOfThought"),
        (2, "execution", "population", "extract.predict", "Predict"),
        (3, "lm_call", "population", None, "dummy"),
    ]



def test_nested_module_with_a_litellm_model_carries_tokens_and_cost_of_each_call(client, exporter):
    lm = dspy.LM("openai/gpt-4o-mini", mock_response=MOCK_ANSWER, cache=False)
    pred = run(Pipeline(), lm, AdaptdCallback(client=client), question="Capital of France?")
    assert pred.answer == "Paris"
    events = sent(client, exporter)
    assert tree(events) == [
        (0, "execution", "Pipeline", "Pipeline", "Pipeline"),
        (1, "execution", "Pipeline", "draft", "Predict"),
        (2, "lm_call", "Pipeline", None, "openai/gpt-4o-mini"),
        (1, "execution", "Pipeline", "refine", "ChainOfThought"),
        (2, "execution", "Pipeline", "refine.predict", "Predict"),
        (3, "lm_call", "Pipeline", None, "openai/gpt-4o-mini"),
    ]
    calls = [e for e in events if e["kind"] == "lm_call"]
    history = lm.history[-2:]
    for call, entry in zip(sorted(calls, key=lambda e: e["ts"]), history):
        expected = litellm.completion_cost(completion_response=entry["response"])
        assert call["tokens_in"] == entry["response"].usage.prompt_tokens
        assert call["tokens_out"] == entry["response"].usage.completion_tokens
        assert call["cost_usd"] == pytest.approx(expected, rel=0.01)
        assert call["provider"] == "openai" and call["status"] == "ok"
    root = next(e for e in events if e["kind"] == "execution" and e["parent_id"] is None)
    assert root["tokens_in"] == sum(c["tokens_in"] for c in calls)
    assert root["tokens_out"] == sum(c["tokens_out"] for c in calls)
    assert root["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls), rel=0.01)


#: One completion that every signature below can parse: ReAct's step (the tool call),
#: its extract (reasoning, answer), and a Predict or a ChainOfThought's answer.
MOCK_ALL_FIELDS = (
    "[[ ## next_thought ## ]]\nlook it up\n\n[[ ## next_tool_name ## ]]\nlookup\n\n"
    "[[ ## next_tool_args ## ]]\n{\"city\": \"Paris\"}\n\n[[ ## reasoning ## ]]\nbecause it is\n\n"
    "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
)


def lookup(city: str) -> str:
    """Return the population of a city."""
    return f"{city}: 2.1 million"


#: program -> (factory, its DummyLM answers, the tree below its root).
PROGRAMS = {
    "chain_of_thought": (
        lambda: dspy.ChainOfThought("question -> answer"),
        [{"reasoning": "because it is", "answer": "Paris"}],
        [(1, "execution", "predict", "Predict"), (2, "lm_call", None, "LM")],
    ),
    "react_with_a_tool": (
        lambda: dspy.ReAct("question -> answer", tools=[lookup], max_iters=1),
        [{"next_thought": "look it up", "next_tool_name": "lookup", "next_tool_args": {"city": "Paris"}},
         {"reasoning": "because it is", "answer": "Paris"}],
        [(1, "execution", "react", "Predict"), (2, "lm_call", None, "LM"), (1, "execution", "lookup", "tool"),
         (1, "execution", "extract", "ChainOfThought"), (2, "execution", "extract.predict", "Predict"),
         (3, "lm_call", None, "LM")],
    ),
    "nested_module": (
        Pipeline,
        [{"answer": "Paris"}, {"reasoning": "because it is", "answer": "Paris"}],
        [(1, "execution", "draft", "Predict"), (2, "lm_call", None, "LM"),
         (1, "execution", "refine", "ChainOfThought"), (2, "execution", "refine.predict", "Predict"),
         (3, "lm_call", None, "LM")],
    ),
}  # fmt: skip


@pytest.mark.parametrize("lm_kind", ["dummy", "litellm_mock"])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_each_program_becomes_its_exact_tree_with_either_lm_and_priced_calls_match_litellm(
        client, exporter, name, lm_kind):  # fmt: skip
    factory, answers, below_root = PROGRAMS[name]
    if lm_kind == "dummy":
        lm, model = DummyLM(answers), "dummy"
    else:
        lm, model = dspy.LM("openai/gpt-4o-mini", mock_response=MOCK_ALL_FIELDS, cache=False), "openai/gpt-4o-mini"
    program = factory()
    pred = run(program, lm, AdaptdCallback(program="p", client=client), question="Capital of France?")
    assert pred.answer == "Paris"
    events = sent(client, exporter)
    root_type = type(program).__name__
    expected = [(0, "execution", "p", root_type, root_type)] + [
        (depth, kind, "p", module, model if detail == "LM" else detail) for depth, kind, module, detail in below_root
    ]
    assert tree(events) == expected
    calls = sorted((e for e in events if e["kind"] == "lm_call"), key=lambda e: e["ts"])
    root = next(e for e in events if e["kind"] == "execution" and e["parent_id"] is None)
    if lm_kind == "dummy":  # DummyLM reports no usage and no price: unknown, not zero
        assert all(c.get("cost_usd") is None for c in calls) and root.get("cost_usd") is None
        return
    for call, entry in zip(calls, lm.history[-len(calls):], strict=True):
        assert call["tokens_in"] == entry["response"].usage.prompt_tokens > 0
        assert call["tokens_out"] == entry["response"].usage.completion_tokens > 0
        assert call["cost_usd"] == pytest.approx(litellm.completion_cost(completion_response=entry["response"]),
                                                 rel=0.01)  # fmt: skip
    assert root["tokens_in"] == sum(c["tokens_in"] for c in calls)
    assert root["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls), rel=0.01)


def test_cost_falls_back_to_the_litellm_price_map_when_the_provider_gave_none(client, exporter):
    class NoCostLM(DummyLM):
        """A DummyLM that reports usage for a priced model but no cost, like some providers."""

        def update_history(self, entry):
            entry.update(model="openai/gpt-4o-mini", cost=None, usage={"prompt_tokens": 1200, "completion_tokens": 300})
            super().update_history(entry)

    run(dspy.Predict("question -> answer"), NoCostLM([{"answer": "4"}]), AdaptdCallback(client=client),
        question="2+2?")  # fmt: skip
    (call,) = [e for e in sent(client, exporter) if e["kind"] == "lm_call"]
    prompt_cost, completion_cost = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=1200,
                                                          completion_tokens=300)  # fmt: skip
    assert call["cost_usd"] == pytest.approx(prompt_cost + completion_cost, rel=0.01) and call["cost_usd"] > 0
    assert call["attrs"]["cost_source"] == "litellm_price_map"


def test_cache_hits_are_marked_and_cost_nothing(client, exporter):
    lm = dspy.LM("openai/gpt-4o-mini", mock_response=MOCK_ANSWER, cache=True)
    cot = dspy.ChainOfThought("question -> answer")
    callback = AdaptdCallback(client=client)
    question = f"cached question {uuid.uuid4()}"  # unique per run: the first call is a miss
    run(cot, lm, callback, question=question)
    run(cot, lm, callback, question=question)
    first, second = sorted((e for e in sent(client, exporter) if e["kind"] == "lm_call"), key=lambda e: e["ts"])
    assert not first["cache_hit"] and first["cost_usd"] > 0
    assert second["cache_hit"] is True and second["cost_usd"] == 0.0


def test_a_failing_module_is_recorded_and_its_exception_reaches_the_caller_unchanged(client, exporter):
    class Broken(dspy.Module):
        def forward(self, question: str) -> dspy.Prediction:
            raise KeyError("no such document")

    with pytest.raises(KeyError, match="no such document"):
        run(Broken(), DummyLM([]), AdaptdCallback(client=client), question="q")
    (event,) = sent(client, exporter)
    assert event["status"] == "error" and event["error_type"] == "KeyError"
    assert "no such document" in event["error_message"] and event["program"] == "Broken"


def test_inputs_and_outputs_are_features_unless_content_capture_is_asked(client, exporter):
    secret = "My account number is 4242-4242"
    run(dspy.Predict("question -> answer"), DummyLM([{"answer": "noted"}]), AdaptdCallback(client=client),
        question=secret)  # fmt: skip
    (execution,) = [e for e in sent(client, exporter) if e["kind"] == "execution"]
    assert "4242" not in json.dumps(execution)
    assert execution["inputs"]["question"]["len"] == len(secret) and len(execution["inputs"]["question"]["hv"]) == 32
    assert execution["outputs"]["answer"]["type"] == "str"

    seen = len(sent(client, exporter))
    callback = AdaptdCallback(client=client, capture_content=True,
                              redact=lambda name, value: "[redacted]" if name == "question" else value)  # fmt: skip
    run(dspy.Predict("question -> answer"), DummyLM([{"answer": "noted"}]), callback, question=secret)
    (execution,) = [e for e in sent(client, exporter)[seen:] if e["kind"] == "execution"]
    assert execution["inputs"] == {"question": "[redacted]"} and execution["outputs"] == {"answer": "noted"}


def test_evaluate_scores_become_feedback_on_the_executions_they_scored(client, exporter):
    devset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in [("1+1", "2"), ("2+2", "5")]]
    lm = DummyLM({"1+1": {"answer": "2"}, "2+2": {"answer": "4"}})

    def exact_match(example, prediction, trace=None):
        return example.answer == prediction.answer

    evaluate = dspy.Evaluate(devset=devset, metric=exact_match, num_threads=2, display_progress=False)
    result = run(evaluate, lm, AdaptdCallback(program="arith", client=client), program=dspy.Predict("question -> answer"))
    events = sent(client, exporter)
    feedback = {e["execution_id"]: e for e in events if e["kind"] == "feedback"}
    assert len(feedback) == 2
    by_answer = {}
    for _example, prediction, score in result.results:
        eid = execution_id_of(prediction)
        assert feedback[eid]["score"] == float(score) and feedback[eid]["metric"] == "exact_match"
        by_answer[prediction.answer] = feedback[eid]["score"]
    assert by_answer == {"2": 1.0, "4": 0.0}
    (ev,) = [e for e in events if e["kind"] == "execution" and e["module_type"] == "evaluate"]
    runs = [e for e in events if e["kind"] == "execution" and e["module_type"] == "Predict"]
    assert {r["parent_id"] for r in runs} == {ev["id"]} and {r["program"] for r in runs} == {"arith"}
    assert ev["attrs"]["score"] == 50.0


def test_feedback_on_a_prediction_lands_on_its_execution(client, exporter):
    pred = run(dspy.Predict("question -> answer"), DummyLM([{"answer": "4"}]), AdaptdCallback(client=client),
               question="2+2")  # fmt: skip
    client.feedback(pred, True, label="thumbs_up", comment="right")
    events = sent(client, exporter)
    (fb,) = [e for e in events if e["kind"] == "feedback"]
    (execution,) = [e for e in events if e["kind"] == "execution"]
    assert fb["execution_id"] == execution["id"] and fb["score"] == 1.0 and fb["label"] == "thumbs_up"


def test_a_session_groups_executions(client, exporter):
    callback = AdaptdCallback(client=client)
    predict = dspy.Predict("question -> answer")
    with session("chat-42"):
        run(predict, DummyLM([{"answer": "a"}, {"answer": "b"}]), callback, question="one")
    run(predict, DummyLM([{"answer": "c"}]), callback, question="two")
    sessions = [e["attrs"]["session_id"] for e in sent(client, exporter) if e["kind"] == "execution"]
    assert sessions[0] == "chat-42" and sessions[1] == callback.session_id != "chat-42"


def test_compile_is_recorded_as_one_execution_above_the_runs_it_makes(client, exporter):
    trainset = [dspy.Example(question="1+1", answer="2").with_inputs("question")]
    optimizer = dspy.BootstrapFewShot(metric=lambda e, p, trace=None: e.answer == p.answer, max_rounds=1)
    with dspy.context(lm=DummyLM([{"answer": "2"}] * 4), callbacks=[AdaptdCallback(client=client)]):
        optimizer.compile(dspy.Predict("question -> answer"), trainset=trainset)
    events = [e for e in sent(client, exporter) if e["kind"] == "execution"]
    (compile_,) = [e for e in events if e["module_type"] == "compile" and e["parent_id"] is None]
    assert compile_["module"] == "BootstrapFewShot" and compile_["program"] == "Predict"
    assert any(e["root_id"] == compile_["id"] and e["module_type"] == "Predict" for e in events)


def test_cached_dispatch_calls_the_same_handlers_as_dspys_own(client, exporter):
    from adaptd.adapters import dspy_dispatch

    def trees() -> list:
        def lookup(city: str) -> str:
            """Return the population of a city."""
            return "2.1 million"

        react = dspy.ReAct("question -> answer", tools=[lookup])
        lm = DummyLM([
            {"next_thought": "t", "next_tool_name": "lookup", "next_tool_args": {"city": "Paris"}},
            {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "r", "answer": "2.1 million"},
        ])  # fmt: skip
        seen = len(sent(client, exporter))
        run(react, lm, AdaptdCallback(program="p", client=client, fast_dispatch=False), question="q")
        return tree(sent(client, exporter)[seen:])

    dspy_dispatch.uninstall()
    try:
        plain = trees()
        assert dspy_dispatch.install() and dspy_dispatch.installed()
        assert trees() == trees() == plain  # the second run is served from the cache
    finally:
        dspy_dispatch.install()
