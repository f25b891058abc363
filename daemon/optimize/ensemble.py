"""The optimizer ensemble: which optimizers run together within one budget, and which result is kept (pure).

**Plan.**  The optimizers are ranked as ``recommend`` ranks them (expected utility,
learned from past runs).  Walking down the eligible ones in that order, an optimizer
joins while the members' summed estimates (LM calls and USD) still fit the one budget,
until ``k`` members; one whose estimate would not fit beside those before it is left out
(and the plan says so).  So the first member is always the single recommendation, and an
ensemble of 1 is exactly today's single job.

**Budget split.**  Each member's ceiling is the budget times its share of the members'
summed estimate: ``ceiling_i = budget * est_i / sum(est)``, LM calls rounded down and
USD rounded down to a millionth.  The ceilings add up to at most the budget, and each is
at least the member's own estimate (the headroom ``budget - sum(est)`` is shared in
proportion to the estimates).  No budget (None): no ceilings.  A member that finishes
under its ceiling does not hand the rest to another one (members may run in any order).

**Choice.**  Among the members that succeeded, the highest devset score after
optimization; ties (within 1e-9) go to the cheaper one (lower cost in USD, then fewer LM
calls, then plan order).  No member succeeded: no choice, and the reason says why.
The ``ranked`` rule (``[[optimize]] ensemble_choice = "ranked"``) counts scores within the
devset's sampling error of the best as tied (``sqrt(0.5 / dev_size)``, the standard error
of a difference of two means of 0/1 scores at its widest) and breaks ties by plan order,
the recommender's ranking: a member displaces the recommended one only by more than the
devset can tell apart.  (On a 16-example devset, exact ties and one-example wins are
common, and the cheaper run's version is not the one that generalises better; see
``bench/ensemble_bench.py``.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from adaptd.daemon.optimize.recommend import CATALOG, Option, Recommendation, RecommendError, Situation, recommend

MAX_K = len(CATALOG)
_TIE = 1e-9


@dataclass(frozen=True)
class Member:
    """One optimizer of an ensemble: its estimates and its share of the budget."""

    optimizer: str
    params: dict[str, Any]
    expected_gain: float
    utility: float
    est_lm_calls: int
    est_cost_usd: float
    budget_lm_calls: int | None
    budget_usd: float | None


@dataclass
class EnsemblePlan:
    """The members (plan order = rank order), the optimizers left out and why, the summed
    estimate, and the single recommendation the ranking came from."""

    asked: int
    members: list[Member]
    left_out: list[dict[str, str]]
    reasoning: list[str]
    cost_estimate: dict[str, float]
    budget_usd: float | None
    budget_lm_calls: int | None
    recommendation: Recommendation = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "members": [asdict(m) for m in self.members], "left_out": self.left_out,
                "reasoning": self.reasoning, "cost_estimate": self.cost_estimate, "budget_usd": self.budget_usd,
                "budget_lm_calls": self.budget_lm_calls}


def _fits(total_calls: int, total_usd: float, s: Situation) -> bool:
    return ((s.budget_lm_calls is None or total_calls <= s.budget_lm_calls)
            and (s.budget_usd is None or total_usd <= s.budget_usd + _TIE))


def split_budget(estimates: Sequence[tuple[int, float]], budget_lm_calls: int | None,
                 budget_usd: float | None) -> list[tuple[int | None, float | None]]:
    """Per estimate ``(LM calls, USD)``, its ceilings ``(LM calls, USD)``: the budget split
    in proportion to the estimates (see the module doc); equal shares when the estimates
    sum to zero.  No estimates: []."""
    n = len(estimates)
    total_calls = sum(c for c, _ in estimates)
    total_usd = sum(u for _, u in estimates)
    out: list[tuple[int | None, float | None]] = []
    for calls, usd in estimates:
        calls_share = calls / total_calls if total_calls > 0 else 1.0 / n
        usd_share = usd / total_usd if total_usd > 0 else 1.0 / n
        out.append((None if budget_lm_calls is None else max(1, math.floor(budget_lm_calls * calls_share)),
                    None if budget_usd is None else math.floor(budget_usd * usd_share * 1e6) / 1e6))
    return out


def plan_ensemble(s: Situation, history: Sequence[Mapping[str, Any]] = (), k: int = 2, *,
                  prior_strength: float = 2.0, cost_weight: float = 0.05) -> EnsemblePlan:
    """The ensemble of up to ``k`` optimizers for ``s`` (see the module doc).

    Returns:
        The plan; ``members`` is empty (and ``reasoning`` ends with why) when no optimizer
        is eligible.

    Raises:
        RecommendError: ``k`` is not between 1 and the catalog's size.
    """
    if not 1 <= k <= MAX_K:
        raise RecommendError(f"ensemble size {k} is out of range: ask for 1 to {MAX_K} optimizers")
    rec = recommend(s, history, prior_strength=prior_strength, cost_weight=cost_weight)
    ranked: list[Option] = sorted(rec.options, key=lambda o: (not o.eligible, -o.utility, o.est_lm_calls, o.optimizer))
    chosen: list[Option] = []
    left_out: list[dict[str, str]] = []
    calls, usd = 0, 0.0
    for option in ranked:
        if len(chosen) == k or not option.eligible:
            break
        if _fits(calls + option.est_lm_calls, usd + option.est_cost_usd, s):
            chosen.append(option)
            calls, usd = calls + option.est_lm_calls, usd + option.est_cost_usd
        else:
            left_out.append({"optimizer": option.optimizer, "why": (
                f"~{option.est_lm_calls} LM calls / ~${option.est_cost_usd:.4f} do not fit beside the members"
                f" before it (~{calls} calls / ~${usd:.4f} of {_budget_text(s)})")})
    ceilings = split_budget([(o.est_lm_calls, o.est_cost_usd) for o in chosen], s.budget_lm_calls, s.budget_usd)
    members = [Member(o.optimizer, dict(o.params), o.expected_gain, o.utility, o.est_lm_calls, o.est_cost_usd,
                      c, u) for o, (c, u) in zip(chosen, ceilings, strict=True)]
    reasoning = list(rec.reasoning[:2])
    if not members:
        reasoning.append(rec.error or "no optimizer fits")
    else:
        reasoning.append(f"{len(members)} of {k} asked: " + ", ".join(
            f"{m.optimizer} (utility {m.utility:+.4f}, ~{m.est_lm_calls} calls)" for m in members)
            + f"; together ~{calls} LM calls / ~${usd:.4f} of {_budget_text(s)}")
        if len(members) < k:
            eligible = sum(o.eligible for o in ranked)
            reasoning.append(f"only {len(members)} fit: {eligible} optimizer(s) are eligible here"
                             + (f", {len(left_out)} did not fit the budget beside the others" if left_out else ""))
        reasoning.append("each member's ceiling is the budget times its share of the summed estimate")
    return EnsemblePlan(asked=k, members=members, left_out=left_out, reasoning=reasoning,
                        cost_estimate={"lm_calls": calls, "usd": round(usd, 6)}, budget_usd=s.budget_usd,
                        budget_lm_calls=s.budget_lm_calls, recommendation=rec)


def _budget_text(s: Situation) -> str:
    parts = ([f"{s.budget_lm_calls} LM calls"] if s.budget_lm_calls is not None else []) + (
        [f"${s.budget_usd:g}"] if s.budget_usd is not None else [])
    return " / ".join(parts) or "no budget"


@dataclass(frozen=True)
class Choice:
    """The member kept (None: none succeeded) and why."""

    job_id: str | None
    reason: str


def tie_margin(rule: str, dev_size: int) -> float:
    """The score difference ``rule`` counts as a tie on a devset of ``dev_size`` examples
    (``cheaper``: exact ties only; ``ranked``: the sampling error, see the module doc)."""
    return math.sqrt(0.5 / dev_size) if rule == "ranked" and dev_size > 0 else _TIE


def choose(members: Sequence[Mapping[str, Any]], *, rule: str = "cheaper", dev_size: int = 0) -> Choice:
    """The member to keep among ``members`` (each member job's final ``optimizer_run`` row:
    ``job_id``, ``optimizer``, ``status``, ``score_after``, ``cost_usd``, ``lm_calls``), in
    plan order, under ``rule`` (``cheaper`` or ``ranked``, see the module doc).  No members,
    or none succeeded: ``job_id`` None."""
    done = [(i, m) for i, m in enumerate(members) if m.get("status") == "succeeded" and m.get("score_after") is not None]
    if not done:
        states = ", ".join(f"{m.get('optimizer')} {m.get('status')}" for m in members) or "no members"
        return Choice(None, f"no member succeeded ({states})")
    best_score = max(float(m["score_after"]) for _, m in done)
    margin = tie_margin(rule, dev_size)
    tied = [(i, m) for i, m in done if float(m["score_after"]) >= best_score - margin]
    if rule == "ranked":
        i, best = tied[0]
    else:
        i, best = min(tied, key=lambda im: (float(im[1].get("cost_usd") or 0.0), int(im[1].get("lm_calls") or 0),
                                            im[0]))
    why = f"{best['optimizer']}: devset score {float(best['score_after']):.4f}, best {best_score:.4f} of {len(done)}" \
          " succeeded member(s)"
    others = ", ".join(str(m["optimizer"]) for j, m in tied if j != i)
    if others and rule == "ranked":
        why += f"; within the devset's error ({margin:.3f}) of {others}: the higher-ranked"
    elif others:
        why += (f", tied with {others}: the cheaper (${float(best.get('cost_usd') or 0.0):.4f},"
                f" {int(best.get('lm_calls') or 0)} LM calls)")
    return Choice(str(best["job_id"]), why)
