"""Scenario definitions for the routing benchmark: a tiny task set and scripted deployments.

Pure data and pure functions, no I/O, no clocks. ``adaptd.daemon.demo.mock_provider`` serves the
deployments of a :class:`Scenario`; the routing benchmark drives a DSPy program through them.

* Tasks: :func:`make_tasks` generates arithmetic questions ("What is 17+25?") whose correct
  answer :func:`solve` computes from the question text alone, so the mock provider and the
  grader agree without sharing state. :func:`grade` scores a predicted answer (1.0 / 0.0).
* Behaviour: a deployment is a list of :class:`Phase` (``at_s`` = seconds since the scenario
  start, and the :class:`Behaviour` from then on). :func:`behaviour_at` picks the phase in force.
* Scenarios: :data:`SCENARIOS` (name -> :class:`Scenario`), each with the routes it offers,
  fallback groups, and the fault window the metrics are measured against.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypedDict

# --------------------------------------------------------------------------- tasks

_QUESTION = re.compile(r"What is (-?\d+)\s*([+\-*])\s*(-?\d+)\?")
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Task:
    """One question and its correct answer (as the string a model should produce)."""

    question: str
    answer: str


def make_tasks(n: int, seed: int = 0) -> list[Task]:
    """``n`` arithmetic tasks, the same list for the same ``(n, seed)``; ``n <= 0`` gives []."""
    rng = random.Random(f"tasks:{seed}")
    tasks = []
    for _ in range(max(0, n)):
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(2, 19), rng.randint(2, 19)
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
        tasks.append(Task(f"What is {a}{op}{b}?", _evaluate(a, op, b)))
    return tasks


def solve(text: str) -> str | None:
    """The correct answer to the *last* "What is a<op>b?" in ``text``; None if there is none.

    The last one, because a DSPy prompt may carry few-shot demos before the real question.
    """
    matches = _QUESTION.findall(text)
    if not matches:
        return None
    a, op, b = matches[-1]
    return _evaluate(int(a), op, int(b))


def _evaluate(x: int, op: str, y: int) -> str:
    """``x op y`` as a model should answer it (``op`` one of ``+ - *``)."""
    return str(x + y if op == "+" else x - y if op == "-" else x * y)


def wrong_answer(correct: str, u: float) -> str:
    """A plausible wrong answer (off by 1..9, either sign) picked by ``u`` in [0, 1)."""
    k = int(u * 18)  # 0..17
    offset = (k % 9) + 1
    return str(int(correct) + (offset if k < 9 else -offset))


def grade(predicted: object, expected: str) -> float:
    """1.0 if the first integer in ``predicted`` equals ``expected``, else 0.0 (also for None,
    empty text or no integer at all)."""
    if predicted is None:
        return 0.0
    found = _INTEGER.search(str(predicted))
    return 1.0 if found is not None and found.group() == str(expected).strip() else 0.0


# --------------------------------------------------------------------------- behaviour


@dataclass(frozen=True)
class Behaviour:
    """How a deployment answers while a phase is in force.

    Rates are per request and exclusive, drawn in the order 429, 500, 503, reset, hang;
    their sum must be <= 1. ``quality`` is the probability that a successful answer is
    correct. Latency is lognormal with median ``latency_ms`` and log-sd ``latency_sigma``
    (applied to successes and errors alike). A hang holds the request ``hang_s`` seconds,
    far beyond any sane client timeout, then answers 504. Prices are USD per 1k tokens.
    """

    latency_ms: float = 300.0
    latency_sigma: float = 0.25
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_reset: float = 0.0
    rate_hang: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = 30.0
    quality: float = 0.9
    price_in_per_1k: float = 0.001
    price_out_per_1k: float = 0.002

    def __post_init__(self) -> None:
        rates = (self.rate_429, self.rate_500, self.rate_503, self.rate_reset, self.rate_hang)
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1 + 1e-9:
            raise ValueError(f"error rates must be in [0, 1] and sum to <= 1, got {rates}")
        if not 0 <= self.quality <= 1:
            raise ValueError(f"quality must be in [0, 1], got {self.quality}")
        if self.latency_ms < 0 or self.latency_sigma < 0 or self.hang_s < 0:
            raise ValueError("latency_ms, latency_sigma and hang_s must be >= 0")

    @property
    def error_rate(self) -> float:
        """Share of requests that fail one way or another."""
        return self.rate_429 + self.rate_500 + self.rate_503 + self.rate_reset + self.rate_hang

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Price of one call with this usage."""
        return (prompt_tokens * self.price_in_per_1k + completion_tokens * self.price_out_per_1k) / 1000


@dataclass(frozen=True)
class Phase:
    """From ``at_s`` seconds after the scenario start (until the next phase), ``behaviour``."""

    at_s: float
    behaviour: Behaviour


def behaviour_at(phases: list[Phase], elapsed_s: float) -> Behaviour:
    """The behaviour in force ``elapsed_s`` seconds after the start: the last phase with
    ``at_s <= elapsed_s``, whatever the list order. Before the earliest phase (or with
    negative time) the earliest phase applies. Raises ValueError for an empty list."""
    if not phases:
        raise ValueError("a deployment needs at least one phase")
    ordered = sorted(phases, key=lambda p: p.at_s)
    current = ordered[0].behaviour
    for phase in ordered:
        if phase.at_s <= elapsed_s:
            current = phase.behaviour
    return current


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """A scripted world: deployments (name -> phases), fallback groups and the fault window.

    ``groups`` name sets of deployments that serve as one route group (e.g. "primary");
    ``fallbacks`` says which group takes over when a group fails. ``affected`` are the
    deployments the fault hits, from ``fault_start_s`` until ``fault_end_s`` (None: never
    recovers within ``duration_s``); the benchmark measures how fast traffic leaves them and
    comes back. ``best`` is the deployment a good router should prefer when all is well.
    """

    name: str
    description: str
    duration_s: float
    deployments: Mapping[str, list[Phase]]
    best: str
    affected: tuple[str, ...] = ()
    fault_start_s: float | None = None
    fault_end_s: float | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def behaviour(self, deployment: str, elapsed_s: float) -> Behaviour:
        """The behaviour of ``deployment`` at ``elapsed_s``; KeyError for an unknown name."""
        return behaviour_at(self.deployments[deployment], elapsed_s)

    def scaled(self, factor: float) -> Scenario:
        """The same script with every time (phases, fault window, duration) multiplied by
        ``factor`` (> 0), for shorter runs. Latencies and hang durations are unchanged."""
        if factor <= 0:
            raise ValueError("factor must be > 0")

        def s(x: float | None) -> float | None:
            return None if x is None else x * factor

        return replace(
            self,
            duration_s=self.duration_s * factor,
            deployments={
                name: [Phase(p.at_s * factor, p.behaviour) for p in phases]
                for name, phases in self.deployments.items()
            },
            fault_start_s=s(self.fault_start_s),
            fault_end_s=s(self.fault_end_s),
        )


# Baseline tiers: "strong" is the best on quality, "fast" is cheap and quick, "alt" is a
# second provider close to "strong". Prices are in the real range of hosted models.
STRONG = Behaviour(latency_ms=400, latency_sigma=0.25, quality=0.95, price_in_per_1k=0.0025, price_out_per_1k=0.01)
ALT = Behaviour(latency_ms=500, latency_sigma=0.3, quality=0.9, price_in_per_1k=0.002, price_out_per_1k=0.008)
FAST = Behaviour(latency_ms=150, latency_sigma=0.2, quality=0.7, price_in_per_1k=0.00015, price_out_per_1k=0.0006)

DOWN = dict(rate_500=0.3, rate_503=0.5, rate_reset=0.2)  # every request fails, mixed ways
T_FAULT, T_RECOVER, DURATION = 30.0, 90.0, 120.0


def _three(strong: list[Phase], **extra: list[Phase]) -> dict[str, list[Phase]]:
    deployments = {"strong": strong, "alt": [Phase(0, ALT)], "fast": [Phase(0, FAST)]}
    deployments.update(extra)
    return deployments


def _fault(during: Behaviour, before: Behaviour = STRONG) -> list[Phase]:
    return [Phase(0, before), Phase(T_FAULT, during), Phase(T_RECOVER, before)]


class _Window(TypedDict):
    """The fault window and routes most scenarios share (``Scenario`` fields)."""

    affected: tuple[str, ...]
    fault_start_s: float
    fault_end_s: float
    best: str


_WINDOW: _Window = {"affected": ("strong",), "fault_start_s": T_FAULT, "fault_end_s": T_RECOVER, "best": "strong"}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="outage_best",
            description="The best route fails every request (500/503/resets) from 30 s, recovers at 90 s.",
            duration_s=DURATION,
            deployments=_three(_fault(replace(STRONG, **DOWN))),
            **_WINDOW,
        ),
        Scenario(
            name="latency_degradation",
            description="The best route slows 10x (median 4 s, heavy tail) from 30 s to 90 s; answers stay correct.",
            duration_s=DURATION,
            deployments=_three(_fault(replace(STRONG, latency_ms=4000, latency_sigma=0.5))),
            **_WINDOW,
        ),
        Scenario(
            name="rate_limiting",
            description="The best route answers 429 (Retry-After 2 s) to 70% of requests from 30 s to 90 s.",
            duration_s=DURATION,
            deployments=_three(_fault(replace(STRONG, rate_429=0.7, retry_after_s=2.0))),
            **_WINDOW,
        ),
        Scenario(
            name="group_down",
            description=(
                "Both deployments of the primary group fail from 30 s to 90 s (one with errors, "
                "one hanging); the backup group must take over."
            ),
            duration_s=DURATION,
            deployments={
                "primary-a": _fault(replace(STRONG, **DOWN)),
                "primary-b": _fault(replace(ALT, rate_hang=0.9, rate_503=0.1), before=ALT),
                "backup": [Phase(0, FAST)],
            },
            best="primary-a",
            affected=("primary-a", "primary-b"),
            fault_start_s=T_FAULT,
            fault_end_s=T_RECOVER,
            groups={"primary": ("primary-a", "primary-b"), "backup": ("backup",)},
            fallbacks={"primary": ("backup",)},
        ),
        Scenario(
            name="quality_regression",
            description=(
                "From 30 s the best route silently answers worse (correct 95% -> 50%), "
                "with no errors and unchanged latency; restored at 90 s."
            ),
            duration_s=DURATION,
            deployments=_three(_fault(replace(STRONG, quality=0.5))),
            **_WINDOW,
        ),
        Scenario(
            name="recovery",
            description="The best route is down at the start and recovers at 30 s; traffic should return.",
            duration_s=90.0,
            deployments=_three([Phase(0, replace(STRONG, **DOWN)), Phase(T_FAULT, STRONG)]),
            best="strong",
            affected=("strong",),
            fault_start_s=0.0,
            fault_end_s=T_FAULT,
        ),
        Scenario(
            name="cost_spike",
            description="From 30 s to 90 s the best route costs 10x per token; quality and latency unchanged.",
            duration_s=DURATION,
            deployments=_three(
                _fault(
                    replace(
                        STRONG,
                        price_in_per_1k=STRONG.price_in_per_1k * 10,
                        price_out_per_1k=STRONG.price_out_per_1k * 10,
                    )
                )
            ),
            **_WINDOW,
        ),
    ]
}
