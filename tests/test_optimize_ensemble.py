"""The optimizer ensemble: the top-k optimizers within one budget, the devset choice, the
learning from every member, and the ``--ensemble K`` command / ``ensemble`` API field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DaemonProcess, run_cli, wait_until
from optimize_kit import TOY, example_file, wait_job, write_config

from adaptd.daemon.optimize.budget import Budget
from adaptd.daemon.optimize.ensemble import MAX_K, choose, plan_ensemble, split_budget
from adaptd.daemon.optimize.harvest import read_examples
from adaptd.daemon.optimize.recommend import RecommendError, Situation, recommend, spec_of
from adaptd.daemon.optimize.runner import run_optimization
from adaptd.daemon.optimize.settings import OptimizeProgram

NO_OPTUNA = {"missing_packages": ("optuna",)}


def test_the_ensemble_takes_the_top_ranked_optimizers_that_fit_and_splits_the_budget_by_their_estimates():
    s = Situation(train_size=12, dev_size=12, budget_usd=1.0, budget_lm_calls=400, **NO_OPTUNA)
    plan = plan_ensemble(s, k=3)
    single = recommend(s)
    names = [m.optimizer for m in plan.members]
    assert names[0] == single.optimizer  # the first member is the single recommendation
    assert names == ["BootstrapFewShot", "BootstrapFewShotWithRandomSearch"]
    assert [x["optimizer"] for x in plan.left_out] == ["COPRO"]  # eligible, but no room beside the two
    assert "do not fit beside the members" in plan.left_out[0]["why"]
    assert sum(m.budget_lm_calls for m in plan.members) <= 400
    assert sum(m.budget_usd for m in plan.members) <= 1.0
    for m in plan.members:
        assert m.budget_lm_calls >= m.est_lm_calls and m.budget_usd >= m.est_cost_usd
        assert m.budget_lm_calls == pytest.approx(400 * m.est_lm_calls / plan.cost_estimate["lm_calls"], abs=1)
    assert plan.cost_estimate["lm_calls"] == sum(m.est_lm_calls for m in plan.members)
    assert any("only 2 fit" in line for line in plan.reasoning)


def test_an_ensemble_of_one_is_the_single_recommendation_with_the_whole_budget():
    s = Situation(train_size=30, dev_size=10, budget_usd=1.0, budget_lm_calls=2000, **NO_OPTUNA)
    plan = plan_ensemble(s, k=1)
    assert [m.optimizer for m in plan.members] == [recommend(s).optimizer]
    assert plan.members[0].budget_lm_calls == 2000 and plan.members[0].budget_usd == 1.0


def test_split_budget_never_hands_out_more_than_the_budget():
    for estimates in ([(7, 0.0035), (13, 0.0065), (29, 0.0145)], [(1, 0.0), (1, 0.0)], [(333, 0.1)]):
        for calls, usd in ((50, 0.05), (997, 0.3333), (None, None)):
            ceilings = split_budget(estimates, calls, usd)
            if calls is None:
                assert ceilings == [(None, None)] * len(estimates)
                continue
            assert sum(c for c, _ in ceilings) <= calls and sum(u for _, u in ceilings) <= usd + 1e-12


def test_an_ensemble_size_out_of_range_or_a_budget_nothing_fits_in_is_refused_or_empty():
    with pytest.raises(RecommendError, match="ensemble size 0 is out of range"):
        plan_ensemble(Situation(train_size=12, dev_size=4), k=0)
    with pytest.raises(RecommendError, match=f"ask for 1 to {MAX_K}"):
        plan_ensemble(Situation(train_size=12, dev_size=4), k=MAX_K + 1)
    empty = plan_ensemble(Situation(train_size=12, dev_size=4, budget_lm_calls=3), k=2)
    assert empty.members == [] and "exceed the budget of 3" in empty.reasoning[-1]


def test_the_choice_keeps_the_best_devset_score_and_on_a_tie_the_cheaper_member():
    def run(job, opt, status, after, usd, calls):
        return {"job_id": job, "optimizer": opt, "status": status, "score_after": after, "cost_usd": usd,
                "lm_calls": calls}
    best = choose([run("a", "A", "succeeded", 0.7, 0.01, 10), run("b", "B", "succeeded", 0.9, 0.2, 200)])
    assert best.job_id == "b" and "devset score 0.9000, best 0.9000 of 2" in best.reason
    tie = choose([run("a", "A", "succeeded", 0.9, 0.2, 200), run("b", "B", "succeeded", 0.9, 0.01, 10),
                  run("c", "C", "budget_exhausted", None, 0.3, 300)])
    assert tie.job_id == "b" and "tied with A: the cheaper" in tie.reason
    none = choose([run("a", "A", "failed", None, 0.0, 3), run("c", "C", "budget_exhausted", None, 0.3, 300)])
    assert none.job_id is None and "no member succeeded (A failed, C budget_exhausted)" in none.reason


def test_the_ranked_rule_keeps_the_recommended_member_unless_another_beats_it_by_more_than_the_devset_error():
    def run(job, after, usd):
        return {"job_id": job, "optimizer": job.upper(), "status": "succeeded", "score_after": after,
                "cost_usd": usd, "lm_calls": 1}
    close = [run("rs", 0.75, 0.02), run("bfs", 0.8125, 0.001)]  # one example better of 16: within the error
    assert choose(close, rule="ranked", dev_size=16).job_id == "rs"
    assert "within the devset's error (0.177) of BFS" in choose(close, rule="ranked", dev_size=16).reason
    assert choose(close, dev_size=16).job_id == "bfs"  # the default rule: the best score
    clear = [run("rs", 0.5, 0.02), run("bfs", 0.75, 0.001)]  # four examples better: beyond it
    assert choose(clear, rule="ranked", dev_size=16).job_id == "bfs"
    tie = [run("rs", 1.0, 0.02), run("bfs", 1.0, 0.001)]
    assert choose(tie, rule="ranked", dev_size=16).job_id == "rs" and choose(tie).job_id == "bfs"


def test_members_run_with_their_ceilings_spend_no_more_than_the_one_budget_even_when_one_is_stopped(tmp_path):
    """The real runner and toy LM, one ``Budget`` per member as the job manager makes them.
    In the second case past runs taught the recommender that random search costs a third
    less than it does, so its ceiling is below what it needs: it stops there, the other
    member is untouched, and the sum stays within the one budget."""
    train = read_examples(example_file(tmp_path / "train.jsonl", "symbols", 12, seed=1))
    dev = read_examples(example_file(tmp_path / "dev.jsonl", "symbols", 6, seed=2))
    entry = OptimizeProgram(program="toy", **TOY)
    cheap = [{"optimizer": "BootstrapFewShotWithRandomSearch", "program": "toy", "status": "succeeded",
              "score_before": 0.2, "score_after": 0.9, "lm_calls": 87, "details": {"est_lm_calls": 174}}] * 4
    for budget, history in ((300, []), (150, cheap)):
        s = Situation(train_size=len(train), dev_size=len(dev), budget_usd=1.0, budget_lm_calls=budget,
                      program="toy", **NO_OPTUNA)
        plan = plan_ensemble(s, history, k=2)
        results = [run_optimization(entry, optimizer=m.optimizer, params=m.params, train=train, dev=dev,
                                    budget=Budget(m.budget_usd, m.budget_lm_calls), base_path=None,
                                    out_path=tmp_path / f"{budget}-{m.optimizer}.json",
                                    progress=lambda stage, details: None) for m in plan.members]
        assert len(results) == 2
        assert sum(r.lm_calls for r in results) <= budget and sum(r.cost_usd for r in results) <= 1.0
        for m, r in zip(plan.members, results, strict=True):
            assert r.lm_calls <= m.budget_lm_calls
        statuses = {m.optimizer: r.status for m, r in zip(plan.members, results, strict=True)}
        if history:
            assert statuses == {"BootstrapFewShot": "succeeded", "BootstrapFewShotWithRandomSearch": "budget_exhausted"}
        else:
            assert set(statuses.values()) == {"succeeded"}


# ---------------------------------------------------------------------------------------- daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("optimize-ensemble")
    files = {"trainset": example_file(tmp / "train.jsonl", "symbols", 12, seed=1),
             "devset": example_file(tmp / "dev.jsonl", "symbols", 12, seed=2),
             "budget_lm_calls": 1000, "margin": 0.0}
    d = DaemonProcess(tmp / "data", config=write_config(tmp / "adaptd.toml", optimize=files, routing=False)).start()
    yield d
    d.stop()


def _ensemble_rows(client: httpx.Client, ensemble_id: str) -> list[dict]:
    items = client.get("/v1/optimization/programs/toy/timeline").json()["items"]
    return [i for i in items if i["kind"] == "adaptation" and (i["details"] or {}).get("ensemble_id") == ensemble_id]


def test_cli_ensemble_2_prints_the_estimate_then_runs_two_jobs_and_records_one_choice(daemon: DaemonProcess):
    ran = run_cli("optimize", "toy", "--ensemble", "2", "--budget-lm-calls", "800", "--wait", "120",
                  "--url", daemon.url, timeout=180)
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout
    assert out.index("estimate:  ~") < out.index("queued")  # the cost estimate comes first
    ensemble_id = out.split("ensemble ", 1)[1].split(" queued")[0]
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        rows = _ensemble_rows(client, ensemble_id)
        plan_event = next(r for r in rows if r["what"] == "ensemble")
        jobs = [wait_job(client, j) for j in plan_event["details"]["jobs"]]
        items = client.get("/v1/optimization/programs/toy/timeline").json()["items"]
    choices = [r for r in rows if r["what"] == "ensemble_choice"]
    assert len(jobs) == 2 and len(choices) == 1  # k job events and one choice event
    assert [j["optimizer"] for j in jobs] == [m["optimizer"] for m in plan_event["details"]["plan"]["members"]]
    assert all(j["details"]["ensemble_id"] == ensemble_id for j in jobs)
    assert sum(j["lm_calls"] for j in jobs) <= 800  # the one budget
    for j, m in zip(jobs, plan_event["details"]["plan"]["members"], strict=True):
        assert j["lm_calls"] <= m["budget_lm_calls"]
    choice = choices[0]["details"]
    succeeded = [j for j in jobs if j["status"] == "succeeded"]
    best = max(j["score_after"] for j in succeeded)
    kept = next(j for j in jobs if j["job_id"] == choice["job_id"])
    assert kept["score_after"] == best and choice["version"] == kept["program_version"]
    assert "kept: " + kept["program_version"] in out
    # the kept version (and only it) went on to the existing gate
    offsets = {i["log_offset"]: i for i in items}
    gate = [i for i in items if i["kind"] == "adaptation" and i["what"] in ("program_version", "rollout_rejected")
            and (i["details"] or {}).get("job_id") in {j["job_id"] for j in jobs}]
    assert len(gate) == 1 and gate[0]["details"]["job_id"] == kept["job_id"]
    assert gate[0]["log_offset"] > choices[0]["log_offset"] and choices[0]["log_offset"] in offsets


def _expected_gains(answer: dict) -> dict[str, float]:
    """Every optimizer's expected gain in a recommendation answer (the chosen one is the
    first ensemble member: it is not among the alternatives)."""
    out = {o["optimizer"]: o["expected_gain"] for o in answer["alternatives"]}
    out.update({m["optimizer"]: m["expected_gain"] for m in answer["ensemble"]["members"]})
    return out


def test_every_member_teaches_the_recommender_and_the_next_recommendation_uses_what_it_learned(daemon):
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        before = _expected_gains(client.post("/v1/optimization/recommend", json={"program": "toy", "ensemble": 2})
                                 .json())
        made = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": 2})
        assert made.status_code == 202, made.text
        finals = [wait_job(client, j["job_id"], timeout=120) for j in made.json()["jobs"]]
        answer = client.post("/v1/optimization/recommend", json={"program": "toy", "ensemble": 2}).json()
        history = client.get("/v1/optimization/jobs", params={"program": "toy", "limit": 100}).json()["items"]
    after = _expected_gains(answer)
    ended = [h for h in history if h["status"] in ("succeeded", "failed", "budget_exhausted")]
    assert len(finals) == 2
    for final in finals:  # each member's result moved its optimizer's expected gain
        spec = spec_of(final["optimizer"])
        mine = [h for h in ended if h["optimizer"] == spec.name]
        gains = [h["score_after"] - h["score_before"] if h["status"] == "succeeded" else 0.0 for h in mine]
        assert final["job_id"] in {h["job_id"] for h in mine}
        assert after[spec.name] == pytest.approx((2 * spec.prior_gain + sum(gains)) / (2 + len(gains)), abs=1e-4)
        assert after[spec.name] != before[spec.name]
    # The next plan is ranked by the learned utilities, and its first member is the single choice.
    members = answer["ensemble"]["members"]
    assert [m["utility"] for m in members] == sorted((m["utility"] for m in members), reverse=True)
    assert members[0]["optimizer"] == answer["optimizer"]
    assert any("learned from" in line for line in answer["reasoning"])


def test_a_bad_ensemble_size_gets_a_4xx_naming_it_and_the_cli_exits_2(daemon):
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        zero = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": 0})
        big = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": MAX_K + 1})
        text = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": "two"})
        both = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": 2,
                                                          "optimizer": "BootstrapFewShot"})
        tight = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": 2, "budget_lm_calls": 2})
        rec = client.post("/v1/optimization/recommend", json={"program": "toy", "ensemble": 0})
    for r in (zero, big, text, rec):
        assert r.status_code == 422 and "ensemble" in json.dumps(r.json()["detail"]), r.text
    assert both.status_code == 422 and "ensemble excludes optimizer" in both.json()["detail"]
    assert tight.status_code == 422 and "exceed the budget of 2" in tight.json()["detail"]
    cli = run_cli("optimize", "toy", "--ensemble", "0", "--url", daemon.url)
    assert cli.returncode == 2 and "--ensemble" in cli.stderr
    cli = run_cli("optimize", "toy", "--ensemble", "2", "--optimizer", "COPRO", "--url", daemon.url)
    assert cli.returncode == 2 and "exclude each other" in cli.stderr


def test_a_plan_only_run_prints_the_estimate_and_queues_nothing(daemon, tmp_path: Path):
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        n_before = len(client.get("/v1/optimization/jobs", params={"program": "toy"}).json()["items"])
        ran = run_cli("optimize", "toy", "--ensemble", "3", "--recommend-only", "--url", daemon.url)
        n_after = len(client.get("/v1/optimization/jobs", params={"program": "toy"}).json()["items"])
    assert ran.returncode == 0, ran.stderr
    assert "estimate:  ~" in ran.stdout and "asked 3" in ran.stdout and "queued" not in ran.stdout
    assert n_after == n_before


def test_a_quality_drift_with_ensemble_2_runs_two_members_and_canaries_the_kept_version(daemon_factory, tmp_path):
    """The automatic path: drift signal -> ``reoptimize`` -> ensemble plan -> two member jobs
    -> ``ensemble_choice`` -> the existing gate -> canary of the kept version."""
    import datetime as dt

    from optimize_kit import post, production, timeline

    from adaptd.daemon.demo import toy

    window, per_window = 10, 60
    config = write_config(
        tmp_path / "adaptd.toml",
        processors={"drift_window": f"{window}s", "drift_min_executions": per_window, "lateness_s": 0},
        # 40 harvested examples: random search and bootstrap few-shot both fit in the 600 calls
        optimize={"harvest_threshold": 0.5, "harvest_limit": 40, "budget_lm_calls": 600, "min_interval_s": 0,
                  "routes": ["blue", "green"], "ensemble": 2})
    d = daemon_factory(config=config).start()
    start = dt.datetime.fromtimestamp((int(dt.datetime.now(dt.UTC).timestamp()) // 60 - 30) * 60, dt.UTC)
    before = production(toy.questions("words", 6 * per_window, seed=1), start, window / per_window, lm_seed=1)
    after = production(toy.questions("symbols", 4 * per_window, seed=2), start + dt.timedelta(seconds=6 * window),
                       window / per_window, lm_seed=2)
    with httpx.Client(base_url=d.url, timeout=30) as client:
        post(client, before + after)
        items = wait_until(lambda: (lambda t: t if any(i["what"] in ("canary", "rollout_rejected") for i in t)
                                    else None)(timeline(client)), timeout=120, interval=0.2)
    steps = [i for i in items if i["kind"] == "adaptation" and i["source"] == "adaptd.optimize"]
    names = [i["what"] for i in steps]
    assert names[names.index("reoptimize"):] == ["reoptimize", "ensemble", "ensemble_choice", "program_version",
                                                 "canary"]
    plan, choice = steps[names.index("ensemble")], steps[names.index("ensemble_choice")]
    runs = [i for i in items if i["kind"] == "optimizer_run"]
    assert {r["job_id"] for r in runs} == set(plan["details"]["jobs"]) and len(plan["details"]["jobs"]) == 2
    assert all(r["details"]["trigger"] == "drift" for r in runs)
    assert plan["details"]["incident_id"] == steps[names.index("reoptimize")]["details"]["incident_id"]
    canary = steps[names.index("canary")]
    assert canary["details"]["job_id"] == choice["details"]["job_id"]
    assert canary["details"]["version"] == choice["details"]["version"]
    assert choice["log_offset"] > max(r["log_offset"] for r in runs)  # after the last member's final event


def test_an_ensemble_killed_mid_run_resumes_its_members_and_still_records_one_choice(daemon_factory, tmp_path):
    files = {"trainset": example_file(tmp_path / "train.jsonl", "symbols", 12, seed=1),
             "devset": example_file(tmp_path / "dev.jsonl", "symbols", 12, seed=2)}
    config = write_config(tmp_path / "adaptd.toml", optimize=files, routing=False)
    slow = daemon_factory(config=config, env={"ADAPTD_TOY_DELAY_S": "0.2"}).start()
    with httpx.Client(base_url=slow.url, timeout=30) as client:
        made = client.post("/v1/optimization/jobs", json={"program": "toy", "ensemble": 2}).json()
        ids = [j["job_id"] for j in made["jobs"]]
        wait_job(client, ids[0], statuses=("running",))
    slow.kill9()
    slow.env = {}
    slow.start()
    with httpx.Client(base_url=slow.url, timeout=30) as client:
        finals = [wait_job(client, j, statuses=("succeeded", "failed", "budget_exhausted"), timeout=120) for j in ids]
        rows = wait_until(lambda: (lambda r: r if any(i["what"] == "ensemble_choice" for i in r) else None)(
            _ensemble_rows(client, made["ensemble_id"])), timeout=30)
        first = client.get(f"/v1/optimization/jobs/{ids[0]}").json()["events"]
    assert ("interrupted", 1) in [(e["status"], e["details"]["attempt"]) for e in first]
    assert finals[0]["details"]["attempt"] == 2 and finals[0]["details"]["ensemble_id"] == made["ensemble_id"]
    choices = [r for r in rows if r["what"] == "ensemble_choice"]
    assert len(choices) == 1 and {m["job_id"] for m in choices[0]["details"]["members"]} == set(ids)
