"""A tiny offline task for trying re-optimization without a provider (tests, benchmark).

The task: sums written two ways.  Family ``words`` ("add 3 and 4") is what the program
was built for; family ``symbols`` ("3 + 4 = ?") is the regression: a new kind of input
arriving in production.

``ToyLM`` is a scripted ``DummyLM`` that behaves like a model which needs an example of
an unfamiliar format: it answers ``words`` questions right (except a fixed ~5% it gets
wrong), and ``symbols`` questions right only when the prompt holds a demonstration of
that family, otherwise right by luck ~30% of the time (a draw per call from the LM's own
seeded generator, like sampling at a temperature: a question answered right once may be
answered wrong the next time; runs with the same seed and calls repeat exactly).
Re-optimizing on the production examples that passed puts ``symbols`` demos in the
prompt, which is what fixes it.

Registered as::

    factory = "adaptd.daemon.demo.toy:make_program"
    metric = "adaptd.daemon.demo.toy:exact_match"
    lm = "adaptd.daemon.demo.toy:make_lm"
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from typing import Any

import dspy
from dspy.utils.dummies import DummyLM

_QUESTION = re.compile(r"\[\[ ## question ## \]\]\s*\n(.*?)(?:\n\n|\Z)", re.S)
_WORDS = re.compile(r"^add (\d+) and (\d+)$")
_SYMBOLS = re.compile(r"^(\d+) \+ (\d+) = \?$")
_OUTPUTS = re.compile(r"^\d+\. `(\w+)`", re.M)


def _section(system: str) -> str:
    """The "Your output fields are:" part of a ChatAdapter system message."""
    start = system.find("Your output fields are:")
    if start < 0:
        return ""
    end = system.find("All interactions", start)
    return system[start:end if end > 0 else None]


def family(question: str) -> str | None:
    """``"words"``, ``"symbols"`` or None (not a toy question)."""
    q = question.strip()
    return "words" if _WORDS.match(q) else "symbols" if _SYMBOLS.match(q) else None


def solve(question: str) -> str | None:
    """The right answer to a toy question, or None."""
    m = _WORDS.match(question.strip()) or _SYMBOLS.match(question.strip())
    return str(int(m.group(1)) + int(m.group(2))) if m else None


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def questions(fam: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct questions of family ``fam`` (deterministic in ``seed``)."""
    rng = random.Random(f"{fam}:{seed}")
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    while len(out) < n:
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        out.append(f"add {a} and {b}" if fam == "words" else f"{a} + {b} = ?")
    return out


class ToyLM(DummyLM):
    """The scripted LM of the toy task (see the module docstring)."""

    def __init__(self, *, word_error: float = 0.05, lucky: float = 0.3, cost_per_call: float = 0.0001,
                 seed: int = 0, delay_s: float | None = None) -> None:
        super().__init__({}, follow_examples=True)
        self.word_error, self.lucky, self.cost_per_call = word_error, lucky, cost_per_call
        self.rng = random.Random(seed)
        # A per-call delay stands in for a provider's latency (ADAPTD_TOY_DELAY_S: slow runs in tests).
        self.delay_s = float(os.environ.get("ADAPTD_TOY_DELAY_S", "0")) if delay_s is None else delay_s
        self.calls = 0

    def _use_example(self, messages: list[dict[str, Any]]) -> str:
        self.calls += 1
        m = _QUESTION.search(messages[-1].get("content") or "")
        question = m.group(1).strip() if m else ""
        right = solve(question)
        fam = family(question)
        demo_families = {family(d.group(1)) for msg in messages[:-1] if msg.get("role") == "user"
                         for d in _QUESTION.finditer(msg.get("content") or "")}
        if fam == "words":
            ok = _unit("err:" + question) >= self.word_error
        elif fam == "symbols":
            ok = "symbols" in demo_families or self.rng.random() < self.lucky
        else:
            ok = False
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        answer = right if ok and right is not None else str(int(right or 0) + 1 + int(_unit(question) * 9))
        # Optimizers ask for other fields too (proposed instructions, reasoning...): a plain sentence each.
        fields = _OUTPUTS.findall(_section(messages[0].get("content") or "")) or ["answer"]
        return self._format_answer_fields({f: answer if f == "answer" else "Add the two numbers." for f in fields})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(*args, **kwargs)
        if self.history:  # a provider-reported cost, so budgets have something to count
            self.history[-1]["cost"] = self.cost_per_call
        return out


def make_program() -> dspy.Module:
    """The toy program: one ``Predict("question -> answer")``."""
    return dspy.Predict("question -> answer")


def make_lm() -> dspy.BaseLM:
    """A fresh ``ToyLM``."""
    return ToyLM()


def exact_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """1.0 when the predicted answer is the example's, else 0.0."""
    return float(str(getattr(prediction, "answer", "")).strip() == str(example.answer).strip())


def example_line(question: str, answer: str | None = None) -> dict[str, Any]:
    """One JSONL line of an example file (the right answer when none is given)."""
    return {"inputs": {"question": question}, "outputs": {"answer": answer if answer is not None else solve(question)}}
