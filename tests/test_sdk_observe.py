"""Specs of ``adaptd.adapters.observe`` and ``adaptd.adapters.features``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

from adaptd.adapters import Client, InMemoryExporter, current_observation, features, observe
from adaptd.adapters.features import text_sketch

QUESTION = "What is the capital of France? Answer briefly."


@pytest.fixture
def sink() -> Iterator[tuple[Client, InMemoryExporter]]:
    ex = InMemoryExporter()
    client = Client(exporter=ex, spill_dir=False, schedule_delay_ms=20)
    yield client, ex
    client.shutdown(2)


def events(client: Client, ex: InMemoryExporter) -> list[dict]:
    assert client.flush(5)
    return ex.events


def test_a_decorated_call_emits_one_execution_with_features_not_raw_text(sink):
    client, ex = sink

    @observe(program="qa", route="r1", program_version="v3", client=client)
    def answer(question: str, k: int = 3) -> str:
        return "Paris"

    assert answer(QUESTION, k=5) == "Paris"
    (ev,) = events(client, ex)
    assert ev["kind"] == "execution" and ev["program"] == "qa" and ev["status"] == "ok"
    assert ev["route"] == "r1" and ev["program_version"] == "v3"
    assert ev["duration_ms"] >= 0 and ev["root_id"] == ev["id"] and "parent_id" not in ev
    q = ev["inputs"]["args"]["question"]
    assert q["type"] == "str" and q["len"] == len(QUESTION) and len(q["sketch"]) == 16
    assert ev["inputs"]["args"]["k"]["type"] == "int"
    assert ev["outputs"]["return"]["len"] == 5
    raw = json.dumps(ev)
    assert "capital" not in raw and "Paris" not in raw


def test_capture_content_records_raw_inputs_and_outputs(sink):
    client, ex = sink

    @observe(program="qa", capture_content=True, client=client)
    def answer(question: str) -> str:
        return "Paris"

    answer(QUESTION)
    (ev,) = events(client, ex)
    assert ev["inputs"] == {"args": {"question": QUESTION}} and ev["outputs"] == {"return": "Paris"}


def test_nested_observed_calls_form_a_tree_and_inherit_the_program(sink):
    client, ex = sink

    @observe(client=client)
    def retrieve(query: str) -> list[str]:
        return ["doc"]

    @observe(client=client)
    def generate(query: str, docs: list[str]) -> str:
        return "answer"

    @observe(program="qa", client=client)
    def pipeline(query: str) -> str:
        return generate(query, retrieve(query))

    pipeline("q")
    by_module = {e.get("module"): e for e in events(client, ex)}
    root, ret, gen = by_module[None], by_module["retrieve"], by_module["generate"]
    assert {e["program"] for e in (root, ret, gen)} == {"qa"}
    assert ret["parent_id"] == gen["parent_id"] == root["id"]
    assert ret["root_id"] == gen["root_id"] == root["id"] == root["root_id"]
    assert current_observation() is None  # the context is restored


def test_an_exception_is_recorded_and_reraised_unchanged(sink):
    client, ex = sink
    boom = ValueError("bad input")

    @observe(program="qa", client=client)
    def fail() -> None:
        raise boom

    with pytest.raises(ValueError) as info:
        fail()
    assert info.value is boom
    (ev,) = events(client, ex)
    assert (ev["status"], ev["error_type"], ev["error_message"]) == ("error", "ValueError", "bad input")
    assert "outputs" not in ev


def test_async_functions_are_observed_and_concurrent_tasks_keep_their_own_parents(sink):
    client, ex = sink

    @observe(client=client)
    async def step(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @observe(program="qa", client=client)
    async def run(x: int) -> int:
        return sum(await asyncio.gather(step(x), step(x + 1)))

    async def main() -> list[int]:
        return await asyncio.gather(run(1), run(10))

    assert asyncio.run(main()) == [6, 42]
    evs = events(client, ex)
    roots = [e for e in evs if "parent_id" not in e]
    assert len(roots) == 2 and len(evs) == 6
    for root in roots:
        children = [e for e in evs if e.get("parent_id") == root["id"]]
        assert len(children) == 2 and all(c["root_id"] == root["id"] for c in children)


def test_the_context_manager_records_what_the_block_sets(sink):
    client, ex = sink
    with observe(program="qa", client=client) as obs:
        obs.set(route="r1", model="m", tokens_in=12, id="ignored")
        obs.record_inputs(question=QUESTION)
        obs.record_output("Paris")
        with observe(module="inner", client=client) as inner:
            pass
    with pytest.raises(KeyError):
        with observe(program="qa", client=client):
            raise KeyError("k")
    first_inner, outer, failed = events(client, ex)
    assert outer["id"] == obs.id and (outer["route"], outer["model"], outer["tokens_in"]) == ("r1", "m", 12)
    assert outer["inputs"]["args"]["question"]["len"] == len(QUESTION)
    assert first_inner["id"] == inner.id and first_inner["parent_id"] == obs.id
    assert first_inner["program"] == "qa" and first_inner["module"] == "inner"
    assert failed["status"] == "error" and failed["error_type"] == "KeyError"


def test_one_observer_shared_by_threads_keeps_each_block_apart(sink):
    client, ex = sink
    shared = observe(program="qa", client=client)
    start = threading.Barrier(4, timeout=5)
    ids: list[str] = []

    def work() -> None:
        with shared as obs:
            start.wait()
            ids.append(obs.id)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    evs = events(client, ex)
    assert sorted(e["id"] for e in evs) == sorted(ids) and len(ids) == 4
    assert all("parent_id" not in e for e in evs)


def test_async_context_manager(sink):
    client, ex = sink

    async def main() -> str:
        async with observe(program="qa", client=client) as obs:
            obs.set(route="r2")
            return obs.id

    oid = asyncio.run(main())
    (ev,) = events(client, ex)
    assert ev["id"] == oid and ev["route"] == "r2"


def test_bare_decorator_uses_the_function_name_as_program(sink, monkeypatch):
    client, ex = sink
    import adaptd.adapters as adapters

    monkeypatch.setattr(adapters, "_default", client)

    @observe
    def standalone() -> int:
        return 1

    assert standalone() == 1 and standalone.__name__ == "standalone"
    (ev,) = events(client, ex)
    assert ev["program"] == "standalone"


def test_text_sketches_of_texts_on_one_topic_are_closer_than_across_topics():
    def cos(a: str, b: str) -> float:
        x, y = text_sketch(a), text_sketch(b)
        return sum(i * j for i, j in zip(x, y)) / (127 * 127)

    markets = "investors sold shares and the stock market fell sharply"
    assert cos(markets, "the stock market fell as investors sold their shares") > 0.5
    assert cos(markets, "the football team won the final match in extra time") < 0.3
    assert text_sketch("Hello hello") == text_sketch("hello HELLO")  # case-folded
    assert len(text_sketch("a b")) == 32 and not any(text_sketch("a b"))  # no 2-char words


def test_features_are_pure_and_never_contain_the_value():
    assert features("hello") == features("hello")
    assert features("hello")["sketch"] != features("hellO")["sketch"]
    assert set(features("héllo")) == {"type", "len", "sketch", "hv"} and features("héllo")["len"] == 5
    assert "hv" not in features("?!") and "hv" not in features("")
    assert features(None) == {"type": "NoneType"} and features(True) == {"type": "bool"}
    d = features({"question": "secret text", "k": 3})
    assert d["type"] == "dict" and d["len"] == 2 and d["keys"] == ["question", "k"]
    assert "secret" not in json.dumps(d)
    assert features({"a": 1, "b": 2})["sketch"] == features({"b": 2, "a": 1})["sketch"]
    assert features({3, 1, 2})["sketch"] == features({1, 2, 3})["sketch"]
    assert features([1, 2])["len"] == 2 and features(b"\x00\x01")["len"] == 2

    class Record:
        def toDict(self) -> dict:
            return {"answer": "x"}

    class Opaque:
        pass

    assert features(Record())["keys"] == ["answer"]
    assert features(Opaque())["type"].endswith("Opaque")  # no repr, no address
    assert features(Opaque())["sketch"] == features(Opaque())["sketch"]


def test_observe_never_breaks_the_program_when_the_sdk_fails(sink):
    client, ex = sink

    class Broken:
        def toDict(self):
            raise RuntimeError("no")

        def __len__(self):
            raise RuntimeError("no")

    @observe(program="qa", client=client)
    def f(x: object) -> str:
        return "ok"

    assert f(Broken()) == "ok"
    client.shutdown(2)  # emits now drop: still nothing raises
    assert f(1) == "ok"
    assert len(events(client, ex)) == 1


def test_huge_containers_get_no_sketch_so_the_caller_never_pays_for_hashing_them():
    big = features(list(range(20_000)))
    assert big == {"type": "list", "len": 20_000}
    assert "sketch" in features(list(range(10)))
