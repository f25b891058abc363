"""Brownouts and outages in the policy's closed loop (``Sim``): a route failing one call in
three leaves within seconds although its failures rarely come in a row, and stays at a
small share while the brownout lasts, because its breaker's closing after two lucky
probes does not wipe the failures from its success posterior; after an outage, the
closing breaker does wipe them, so the route comes back at once."""

from __future__ import annotations

import random

from test_routing_policy import Sim, routing, steady

from adaptd.daemon.adaptation.breaker import Breaker, BreakerConfig, record
from adaptd.daemon.adaptation.policy import PolicyConfig, RoutingPolicy

US = 1_000_000
DEFAULTS = PolicyConfig()  # the breaker at its defaults too


def share_of_a(sim: Sim, since: float, until: float) -> list[tuple[float, float]]:
    return [(t, next(x["weight"] for x in o["details"]["routes"] if x["name"] == "a"))
            for t, o in sim.tables if since <= t < until]


def test_the_breaker_remembers_whether_it_opened_on_a_brownout_or_an_outage():
    cfg, outage, brownout = BreakerConfig(), Breaker(), Breaker()
    for i, c in enumerate("oooxxx"):
        record(outage, cfg, i * US, c == "o")
    for i, c in enumerate("oxoxooxox"):
        record(brownout, cfg, i * US, c == "o")
    assert outage.state == brownout.state == "open"
    assert not outage.partial and brownout.partial


def test_a_brownout_moves_the_route_to_a_small_share_within_seconds_and_keeps_it_there():
    errors = random.Random(11)

    def brownout(route: str, t: float):
        # b is nearly as good as a: at 65% success a delivers less than b
        quality = {"a": 0.9, "b": 0.85, "c": 0.5}[route]
        return not (route == "a" and 60 <= t < 90 and errors.random() < 0.35), quality, None

    sim = Sim(RoutingPolicy([routing()], DEFAULTS), brownout)
    sim.run(60)
    assert sim.share("a") >= 0.8
    sim.run(90)
    shares = share_of_a(sim, 60, 90)
    left = [t for t, w in shares if w <= 0.1]
    assert left and left[0] - 60 <= 5, shares[:5]
    late = [w for t, w in shares if t >= left[0] + 5]
    assert late and max(late) <= 0.25, shares  # no flapping back to the full share


def test_after_an_outage_the_route_returns_within_seconds_of_recovering():
    def outage(route: str, t: float):
        ok, quality, cost = steady(route, t)
        return ok and not (route == "a" and 60 <= t < 90), quality, cost

    sim = Sim(RoutingPolicy([routing()], DEFAULTS), outage)
    sim.run(60)
    before = sim.share("a")
    sim.run(90)
    left = [t for t, w in share_of_a(sim, 60, 90) if w <= 0.1]
    assert left and left[0] - 60 <= 1, left[:1]
    sim.run(120)
    back = [t for t, w in share_of_a(sim, 90, 120) if w >= 0.5 * before]
    assert back and back[0] - 90 <= 6, share_of_a(sim, 88, 100)
