"""What the DSPy callback costs the host program: the host thread only records, the worker
describes at a bounded cost (text sketches sampled under load, the rate in the event), and
a queued call keeps few objects alive for the garbage collector."""

from __future__ import annotations

import gc
import os
import threading
import uuid
import zlib

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import orjson
import pytest
from dspy.utils import DummyLM
from dspy.utils.callback import BaseCallback

from adaptd.adapters import AdaptdCallback, Client, InMemoryExporter, dspy_describe
from adaptd.adapters.dspy_describe import TextSketchSampler, feature_fragments, sketched
from adaptd.adapters.encode import validate_batch
from adaptd.streams.features import features

SECOND = 1_000_000_000



class FixedLevel(TextSketchSampler):
    """A sampler at a chosen level, whatever the rate."""

    def __init__(self, level: int) -> None:
        super().__init__(1.0)
        self.fixed = level

    def level(self, start_ns: int) -> int:
        return self.fixed


def cot_calls(callback: BaseCallback, n: int) -> dspy.Module:
    cot = dspy.ChainOfThought("question -> answer")
    lm = DummyLM([{"reasoning": f"because {i}", "answer": f"answer {i}"} for i in range(n)])
    with dspy.context(lm=lm, callbacks=[callback]):
        for i in range(n):
            cot(question=f"What is question number {i}?")
    return cot


# -- the sampler ------------------------------------------------------------------------


def test_sampler_level_follows_the_previous_seconds_call_count():
    sampler = TextSketchSampler(100)
    t = 1_000 * SECOND
    assert [sampler.level(t + i) for i in range(400)] == [0] * 400  # the first second: all sketched
    assert sampler.level(t + SECOND) == 2  # 400 calls the second before: 400 / 2**2 <= 100
    for i in range(49):
        sampler.level(t + SECOND + i)
    assert sampler.level(t + 2 * SECOND) == 0  # 50 calls: under the budget
    assert sampler.level(t + 5 * SECOND) == 0  # after idle seconds: all sketched
    assert sampler.level(t + 4 * SECOND) == 0  # an older second gets the current level


def test_sampler_level_is_capped_and_none_means_every_call():
    sampler = TextSketchSampler(1)
    for i in range(100_000):
        sampler.level(i)
    assert sampler.level(SECOND) == dspy_describe.MAX_SKETCH_LEVEL
    unlimited = TextSketchSampler(None)
    assert all(unlimited.level(i * SECOND // 10_000) == 0 for i in range(20_000))


def test_a_tree_is_sketched_by_the_drift_processors_rule_at_the_rate_of_its_level():
    ids = [str(uuid.UUID(int=i * 7919 + 12345)) for i in range(20_000)]
    assert all(sketched(i, 0) for i in ids)
    for level in (1, 3, 5):
        kept = [i for i in ids if sketched(i, level)]
        # The drift processor thins executions by the same hash: zlib.crc32(id) low bits.
        assert kept == [i for i in ids if not zlib.crc32(i.encode()) & ((1 << level) - 1)]
        assert len(kept) / len(ids) == pytest.approx(1 / 2**level, rel=0.15)


# -- features as pre-serialized fragments ---------------------------------------------------


@pytest.mark.parametrize("value", ["What is 2 plus 2?", "", "?!", "héllo wörld\ud800", ["a", 1], {"k": "v"}, 3, None])
def test_feature_fragments_are_the_json_of_features_with_or_without_the_text_sketch(value):
    expected = features(value)
    for text_sketch in (True, False):
        frags = feature_fragments({"x": value, "y": value}, text_sketch)
        got = orjson.loads(orjson.dumps(frags))
        want = expected if text_sketch else {k: v for k, v in expected.items() if k != "hv"}
        assert got == {"x": want, "y": want}
    assert feature_fragments(None) == {} and feature_fragments({}) == {}


# -- the callback --------------------------------------------------------------------------


def test_under_load_whole_call_trees_lose_their_text_sketch_and_carry_the_rate(client, exporter):
    callback = AdaptdCallback(program="qa", client=client)
    callback._sampler = FixedLevel(2)
    n = 64
    cot_calls(callback, n)
    assert client.flush(10)
    texts = [f"What is question number {i}?" for i in range(n)] + [f"because {i}" for i in range(n)] + \
        [f"answer {i}" for i in range(n)]  # fmt: skip
    described = {features(t)["sketch"]: features(t) for t in texts}
    executions = [e for e in exporter.events if e["kind"] == "execution"]
    assert len(executions) == 2 * n
    kept = set()
    for e in executions:
        assert e["attrs"]["text_sketch_rate"] == 0.25
        whole = sketched(e["root_id"], 2)  # the tree is sampled as a whole
        if whole:
            kept.add(e["root_id"])
        for value in (*e["inputs"].values(), *e["outputs"].values()):
            full = described[value["sketch"]]
            assert value == (full if whole else {k: v for k, v in full.items() if k != "hv"})
    assert 0 < len(kept) < n
    # Valid as the daemon sees them (its own validator): the rate is an attribute.
    lines = [orjson.dumps(e) for e in exporter.events]
    assert validate_batch([e["kind"] for e in exporter.events], lines) == (lines, [])


def test_below_the_budget_every_call_is_sketched_and_no_rate_is_sent(client, exporter):
    cot_calls(AdaptdCallback(program="qa", client=client, text_sketches_per_s=None), 5)
    assert client.flush(10)
    for e in (e for e in exporter.events if e["kind"] == "execution"):
        assert "text_sketch_rate" not in e["attrs"] and len(e["inputs"]["question"]["hv"]) == 32


def test_the_host_thread_only_records_features_and_json_are_made_on_the_worker(client, exporter, monkeypatch):
    threads: set[str] = set()
    real = dspy_describe.feature_fragments

    def spy(values, text_sketch=True):
        threads.add(threading.current_thread().name)
        return real(values, text_sketch)

    monkeypatch.setattr(dspy_describe, "feature_fragments", spy)
    callback = AdaptdCallback(program="qa", client=client, text_sketches_per_s=None)
    cot_calls(callback, 3)
    assert client.flush(10)
    assert threads == {"adaptd-sdk-worker"} and callback.errors == 0
    assert len([e for e in exporter.events if e["kind"] == "execution"]) == 6


def test_a_queued_call_keeps_few_objects_alive_for_the_garbage_collector():
    """While events wait for the worker, the objects they hold are what the collector
    traverses (and promotes); DSPy itself keeps ~14 per ChainOfThought call here."""

    def alive_per_call(callback: BaseCallback) -> float:
        n = 300
        cot_calls(callback, 20)  # warm-up: caches, DSPy's first formatting
        gc.collect()
        before = len(gc.get_objects())
        cot_calls(callback, n)
        gc.collect()
        return (len(gc.get_objects()) - before) / n

    paused = Client(exporter=InMemoryExporter(), spill_dir=False, schedule_delay_ms=1e9,
                    max_batch_size=100_000, max_queue_size=100_000)  # fmt: skip
    try:
        extra = alive_per_call(AdaptdCallback(program="qa", client=paused)) - alive_per_call(BaseCallback())
        assert len(paused._q) == 3 * 320
        assert extra <= 4, extra  # the 3 queued records (was 16: tuples, dicts, completers...)
    finally:
        paused.shutdown(5)


def test_a_predictor_given_a_new_signature_is_described_with_it(client, exporter):
    callback = AdaptdCallback(program="qa", client=client)
    predict = dspy.Predict("question -> answer")
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}, {"answer": "c"}])
    with dspy.context(lm=lm, callbacks=[callback]):
        predict(question="one")
        assert client.flush(10)  # described (and its signature remembered) before the change
        predict.signature = predict.signature.with_instructions("Answer briefly.").append(
            "context", dspy.InputField(), type_=str)
        predict(question="two", context="c")
    assert client.flush(10)
    first, second = (e["attrs"]["signature"] for e in exporter.events if e["kind"] == "execution")
    assert first == "question -> answer" and second == "question, context -> answer"
