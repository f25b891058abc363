"""The demo's script: three programs, their routes, and a story of four episodes (pure).

Programs (all on arithmetic questions the mock provider and the toy LM can grade):

- ``qa``: ``dspy.Predict`` over three mock deployments, ``qa-strong`` (best answers),
  ``qa-alt`` and ``qa-fast`` (cheap, worse). Episode **outage**: ``qa-strong`` fails every
  request for a while, then recovers.
- ``support``: ``dspy.Predict`` over ``sup-fast`` (quick and good) and ``sup-backup``.
  Episode **slowdown**: ``sup-fast`` answers 10x slower for a while. Episode **drift**:
  from some point on, support questions arrive as long tickets with bigger numbers.
- ``triage``: the optimizer's toy task (``adaptd.daemon.demo.toy``) on two program slots
  ``blue`` / ``green`` (``AdaptiveModule`` variants). Episode **quality regression**: the
  questions switch to a format the toy LM gets wrong without a worked example, until
  adaptd re-optimizes the program and rolls the new version out.

Times are fractions of the demo's duration, so a 60 s run and a 10 min run tell the same
story. Nothing here does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from adaptd.daemon.demo import toy
from adaptd.daemon.demo.scenarios import ALT, FAST, STRONG, Behaviour, Phase, Scenario

DOWN = dict(rate_500=0.5, rate_503=0.3, rate_reset=0.2)
SUP_FAST = Behaviour(latency_ms=180, latency_sigma=0.2, quality=0.95, price_in_per_1k=0.0005, price_out_per_1k=0.0015)
SUP_BACKUP = Behaviour(latency_ms=450, latency_sigma=0.25, quality=0.8, price_in_per_1k=0.001, price_out_per_1k=0.003)
#: The episodes as (start, end) fractions of the duration; end None: lasts to the end.
TIMES = {"outage": (0.2, 0.5), "slowdown": (0.3, 0.6), "drift": (0.35, None), "quality regression": (0.3, None)}


@dataclass(frozen=True)
class Episode:
    """One scripted fault: what happens to which program (and route), from when to when
    (seconds since the demo started; ``end_s`` None: until the end)."""

    name: str
    program: str
    route: str | None
    start_s: float
    end_s: float | None
    what: str


def episodes(duration_s: float) -> list[Episode]:
    """The story's episodes for a demo of ``duration_s`` seconds, in start order."""
    def at(name: str) -> tuple[float, float | None]:
        a, b = TIMES[name]
        return round(a * duration_s, 1), None if b is None else round(b * duration_s, 1)

    out = [
        Episode("outage", "qa", "qa-strong", *at("outage"), "qa-strong fails every request (500/503/resets)"),
        Episode("slowdown", "support", "sup-fast", *at("slowdown"), "sup-fast answers 10x slower"),
        Episode("drift", "support", None, *at("drift"), "support questions arrive as long tickets"),
        Episode("quality regression", "triage", None, *at("quality regression"),
                "triage questions switch to a format the model gets wrong without an example"),
    ]
    return sorted(out, key=lambda e: e.start_s)


def scenario(duration_s: float) -> Scenario:
    """The mock provider's deployments (``qa-*``, ``sup-*``) scripted for the story."""
    eps = {e.name: e for e in episodes(duration_s)}
    out, slow = eps["outage"], eps["slowdown"]
    # An episode without an end lasts to the end of the demo.
    out_end = duration_s if out.end_s is None else out.end_s
    slow_end = duration_s if slow.end_s is None else slow.end_s
    return Scenario(
        name="demo",
        description="adaptd demo: an outage of qa-strong and a slowdown of sup-fast",
        duration_s=duration_s,
        deployments={
            "qa-strong": [Phase(0, STRONG), Phase(out.start_s, replace(STRONG, **DOWN)), Phase(out_end, STRONG)],
            "qa-alt": [Phase(0, ALT)],
            "qa-fast": [Phase(0, FAST)],
            "sup-fast": [Phase(0, SUP_FAST), Phase(slow.start_s, replace(SUP_FAST, latency_ms=1800, latency_sigma=0.3)),
                         Phase(slow_end, SUP_FAST)],
            "sup-backup": [Phase(0, SUP_BACKUP)],
        },
        best="qa-strong",
    )


ROUTES = {"qa": ["qa-strong", "qa-alt", "qa-fast"], "support": ["sup-fast", "sup-backup"], "triage": ["blue", "green"]}
_WORDS = ["invoice", "refund", "shipping", "login", "warranty", "upgrade", "billing", "export", "latency", "quota"]


def qa_question(rng: random.Random) -> str:
    """A short arithmetic question (two-digit sums and differences, small products)."""
    op = rng.choice("+-*")
    a, b = (rng.randint(2, 19), rng.randint(2, 19)) if op == "*" else (rng.randint(10, 99), rng.randint(10, 99))
    return f"What is {a}{op}{b}?"


def support_question(rng: random.Random, drifted: bool) -> str:
    """A support question: short before the drift; after it, a long ticket around bigger
    numbers (what the drift processor sees: sizes and the text sketch move)."""
    if not drifted:
        return qa_question(rng)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 24)))
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    return f"Ticket {rng.randint(1000, 9999)} ({words}). Customer asks to verify a total. What is {a}+{b}?"


def triage_question(rng: random.Random, regressed: bool) -> str:
    """A toy question: the ``words`` family before the regression, ``symbols`` after."""
    a, b = rng.randint(1, 999), rng.randint(1, 999)
    return f"{a} + {b} = ?" if regressed else f"add {a} and {b}"


def triage_answer(question: str) -> str | None:
    """The right answer to a triage question."""
    return toy.solve(question)
