"""Which DSPy optimizer to run: rules as the prior, learned from past runs (pure).

**Rules** (hard): each optimizer needs some things.  Every one needs a metric; GEPA needs
a feedback metric (``dspy.Prediction(score=, feedback=)``) and a reflection LM;
BootstrapFinetune a fine-tunable LM and 100+ examples; the others a trainset of some
size, after DSPy's guidance (few examples: BootstrapFewShot; 50+: random search; 200+
and a long run: MIPROv2 heavy).  An optimizer whose estimated cost exceeds the budget
is out too.

**Prior** (soft): an expected devset gain per optimizer (``Spec.prior_gain``, metric
points on a 0..1 metric; rough figures from the DSPy papers, ordered by how much each
searches) and an LM-call cost model ``calls = (a * train + (b + 2) * dev) * calls_per_example + d``
(the optimizer's own loops at its default settings, plus the two devset passes the
runner makes, scoring before and after: without them every run was under-estimated by
``2 * dev`` calls, which matters once a budget is split between ensemble members).

**Learning**: the ``optimizer_run`` results of this tenant shrink both towards what
happened.  Per optimizer, the expected gain is ``(k * prior + sum w * gain) / (k + sum w)``
(``k`` = ``prior_strength`` pseudo-runs; ``w`` 1 for runs of this program, 0.5 for other
programs; a failed or budget-stopped run counts as gain 0), and the cost model is scaled
by the shrunk ratio of actual to estimated LM calls the same way.

**Choice**: among the eligible, the highest expected utility
``gain - cost_weight * (estimated cost / budget)``: spending a whole budget must buy
``cost_weight`` points.  Ties go to the cheaper one.  ``override`` names the optimizer
to use whatever the ranking; it is refused only when something the optimizer cannot
run without is missing (a trainset below its size or a budget it may exceed only warn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict


@dataclass(frozen=True)
class Spec:
    """One optimizer as the recommender sees it."""

    name: str
    dspy_class: str
    params: dict[str, Any]
    prior_gain: float
    min_train: int
    a: float  # LM calls per train example per program call
    b: float  # per dev example
    d: float  # fixed (proposal / reflection calls)
    needs_feedback_metric: bool = False
    needs_reflection_lm: bool = False
    needs_finetunable: bool = False
    fixed_usd: float = 0.0  # e.g. a fine-tuning job
    package: str | None = None  # an optional dependency it imports


CATALOG: tuple[Spec, ...] = (
    Spec("BootstrapFewShot", "BootstrapFewShot", {"max_bootstrapped_demos": 4, "max_labeled_demos": 8},
         0.05, 1, a=1, b=0, d=0),
    Spec("BootstrapFewShotWithRandomSearch", "BootstrapFewShotWithRandomSearch",
         {"max_bootstrapped_demos": 4, "max_labeled_demos": 8, "num_candidate_programs": 8}, 0.07, 10, a=8, b=11, d=0),
    Spec("MIPROv2-light", "MIPROv2", {"auto": "light"}, 0.08, 20, a=6, b=10, d=30, package="optuna"),
    Spec("MIPROv2-medium", "MIPROv2", {"auto": "medium"}, 0.10, 50, a=12, b=25, d=60, package="optuna"),
    Spec("MIPROv2-heavy", "MIPROv2", {"auto": "heavy"}, 0.11, 200, a=18, b=50, d=120, package="optuna"),
    Spec("GEPA", "GEPA", {"auto": "light"}, 0.12, 10, a=0, b=15, d=40, needs_feedback_metric=True,
         needs_reflection_lm=True, package="gepa"),
    Spec("SIMBA", "SIMBA", {"max_steps": 4, "num_candidates": 4}, 0.08, 20, a=20, b=0, d=10),
    Spec("COPRO", "COPRO", {"breadth": 4, "depth": 2}, 0.04, 5, a=8, b=0, d=8),
    Spec("BootstrapFinetune", "BootstrapFinetune", {}, 0.10, 100, a=1, b=0, d=0, needs_finetunable=True,
         fixed_usd=5.0),
)
SPECS: dict[str, Spec] = {s.name.lower(): s for s in CATALOG}
ALIASES = {"miprov2": "miprov2-light", "bootstrapfewshotwithrandomsearch": "bootstrapfewshotwithrandomsearch",
           "randomsearch": "bootstrapfewshotwithrandomsearch"}


def spec_of(name: str) -> Spec | None:
    """The catalog entry called ``name`` (case-insensitive; ``MIPROv2`` = light), or None."""
    key = name.strip().lower()
    return SPECS.get(ALIASES.get(key, key))


@dataclass(frozen=True)
class Situation:
    """What the recommender is told about one optimization."""

    train_size: int
    dev_size: int = 0
    has_metric: bool = True
    feedback_metric: bool = False
    reflection_lm: bool = False
    finetunable: bool = False
    budget_usd: float | None = None
    budget_lm_calls: int | None = None
    calls_per_example: float = 1.0
    cost_per_call_usd: float = 0.0005
    program: str | None = None
    #: Optional packages not installed here (``missing_packages()`` finds them).
    missing_packages: tuple[str, ...] = ()


@dataclass
class Option:
    """One optimizer's standing: estimates, eligibility and why."""

    optimizer: str
    params: dict[str, Any]
    eligible: bool
    why_not: list[str]
    prior_gain: float
    runs: float
    expected_gain: float
    est_lm_calls: int
    est_cost_usd: float
    utility: float
    gain_per_usd: float | None = None


class CostEstimate(TypedDict):
    """What the chosen optimizer is expected to spend (zeros when none is chosen)."""

    lm_calls: int
    usd: float


@dataclass
class Recommendation:
    """The choice, the reasoning in sentences, the ranked alternatives and the cost estimate."""

    optimizer: str | None
    params: dict[str, Any]
    reasoning: list[str]
    alternatives: list[Option]
    cost_estimate: CostEstimate
    overridden: bool = False
    error: str | None = None
    options: list[Option] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("options")
        return out


class RecommendError(ValueError):
    """No optimizer can run (or the override cannot); the message says what is missing."""


def _history_weight(run: Mapping[str, Any], program: str | None) -> float:
    return 1.0 if program is None or run.get("program") == program else 0.5


def learned(history: Sequence[Mapping[str, Any]], program: str | None, k: float
            ) -> dict[str, tuple[float, float, float]]:
    """Per optimizer (catalog key): ``(weighted runs, weighted gain sum, weighted cost-ratio sum)``.

    ``history`` rows are final ``optimizer_run`` results (``optimizer``, ``status``,
    ``score_before``, ``score_after``, ``lm_calls``, ``details.est_lm_calls``).  Runs of
    unknown optimizers or still in progress are skipped; an empty history gives {}.
    """
    out: dict[str, list[float]] = {}
    for run in history:
        spec = spec_of(str(run.get("optimizer") or ""))
        status = run.get("status")
        if spec is None or status not in ("succeeded", "failed", "budget_exhausted"):
            continue
        w = _history_weight(run, program)
        before, after = run.get("score_before"), run.get("score_after")
        gain = float(after) - float(before) if status == "succeeded" and before is not None and after is not None else 0.0
        est = (run.get("details") or {}).get("est_lm_calls")
        calls = run.get("lm_calls")
        ratio = float(calls) / float(est) if est and calls is not None else 1.0
        acc = out.setdefault(spec.name.lower(), [0.0, 0.0, 0.0])
        acc[0] += w
        acc[1] += w * gain
        acc[2] += w * ratio
    return {key: (v[0], v[1], v[2]) for key, v in out.items()}


def estimate(spec: Spec, s: Situation, ratio: float = 1.0) -> tuple[int, float]:
    """``(LM calls, USD)`` one run of ``spec`` is expected to cost in ``s``, scoring the
    devset before and after included."""
    calls = (spec.a * s.train_size + (spec.b + 2) * max(s.dev_size, 0)) * s.calls_per_example + spec.d
    calls = int(round(max(calls, 1.0) * ratio))
    return calls, round(calls * s.cost_per_call_usd + spec.fixed_usd, 6)


def _hard_requirements(spec: Spec, s: Situation, *, size: bool = True) -> list[str]:
    """What ``spec`` lacks in ``s``; ``size`` False leaves the trainset size out (a user
    may override it: the optimizer runs, just with less to learn from)."""
    why = []
    if not s.has_metric:
        why.append("needs a metric (set metric = 'module:function')")
    if spec.needs_feedback_metric and not s.feedback_metric:
        why.append("needs a feedback metric returning dspy.Prediction(score=, feedback=)")
    if spec.needs_reflection_lm and not s.reflection_lm:
        why.append("needs a reflection LM (set reflection_lm)")
    if spec.needs_finetunable and not s.finetunable:
        why.append("needs a fine-tunable LM (finetunable = true)")
    if spec.package is not None and spec.package in s.missing_packages:
        why.append(f"needs the optional package {spec.package!r} (pip install 'dspy[{spec.package}]')")
    if size and s.train_size < spec.min_train:
        why.append(f"needs {spec.min_train}+ training examples, has {s.train_size}")
    return why


def recommend(s: Situation, history: Sequence[Mapping[str, Any]] = (), *, override: str | None = None,
              prior_strength: float = 2.0, cost_weight: float = 0.05) -> Recommendation:
    """Recommend an optimizer for ``s``, learning from ``history`` (see the module doc).

    Returns:
        The recommendation; ``optimizer`` is None (and ``error`` says why) when nothing
        is eligible.

    Raises:
        RecommendError: ``override`` is not a known optimizer, or one of its hard
            requirements (metric, feedback metric, reflection LM, fine-tunable LM) is missing.
    """
    past = learned(history, s.program, prior_strength)
    options: list[Option] = []
    for spec in CATALOG:
        n, gain_sum, ratio_sum = past.get(spec.name.lower(), (0.0, 0.0, 0.0))
        exp_gain = (prior_strength * spec.prior_gain + gain_sum) / (prior_strength + n)
        ratio = (prior_strength * 1.0 + ratio_sum) / (prior_strength + n)
        calls, usd = estimate(spec, s, ratio)
        why = _hard_requirements(spec, s)
        if s.budget_lm_calls is not None and calls > s.budget_lm_calls:
            why.append(f"estimated {calls} LM calls exceed the budget of {s.budget_lm_calls}")
        if s.budget_usd is not None and usd > s.budget_usd:
            why.append(f"estimated ${usd:.4f} exceeds the budget of ${s.budget_usd:.4f}")
        fractions = [calls / s.budget_lm_calls if s.budget_lm_calls else 0.0,
                     usd / s.budget_usd if s.budget_usd else 0.0]
        utility = exp_gain - cost_weight * max(fractions)
        options.append(Option(
            optimizer=spec.name, params=dict(spec.params), eligible=not why, why_not=why,
            prior_gain=spec.prior_gain, runs=round(n, 3), expected_gain=round(exp_gain, 4), est_lm_calls=calls,
            est_cost_usd=usd, utility=round(utility, 4), gain_per_usd=round(exp_gain / usd, 2) if usd > 0 else None,
        ))
    ranked = sorted(options, key=lambda o: (not o.eligible, -o.utility, o.est_lm_calls, o.optimizer))
    reasoning = [f"{s.train_size} training and {s.dev_size} dev examples; metric: {'yes' if s.has_metric else 'no'}"
                 f" (feedback-style: {'yes' if s.feedback_metric else 'no'}); reflection LM: "
                 f"{'yes' if s.reflection_lm else 'no'}; fine-tunable LM: {'yes' if s.finetunable else 'no'}; budget: "
                 f"{_budget(s)}"]
    learned_from = sum(v[0] for v in past.values())
    reasoning.append(f"learned from {learned_from:g} weighted past run(s)" if past else
                     "no past runs: expected gains are the rule priors")
    chosen: Option | None
    overridden = False
    if override is not None:
        wanted = spec_of(override)
        if wanted is None:
            raise RecommendError(f"unknown optimizer {override!r}: one of {', '.join(o.name for o in CATALOG)}")
        chosen = next(o for o in options if o.optimizer == wanted.name)
        hard = _hard_requirements(wanted, s, size=False)
        if hard:
            raise RecommendError(f"{wanted.name} cannot run here: " + "; ".join(hard))
        overridden = True
        reasoning.append(f"{wanted.name} chosen by the user" + ("" if chosen.eligible else
                         " although " + "; ".join(chosen.why_not)))
    else:
        chosen = ranked[0] if ranked and ranked[0].eligible else None
        if chosen is not None:
            reasoning.append(
                f"{chosen.optimizer}: highest expected utility {chosen.utility:.4f} (expected gain "
                f"{chosen.expected_gain:.4f} after {chosen.runs:g} run(s), ~{chosen.est_lm_calls} LM calls, "
                f"~${chosen.est_cost_usd:.4f})")
    if chosen is None:
        missing = "; ".join(f"{o.optimizer}: {', '.join(o.why_not)}" for o in ranked[:3])
        return Recommendation(None, {}, reasoning, [o for o in ranked], {"lm_calls": 0, "usd": 0.0}, False,
                              "no optimizer fits: " + missing, options)
    alternatives = [o for o in ranked if o.optimizer != chosen.optimizer]
    return Recommendation(chosen.optimizer, dict(chosen.params), reasoning, alternatives,
                          {"lm_calls": chosen.est_lm_calls, "usd": chosen.est_cost_usd}, overridden, None, options)


def _budget(s: Situation) -> str:
    parts = []
    if s.budget_usd is not None:
        parts.append(f"${s.budget_usd:g}")
    if s.budget_lm_calls is not None:
        parts.append(f"{s.budget_lm_calls} LM calls")
    return " and ".join(parts) or "none"


def missing_packages() -> tuple[str, ...]:
    """The optional packages of the catalog that are not installed (an edge: checks the
    environment, so callers pass the result in ``Situation.missing_packages``)."""
    import importlib.util

    needed = sorted({s.package for s in CATALOG if s.package})
    return tuple(p for p in needed if importlib.util.find_spec(p) is None)
