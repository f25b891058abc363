"""Drift sees the same features whatever sent the execution.

One real DSPy program (``ChainOfThought`` on ``DummyLM``) answers the same questions three
ways into one real daemon: under ``AdaptdCallback``, wrapped in ``@adaptd.observe``, and
traced by OpenInference over OTLP/HTTP.  The root executions read back from the daemon's
log give the drift processor the same input and output features, field by field
(``execution_features``), though each entry point wraps them differently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until
from test_otlp import CONFIG, TOKEN_A, openinference_tracing

import adaptd
from adaptd.adapters import AdaptdCallback, Client
from adaptd.streams.processors.drift.detector import execution_features

QUESTIONS = ["What is the capital of France?", "Which river runs through Rome, and how long is it?"]
ANSWERS = [{"reasoning": "France's capital is Paris.", "answer": "Paris"},
           {"reasoning": "The Tiber runs through Rome; it is about 406 km long.", "answer": "The Tiber, 406 km"}]


@pytest.fixture
def daemon(daemon_factory, tmp_path: Path) -> DaemonProcess:
    """A daemon with the OTLP tests' tenants (OpenInference exports with their token)."""
    (tmp_path / "adaptd.toml").write_text(CONFIG)
    return daemon_factory("entry", config=tmp_path / "adaptd.toml", env={"ADAPTD_TEST_TOKEN": TOKEN_A}).start()


def run(callbacks: list) -> list[Any]:
    """The program on every question, with ``callbacks``; its predictions."""
    program = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=dspy.utils.DummyLM(list(ANSWERS)), callbacks=callbacks):
        return [program(question=q) for q in QUESTIONS]


def roots_in_log(daemon: DaemonProcess, program: str, count: int) -> list[dict]:
    """The first ``count`` root executions of ``program`` in the daemon's log, in log order."""
    def read() -> list[dict] | None:
        params = {"kind": "execution", "program": program, "from_offset": 0}
        events = []
        with httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {TOKEN_A}"}, timeout=15) as c:
            items = c.get("/v1/executions", params={"program": program, "limit": 1000}).json()["items"]
            if sum(r["parent_id"] is None for r in items) < count:
                return None
            with c.stream("GET", "/v1/stream", params={**params, "max_events": len(items)}) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data: "):
                        events.append(orjson.loads(line[6:]))
        roots = [e for e in events if e.get("parent_id") is None]
        return roots[:count] if len(roots) >= count else None

    return wait_until(read, timeout=20)


def content_features(event: dict) -> dict[str, Any]:
    """The drift features of an execution's inputs and outputs (not its timings)."""
    return {k: v for k, v in execution_features(event).items() if k.startswith(("inputs.", "outputs."))}


def test_observe_callback_and_otlp_give_drift_the_same_input_and_output_features(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    sdk = Client(daemon.url, TOKEN_A, spill_dir=tmp_path / "spill", schedule_delay_ms=10)
    try:
        assert [p.answer for p in run([AdaptdCallback(program="ep-callback", client=sdk)])] == \
            [a["answer"] for a in ANSWERS]

        @adaptd.observe(program="ep-observe", client=sdk)
        def qa(question: str) -> Any:
            program = dspy.ChainOfThought("question -> answer")
            return program(question=question)

        with dspy.context(lm=dspy.utils.DummyLM(list(ANSWERS))):
            assert [qa(q).answer for q in QUESTIONS] == [a["answer"] for a in ANSWERS]
        assert sdk.flush(15)
    finally:
        sdk.shutdown(5)
    with openinference_tracing(daemon) as provider:  # service "otlp-dspy-qa"
        run([])
        assert provider.force_flush(timeout_millis=15_000)

    by_entry = {name: [content_features(e) for e in roots_in_log(daemon, program, len(QUESTIONS))]
                for name, program in (("callback", "ep-callback"), ("observe", "ep-observe"),
                                      ("otlp", "otlp-dspy-qa"))}
    # Each wraps its fields its own way on the wire ...
    callback_event = roots_in_log(daemon, "ep-callback", 1)[0]
    observe_event = roots_in_log(daemon, "ep-observe", 1)[0]
    otlp_event = roots_in_log(daemon, "otlp-dspy-qa", 1)[0]
    assert set(callback_event["inputs"]) == {"question"}
    assert set(observe_event["inputs"]) == {"args"}
    assert set(otlp_event["inputs"]) == {"value", "fields"}
    # ... and drift reads the same named features from all three, outputs included.
    expected = by_entry["callback"]
    assert by_entry["observe"] == expected
    assert by_entry["otlp"] == expected
    names = set(expected[0])
    assert {"inputs.question.len", "inputs.question.text", "outputs.answer.len", "outputs.answer.text",
            "outputs.reasoning.len", "outputs.reasoning.text"} <= names
    assert expected[0]["inputs.question.len"] == len(QUESTIONS[0])
    assert expected[1]["outputs.answer.len"] == len(ANSWERS[1]["answer"])
    assert expected[0]["outputs.reasoning.text"] != expected[1]["outputs.reasoning.text"]
