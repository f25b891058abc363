"""The optimizer recommender: rules as the prior, learning from past optimizer runs (pure)."""

from __future__ import annotations

import pytest

from adaptd.daemon.optimize.recommend import RecommendError, Situation, recommend, spec_of

BUDGET = {"budget_usd": 1.0, "budget_lm_calls": 2000}


def _run(optimizer: str, before: float, after: float, calls: int, est: int, program: str = "qa",
         status: str = "succeeded") -> dict:
    return {"optimizer": optimizer, "program": program, "status": status, "score_before": before,
            "score_after": after, "lm_calls": calls, "details": {"est_lm_calls": est}}


def test_a_handful_of_examples_gets_bootstrap_few_shot_and_the_reasoning_says_why():
    rec = recommend(Situation(train_size=8, dev_size=4, **BUDGET))
    assert rec.optimizer == "BootstrapFewShot" and not rec.overridden
    assert rec.cost_estimate == {"lm_calls": 8 + 2 * 4, "usd": 0.008}  # its loop, and the dev scored twice
    assert any("no past runs" in line for line in rec.reasoning)
    mipro = next(a for a in rec.alternatives if a.optimizer == "MIPROv2-light")
    assert not mipro.eligible and "needs 20+ training examples, has 8" in mipro.why_not


def test_more_examples_and_room_in_the_budget_get_a_searching_optimizer():
    rec = recommend(Situation(train_size=30, dev_size=10, **BUDGET))
    assert rec.optimizer == "MIPROv2-light"
    assert rec.cost_estimate["lm_calls"] == 6 * 30 + (10 + 2) * 10 + 30
    assert recommend(Situation(train_size=60, dev_size=20, **BUDGET)).optimizer == "MIPROv2-medium"


def test_an_optimizer_whose_estimate_exceeds_the_budget_is_not_eligible():
    rec = recommend(Situation(train_size=60, dev_size=20, budget_usd=1.0, budget_lm_calls=100))
    assert rec.optimizer == "BootstrapFewShot"
    mipro = next(a for a in rec.alternatives if a.optimizer == "MIPROv2-light")
    assert any("exceed the budget of 100" in w for w in mipro.why_not)


def test_gepa_needs_a_feedback_metric_and_a_reflection_lm_and_wins_when_it_has_both():
    plain = recommend(Situation(train_size=30, dev_size=10, **BUDGET))
    gepa = next(a for a in plain.alternatives if a.optimizer == "GEPA")
    assert not gepa.eligible and len(gepa.why_not) == 2
    rec = recommend(Situation(train_size=30, dev_size=10, feedback_metric=True, reflection_lm=True, **BUDGET))
    assert rec.optimizer == "GEPA"


def test_a_missing_optional_package_rules_its_optimizers_out():
    rec = recommend(Situation(train_size=30, dev_size=10, missing_packages=("optuna",), **BUDGET))
    assert rec.optimizer not in ("MIPROv2-light", "MIPROv2-medium", "MIPROv2-heavy")
    mipro = next(a for a in rec.alternatives if a.optimizer == "MIPROv2-light")
    assert "pip install 'dspy[optuna]'" in mipro.why_not[0]


def test_finetuning_needs_a_finetunable_lm():
    rec = recommend(Situation(train_size=300, dev_size=50, budget_usd=20.0, budget_lm_calls=50_000))
    ft = next(a for a in rec.alternatives if a.optimizer == "BootstrapFinetune")
    assert "needs a fine-tunable LM (finetunable = true)" in ft.why_not


def test_no_metric_means_no_optimizer_and_an_error_saying_so():
    rec = recommend(Situation(train_size=30, has_metric=False, **BUDGET))
    assert rec.optimizer is None and "needs a metric" in rec.error


def test_the_user_may_override_the_choice_even_below_its_trainset_size_but_not_without_its_requirements():
    rec = recommend(Situation(train_size=8, dev_size=4, **BUDGET), override="miprov2")
    assert rec.optimizer == "MIPROv2-light" and rec.overridden
    assert any("chosen by the user although" in line for line in rec.reasoning)
    with pytest.raises(RecommendError, match="feedback metric"):
        recommend(Situation(train_size=30, **BUDGET), override="GEPA")
    with pytest.raises(RecommendError, match="unknown optimizer 'Magic'"):
        recommend(Situation(train_size=30, **BUDGET), override="Magic")


def test_past_runs_that_gained_nothing_pull_an_optimizer_below_the_next_one():
    s = Situation(train_size=30, dev_size=10, program="qa", **BUDGET)
    assert recommend(s).optimizer == "MIPROv2-light"
    flat = [_run("MIPROv2-light", 0.6, 0.6, 310, 310) for _ in range(4)]
    rec = recommend(s, flat)
    assert rec.optimizer != "MIPROv2-light"
    mipro = next(o for o in rec.options if o.optimizer == "MIPROv2-light")
    assert mipro.runs == 4 and mipro.expected_gain == pytest.approx(2 * 0.08 / 6, abs=1e-4)  # shrunk towards 0
    assert any("learned from 4 weighted past run(s)" in line for line in rec.reasoning)


def test_past_runs_that_gained_a_lot_lift_an_optimizer_to_the_top():
    s = Situation(train_size=60, dev_size=20, program="qa", **BUDGET)
    good = [_run("BootstrapFewShot", 0.5, 0.8, 60, 60) for _ in range(3)]
    rec = recommend(s, good)
    assert rec.optimizer == "BootstrapFewShot"
    bfs = next(o for o in rec.options if o.optimizer == "BootstrapFewShot")
    assert bfs.expected_gain == pytest.approx((2 * 0.05 + 3 * 0.3) / 5, abs=1e-4)


def test_failed_and_budget_stopped_runs_count_as_no_gain_and_other_programs_count_half():
    s = Situation(train_size=60, dev_size=20, program="qa", **BUDGET)
    rec = recommend(s, [_run("SIMBA", 0.5, 0.9, 100, 100, status="failed"),
                        _run("SIMBA", 0.5, 0.9, 100, 100, program="other")])
    simba = next(o for o in rec.options if o.optimizer == "SIMBA")
    assert simba.runs == 1.5
    assert simba.expected_gain == pytest.approx((2 * 0.08 + 0 + 0.5 * 0.4) / 3.5, abs=1e-4)


def test_runs_that_cost_more_than_estimated_raise_the_estimate():
    s = Situation(train_size=60, dev_size=20, program="qa", **BUDGET)
    base = next(o for o in recommend(s).options if o.optimizer == "BootstrapFewShot").est_lm_calls
    dear = [_run("BootstrapFewShot", 0.5, 0.55, 240, 60) for _ in range(2)]  # 4x the estimate
    after = next(o for o in recommend(s, dear).options if o.optimizer == "BootstrapFewShot").est_lm_calls
    assert after == round(base * (2 * 1 + 2 * 4) / 4)


def test_optimizer_names_are_case_insensitive_with_aliases():
    assert spec_of("bootstrapfewshot").name == "BootstrapFewShot"
    assert spec_of("MIPROv2").name == "MIPROv2-light" and spec_of("nope") is None
