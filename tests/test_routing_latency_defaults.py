"""Latency-aware defaults: with no ``latency_slo_ms`` and a quality-only objective, a route
that becomes several times slower than its own recent baseline loses its share within
seconds, unless it is the only route delivering quality near the best; it comes back once
its latency does. Driven in closed loop through the pure policy (``Sim``)."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError
from test_routing_policy import CFG, Sim, routing

from adaptd.daemon.adaptation.policy import RoutingPolicy
from adaptd.daemon.adaptation.posteriors import RouteStats

US = 1_000_000


def slowing(qualities: dict[str, float], factor: float, start: float = 60, end: float = 90, seed: int = 5):
    jitter = random.Random(seed)

    def behaviour(route: str, t: float):
        slow = route == "a" and start <= t < end
        return True, qualities[route], None, (factor if slow else 1.0) * 400.0 * math.exp(0.25 * jitter.gauss(0, 1))

    return behaviour


def a_share_at_or_below(sim: Sim, share: float, since: float) -> list[float]:
    return [t for t, o in sim.tables if t >= since and next(x["weight"] for x in o["details"]["routes"]
                                                            if x["name"] == "a") <= share]


def test_a_route_four_times_slower_than_its_baseline_loses_its_share_within_seconds_by_default():
    r = routing()
    assert r.latency_slo_ms is None and r.objective["latency"] == 0 and r.slowdown_factor == 3.0
    sim = Sim(RoutingPolicy([r], CFG), slowing({"a": 0.9, "b": 0.85, "c": 0.5}, 4.0))
    sim.run(60)
    assert sim.share("a") >= 0.5  # the best on quality leads before the slowdown
    sim.run(90)
    left = a_share_at_or_below(sim, 0.1, 60)
    assert left and left[0] - 60 <= 5, left[:1]
    assert sim.share("b") >= 0.8  # the other route of near quality took over
    sim.run(140)
    back = [t for t, o in sim.tables if t >= 90 and next(x["weight"] for x in o["details"]["routes"]
                                                         if x["name"] == "a") >= 0.5]
    assert back, "a never came back after its latency recovered"
    assert sim.state.programs[("default", "qa")].stats["a"].baseline() is None


def test_a_slowed_route_keeps_its_share_when_it_is_the_only_one_near_the_best_quality():
    sim = Sim(RoutingPolicy([routing()], CFG), slowing({"a": 0.9, "b": 0.6, "c": 0.5}, 4.0))
    sim.run(60)
    before = sim.share("a")
    sim.run(90)
    assert before >= 0.8 and sim.share("a") >= 0.8
    assert not a_share_at_or_below(sim, 0.5, 60)


@pytest.mark.parametrize("off", [None, 0])
def test_the_slowdown_rule_is_off_when_slowdown_factor_is_0_or_none(off):
    sim = Sim(RoutingPolicy([routing(slowdown_factor=off)], CFG), slowing({"a": 0.9, "b": 0.85, "c": 0.5}, 4.0))
    sim.run(90)
    assert not a_share_at_or_below(sim, 0.1, 60)


def test_a_slowdown_factor_that_is_not_a_slowdown_is_refused():
    with pytest.raises(ValidationError, match="must be > 1"):
        routing(slowdown_factor=1.0)


def test_a_baseline_is_the_model_before_the_first_step_up_and_ends_when_latency_is_back():
    stats, rng = RouteStats(), random.Random(2)
    t = 0
    for ms in [400.0] * 40 + [1600.0] * 10 + [4000.0] * 10:
        t += US // 10
        stats.decay_to(t, 30.0)
        stats.outcome(True, ms * math.exp(0.1 * rng.gauss(0, 1)), None, None, None)
    base = stats.baseline()
    assert base is not None and abs(math.exp(base[0]) - 400) < 40  # not the 1600 ms step
    for _ in range(10):
        t += US // 10
        stats.decay_to(t, 30.0)
        stats.outcome(True, 420.0, None, None, None)
    assert stats.baseline() is None
