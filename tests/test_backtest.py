"""Off-policy backtest of a routing policy config: the estimators (IPS, SNIPS, DR) on
simulated logs whose true value is known, the refusals, the re-run of the real routing
policy, and ``adaptd backtest`` against a real daemon's data dir.

The simulators here are also what ``bench/backtest_bench.py`` runs over more seeds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import past_minute, run_cli, wait_until

from adaptd.daemon.adaptation import backtest as bt
from adaptd.daemon.adaptation.backtest_data import build_units, load_policy, read_log, target_distribution
from adaptd.daemon.adaptation.config import ProgramRouting, RouteConfig
from adaptd.daemon.adaptation.policy import RoutingPolicy
from adaptd.daemon.adaptation.policy_state import PolicyConfig
from adaptd.daemon.adaptation.table import default_table
from adaptd.streams.processors.base import iso_us, to_us

SIM_NS = uuid.UUID("3d0c7a52-6b1e-4f0a-9a57-0c2b8e4d1f63")
ROUTES = ("a", "b", "c")


# ------------------------------------------------------------------ simulation 1: known propensities

def simulate_units(seed: int, n: int = 1500) -> tuple[list[bt.Unit], float]:
    """Units under a logging policy with known, varying propensities and a target with
    known, varying probabilities; route success means drift over time (so the per-route
    outcome model of DR is misspecified on purpose).

    Returns:
        ``(units, truth)``: truth is the target's expected success over these decisions,
        ``mean_i sum_a pi_i(a) mu_i(a)``.
    """
    rng = np.random.default_rng(seed)
    base = np.array([0.85, 0.7, 0.55])
    units, truth = [], 0.0
    for i in range(n):
        mu = np.clip(base + 0.1 * np.sin(2 * np.pi * i / n + np.arange(3)), 0, 1)
        p = rng.dirichlet([4.0, 3.0, 2.0]) * 0.85 + 0.05  # each route >= 0.05
        pi = rng.dirichlet([6.0, 1.0, 1.0])
        a = int(rng.choice(3, p=p))
        y = float(rng.random() < mu[a])
        truth += float(pi @ mu)
        units.append(bt.Unit(route=ROUTES[a], propensity=float(p[a]),
                             target={r: float(x) for r, x in zip(ROUTES, pi, strict=True)}, outcomes={"success": y}))
    return units, truth / n


def test_dr_interval_covers_the_true_value_in_at_least_90_percent_of_50_seeded_runs() -> None:
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(50):
        units, truth = simulate_units(seed)
        m = bt.estimate(units, metrics=["success"]).metrics["success"]
        for name in covered:
            e = getattr(m, name)
            covered[name] += e.low <= truth <= e.high
    assert covered["dr"] >= 45, covered
    assert covered["ips"] >= 45, covered  # IPS is unbiased too, only wider


def test_with_wrong_propensities_ips_misses_the_truth_and_dr_survives_through_its_outcome_model() -> None:
    # the coverage check above has teeth: logged as if uniform, IPS is biased; DR stays
    # right because its per-route model is close (double robustness)
    ips_covered = dr_covered = 0
    for seed in range(10):
        units, truth = simulate_units(seed)
        wrong = [bt.Unit(u.route, 1 / 3, u.target, u.outcomes) for u in units]
        m = bt.estimate(wrong, metrics=["success"]).metrics["success"]
        assert m.ips is not None and m.dr is not None
        ips_covered += m.ips.low <= truth <= m.ips.high
        dr_covered += m.dr.low <= truth <= m.dr.high
    assert ips_covered <= 2 and dr_covered >= 8, (ips_covered, dr_covered)


def test_dr_is_tighter_than_ips_when_the_outcome_model_explains_something() -> None:
    units, _ = simulate_units(7)
    m = bt.estimate(units, metrics=["success"]).metrics["success"]
    assert m.dr is not None and m.ips is not None
    assert m.dr.high - m.dr.low < m.ips.high - m.ips.low


def test_bootstrap_intervals_come_from_the_injected_rng_and_cover_like_the_normal_ones() -> None:
    units, truth = simulate_units(3, n=600)
    first = bt.estimate(units, metrics=["success"], rng=np.random.default_rng(1), bootstrap=300)
    again = bt.estimate(units, metrics=["success"], rng=np.random.default_rng(1), bootstrap=300)
    other = bt.estimate(units, metrics=["success"], rng=np.random.default_rng(2), bootstrap=300)
    normal = bt.estimate(units, metrics=["success"])
    f, o, n = first.metrics["success"].dr, other.metrics["success"].dr, normal.metrics["success"].dr
    assert f is not None and o is not None and n is not None
    assert first.to_dict() == again.to_dict() and (f.low, f.high) != (o.low, o.high)
    assert f.value == n.value and abs((f.high - f.low) - (n.high - n.low)) < 0.3 * (n.high - n.low)
    assert "bootstrap" in first.interval
    with pytest.raises(ValueError, match="rng"):
        bt.estimate(units, bootstrap=10)


def _unit(p: float | None, route: str = "a") -> bt.Unit:
    return bt.Unit(route=route, propensity=p, target={"a": 0.5, "b": 0.5}, outcomes={"success": 1.0})


@pytest.mark.parametrize(("bad", "words"), [
    (None, "no recorded propensity"),
    (float("nan"), "no recorded propensity"),
    (0.0, "below the floor"),
    (0.004, "below the floor 0.01"),
])
def test_refuses_when_a_propensity_is_missing_zero_or_near_zero(bad: float | None, words: str) -> None:
    units = [_unit(0.5, r) for r in ("a", "b") * 100] + [_unit(bad)]
    with pytest.raises(bt.Refusal, match=words) as info:
        bt.estimate(units)
    assert "1 of 201 decisions" in str(info.value)
    bt.estimate(units[:-1])  # the same data without the bad decision is fine


def test_refuses_with_no_decisions() -> None:
    with pytest.raises(bt.Refusal, match="no logged route decisions"):
        bt.estimate([])


def test_refuses_when_the_effective_sample_size_is_too_small() -> None:
    # the target almost always picks b, which the logging policy chose 3 times in 400
    units = [bt.Unit(route="a", propensity=0.99, target={"a": 0.01, "b": 0.99}, outcomes={"success": 1.0})
             for _ in range(397)]
    units += [bt.Unit(route="b", propensity=0.02, target={"a": 0.01, "b": 0.99}, outcomes={"success": 0.0})
              for _ in range(3)]
    with pytest.raises(bt.Refusal, match="effective sample size .* below 30"):
        bt.estimate(units)
    assert bt.estimate(units, min_ess=2).ess < 30


def test_refuses_when_the_target_sends_traffic_to_routes_never_logged() -> None:
    units = [bt.Unit(route=r, propensity=0.5, target={"a": 0.3, "b": 0.3, "new": 0.4}, outcomes={"success": 1.0})
             for r in ("a", "b") * 100]
    with pytest.raises(bt.Refusal, match=r"40\.0% of traffic .* never chose \(new\)"):
        bt.estimate(units)


def test_a_metric_observed_too_rarely_is_reported_as_not_estimated() -> None:
    units, _ = simulate_units(1, n=400)
    units = [bt.Unit(u.route, u.propensity, u.target, {**u.outcomes, **({"quality": 1.0} if i < 5 else {})})
             for i, u in enumerate(units)]
    result = bt.estimate(units, metrics=["success", "quality", "cost_usd"])
    assert result.metrics["success"].dr is not None
    q, c = result.metrics["quality"], result.metrics["cost_usd"]
    assert q.n == 5 and q.dr is None and "not estimated" in q.note
    assert c.n == 0 and c.dr is None and "no decision has an observed cost_usd" in c.note


# ------------------------------------------------------------------ simulation 2: the real policy logs

@dataclass(frozen=True)
class RouteTruth:
    success: float
    quality: float
    latency_ms: float
    cost_usd: float

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


TRUTH = {"a": RouteTruth(0.95, 0.8, 400.0, 0.004), "b": RouteTruth(0.93, 0.75, 150.0, 0.001),
         "c": RouteTruth(0.9, 0.7, 90.0, 0.0004)}


def routing(program: str = "qa", **knobs: Any) -> ProgramRouting:
    return ProgramRouting(program=program, routes=[RouteConfig(name=r, model=f"m-{r}") for r in ROUTES], **knobs)


#: The logging policy of the simulated logs: explores a lot (floor 0.15 per route).
LOGGING = routing(exploration_floor=0.15, min_samples=10, min_change_interval_s=5)
#: The target: explores little and weighs latency as well as quality.
TARGET = routing(exploration_floor=0.03, min_samples=10, min_change_interval_s=5,
                 objective={"quality": 1.0, "latency": 1.0})
FAST = PolicyConfig(samples=400)


def simulate_log(seed: int, calls: int = 1200, *, start_us: int = 1_790_000_000_000_000, program: str = "qa",
                 logging: ProgramRouting = LOGGING, policy: PolicyConfig = FAST,
                 down: tuple[str, int, int] | None = None) -> list[dict[str, Any]]:
    """Event dicts (log order) of ``calls`` calls routed by the real routing policy with
    ``logging``: per call a first-attempt ``route_decision`` drawn from the table (its
    probability recorded), the ``lm_call`` and a ``feedback``, outcomes drawn from
    ``TRUTH``.  20 calls per second of event time.  ``down = (route, first, last)``: that
    route fails every call numbered ``first`` to ``last`` (an outage: breakers move)."""
    rng = np.random.default_rng(seed)
    proc = RoutingPolicy([logging], policy)
    state = proc.initial_state()
    events: list[dict[str, Any]] = []
    for i in range(calls):
        t = start_us + i * 50_000
        ps = state.programs.get(("default", program))
        tbl = ps.table if ps is not None and ps.table is not None else default_table(logging, iso_us(t))
        dist = target_distribution(tbl)
        names = sorted(dist)
        route = names[int(rng.choice(len(names), p=[dist[n] for n in names]))]
        truth = TRUTH[route]
        ok = bool(rng.random() < truth.success) and not (down and down[0] == route and down[1] <= i <= down[2])
        exe = str(uuid.uuid5(SIM_NS, f"{seed}/{i}"))
        batch = [
            {"kind": "route_decision", "id": str(uuid.uuid5(SIM_NS, f"{seed}/{i}/d")), "ts": iso_us(t),
             "tenant": "default", "program": program, "route": route, "policy_version": tbl["version"],
             "probability": dist[route], "execution_id": exe, "reason": "weighted",
             "attrs": {"attempt": 0, "status": "ok" if ok else "error"}},
            {"kind": "lm_call", "id": str(uuid.uuid5(SIM_NS, f"{seed}/{i}/c")), "ts": iso_us(t + 1000),
             "tenant": "default", "program": program, "route": route, "model": f"m-{route}", "execution_id": exe,
             "status": "ok" if ok else "error", "duration_ms": float(rng.exponential(truth.latency_ms)),
             "cost_usd": truth.cost_usd * float(rng.uniform(0.5, 1.5))},
            {"kind": "feedback", "id": str(uuid.uuid5(SIM_NS, f"{seed}/{i}/f")), "ts": iso_us(t + 2000),
             "tenant": "default", "program": program, "execution_id": exe,
             "score": float(rng.random() < truth.quality)},
        ]
        for e in batch:
            state, _ = proc.fold(state, [e], [to_us(e["ts"])])
        events += batch
    return events


def true_values(units: list[bt.Unit]) -> dict[str, float]:
    """Per metric, the target's expected value over these decisions: ``mean sum_a pi(a) truth(a)``."""
    return {m: float(np.mean([sum(p * TRUTH[r].value(m) for r, p in u.target.items()) for u in units]))
            for m in bt.METRICS}


def test_rerunning_the_logging_config_reproduces_every_logged_propensity() -> None:
    events = simulate_log(0, calls=1200, down=("a", 300, 600))
    units, traffic = build_units(events, program="qa", tenant="default", routing=LOGGING, policy=FAST)
    assert len(units) == traffic.decisions == 1200 and traffic.target_tables >= 10  # breaker open, probe, close
    assert all(u.target[u.route] == pytest.approx(u.propensity, abs=1e-12) for u in units)
    result = bt.estimate(units)
    assert result.mean_weight == pytest.approx(1.0) and result.ess == pytest.approx(1200)
    for m in result.metrics.values():  # weights of 1: IPS is the logged mean
        assert m.ips is not None and m.ips.value == pytest.approx(m.logged_mean)


def test_backtest_of_a_different_config_covers_its_true_value_on_the_real_policy_logs() -> None:
    covered = {m: 0 for m in bt.METRICS}
    for seed in range(5):
        units, _ = build_units(simulate_log(seed), program="qa", tenant="default", routing=TARGET, policy=FAST)
        result, truth = bt.estimate(units), true_values(units)
        # the target is a different policy: many decisions are far from their logged probability
        assert sum(abs(u.target[u.route] - (u.propensity or 0)) > 0.1 for u in units) > len(units) // 4
        for m, est in result.metrics.items():
            assert est.dr is not None
            covered[m] += est.dr.low <= truth[m] <= est.dr.high
    assert all(c >= 4 for c in covered.values()), covered


def test_decisions_outside_the_period_and_retries_are_not_units_but_the_policy_still_reads_them() -> None:
    events = simulate_log(2, calls=400)
    retry = {**events[-3], "id": str(uuid.uuid4()), "reason": "retry", "attrs": {"attempt": 1, "status": "ok"}}
    events = [*events, retry]
    mid = to_us(events[len(events) // 2]["ts"])
    units, traffic = build_units(events, program="qa", tenant="default", routing=TARGET, policy=FAST, since_us=mid)
    whole, _ = build_units(events, program="qa", tenant="default", routing=TARGET, policy=FAST)
    assert traffic.retries == 1 and traffic.decisions == 401
    assert len(units) + traffic.outside_period == 400 and 150 < len(units) < 250
    # the same decisions get the same target probabilities: the state before --since was rebuilt
    assert [u.target for u in units] == [u.target for u in whole[-len(units):]]
    other, _ = build_units(events, program="qa", tenant="someone-else", routing=TARGET, policy=FAST)
    assert other == []


def test_load_policy_reads_the_daemon_config_shape_and_names_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "p.toml"
    good.write_text('port = 1\n[routing_policy]\nsamples = 500\n[[routing]]\nprogram = "qa"\nexploration_floor = 0.1\n'
                    '[[routing.routes]]\nname = "a"\nmodel = "m"\n[[routing]]\nprogram = "other"\n'
                    '[[routing.routes]]\nname = "x"\nmodel = "m"\n')
    r, p = load_policy(good, "qa")
    assert r.program == "qa" and r.exploration_floor == 0.1 and p.samples == 500
    with pytest.raises(ValueError, match=r"program = 'nope' \(found: \['other', 'qa'\]\)"):
        load_policy(good, "nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routing]]\nprogram = "qa"\nexploration_floor = 2\n[[routing.routes]]\nname = "a"\nmodel = "m"\n')
    with pytest.raises(ValueError, match="exploration_floor"):
        load_policy(bad, "qa")
    with pytest.raises(ValueError, match="cannot read"):
        load_policy(tmp_path / "missing.toml", "qa")


# ------------------------------------------------------------------ the CLI against a real daemon

def _toml(r: ProgramRouting, samples: int) -> str:
    lines = [f"[routing_policy]\nsamples = {samples}\n", "[[routing]]", f'program = "{r.program}"',
             f"exploration_floor = {r.exploration_floor}", f"min_samples = {r.min_samples}",
             f"min_change_interval_s = {r.min_change_interval_s}",
             "objective = {" + ", ".join(f"{k} = {v}" for k, v in r.objective.items()) + "}"]
    for route in r.routes:
        lines += ["[[routing.routes]]", f'name = "{route.name}"', f'model = "{route.model}"']
    return "\n".join(lines) + "\n"


def test_cli_backtests_a_real_daemons_log(daemon_factory, tmp_path: Path) -> None:
    start = to_us(past_minute())
    events = simulate_log(11, calls=500, start_us=start)
    daemon = daemon_factory(config_text=_toml(LOGGING, FAST.samples)).start()
    # as the SDK sends them: attempt and status are top-level fields (the daemon keeps them in attrs)
    body = [{**{k: v for k, v in e.items() if k not in ("attrs", "tenant")}, **(e.get("attrs") or {})}
            for e in events]
    answer = httpx.post(f"{daemon.url}/v1/events", json=body, timeout=30).json()
    assert answer["accepted"] == len(events), answer
    wait_until(lambda: httpx.get(f"{daemon.url}/v1/stats").json()["projector_lag"] == 0, timeout=30)
    assert daemon.stop() == 0

    logging_file, target_file = tmp_path / "logging.toml", tmp_path / "target.toml"
    logging_file.write_text(_toml(LOGGING, FAST.samples))
    target_file.write_text(_toml(TARGET, FAST.samples))
    data = ["--program", "qa", "--data-dir", str(daemon.data_dir)]

    same = run_cli("backtest", *data, "--policy", str(logging_file), "--json")
    assert same.returncode == 0, same.stderr
    out = json.loads(same.stdout)
    # through the log and back, the re-run of the daemon's own config gives every logged probability
    assert out["n"] == 500 and out["traffic"]["decisions"] == 500
    assert out["mean_weight"] == pytest.approx(1.0) and out["max_weight"] == pytest.approx(1.0)
    assert out["metrics"]["success"]["ips"]["value"] == pytest.approx(out["metrics"]["success"]["logged_mean"])

    other = run_cli("backtest", *data, "--policy", str(target_file), "--json")
    assert other.returncode == 0, other.stderr
    est = json.loads(other.stdout)
    units, _ = build_units(list(read_log(daemon.data_dir / "log")), program="qa", tenant="default",
                           routing=TARGET, policy=FAST)
    assert est["n"] == len(units) == 500 and est["mean_weight"] != pytest.approx(1.0, abs=1e-3)
    truth = true_values(units)
    for m in ("success", "quality", "latency_ms", "cost_usd"):
        dr = est["metrics"][m]["dr"]
        assert est["metrics"][m]["n"] == 500 and dr["low"] <= dr["value"] <= dr["high"]
    assert est["metrics"]["quality"]["dr"]["low"] <= truth["quality"] <= est["metrics"]["quality"]["dr"]["high"]

    text = run_cli("backtest", *data, "--policy", str(target_file))
    assert text.returncode == 0 and "DR" in text.stdout and "success rate" in text.stdout
    assert "effective sample size" in text.stdout

    refused = run_cli("backtest", *data, "--policy", str(target_file), "--min-propensity", "0.5")
    assert refused.returncode == 1 and refused.stdout == ""  # the data cannot support it: a runtime failure
    assert "cannot backtest 'qa'" in refused.stderr and "below the floor 0.5" in refused.stderr
    empty = run_cli("backtest", *data, "--policy", str(target_file), "--since", "2000-01-01", "--until", "2000-01-02")
    assert empty.returncode == 1 and "no logged route decisions" in empty.stderr
    for args, words in ((["--policy", str(tmp_path / "nope.toml")], "cannot read the policy file"),
                        (["--policy", str(target_file), "--since", "yesterday"], "not an ISO 8601 time")):
        bad = run_cli("backtest", *data, *args)
        assert bad.returncode == 2 and words in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    nolog = run_cli("backtest", "--program", "qa", "--policy", str(target_file), "--data-dir", str(tmp_path / "x"))
    assert nolog.returncode == 2 and "no log at" in nolog.stderr

