"""The routing policy: determinism, reaction to failures, overrides and constraints.

The policy is driven through its pure core (``RoutingPolicy.fold``) with plain event
dicts, in closed loop: a simulated client picks each call's route from the latest
table, so what the policy publishes decides what it sees next.
"""

from __future__ import annotations

import math
import pickle
import random
import uuid
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from adaptd.daemon.adaptation.breaker import BreakerConfig
from adaptd.daemon.adaptation.config import ProgramRouting, RouteConfig
from adaptd.daemon.adaptation.policy import PolicyConfig, RoutingPolicy, breaker_states, current_tables
from adaptd.daemon.adaptation.table import default_table
from adaptd.streams.events import parse_event
from adaptd.streams.processors.base import EventBatch, iso_us, to_us

US = 1_000_000
CFG = PolicyConfig(half_life_s=30, breaker=BreakerConfig(cooldown_s=5, max_cooldown_s=10))


def routing(**kw) -> ProgramRouting:
    routes = kw.pop("routes", None) or [RouteConfig(name=n, model=f"model-{n}") for n in ("a", "b", "c")]
    kw.setdefault("min_change_interval_s", 5)
    return ProgramRouting(program="qa", routes=routes, min_samples=20, **kw)


def uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


#: route, second -> (ok, quality, cost per call[, latency ms; 100 when not given])
Behaviour = Callable[[str, float], tuple]


def steady(route: str, t: float) -> tuple[bool, float, float | None]:
    return True, {"a": 0.9, "b": 0.6, "c": 0.5}.get(route, 0.5), None


class Sim:
    """A closed loop: a client picking routes by the latest table, and the policy."""

    def __init__(self, policy: RoutingPolicy, behaviour: Behaviour = steady, seed: int = 1, rate: float = 20.0):
        self.policy, self.behaviour, self.rate = policy, behaviour, rate
        self.state = policy.initial_state()
        self.rng = random.Random(seed)
        self.t = 0.0
        self.shares: dict[str, float] | None = None
        self.outputs: list[dict] = []
        self.tables: list[tuple[float, dict]] = []
        self.picks: list[tuple[float, str]] = []

    def feed(self, events: list[dict]) -> list[dict]:
        self.state, out = self.policy.fold(self.state, events)
        self.outputs += out
        for o in out:
            if o["kind"] == "adaptation" and o["action"] == "routing_table":
                self.shares = {r["name"]: r["weight"] for r in o["details"]["routes"]}
                self.tables.append((self.t, o))
        return out

    def run(self, until: float) -> None:
        while self.t < until:
            self.t += 1.0 / self.rate
            names = list(self.shares or {"a": 1, "b": 1, "c": 1})
            route = self.rng.choices(names, weights=[(self.shares or {}).get(n, 1.0) for n in names])[0]
            self.picks.append((self.t, route))
            ok, quality, cost, *latency = self.behaviour(route, self.t)
            ts = int(self.t * US)
            execution = uid(self.rng)
            events = [{"kind": "lm_call", "id": uid(self.rng), "ts": ts, "program": "qa", "route": route,
                       "model": f"model-{route}", "status": "ok" if ok else "error",
                       "duration_ms": latency[0] if latency else 100.0,
                       "cost_usd": cost, "execution_id": execution}]
            if ok:
                events.append({"kind": "feedback", "id": uid(self.rng), "ts": ts, "execution_id": execution,
                               "score": quality})
            self.feed(events)

    def admin(self, action: str, route: str | None = None, **details) -> dict:
        event = {"kind": "adaptation", "id": uid(self.rng), "ts": int(self.t * US), "source": "adaptd.api",
                 "action": action, "program": "qa", "route": route, "details": details, "reason": "test"}
        self.feed([event])
        return event

    def share(self, route: str) -> float:
        return (self.shares or {}).get(route, 0.0)

    def table(self) -> dict:
        return self.tables[-1][1]["details"]


def open_loop_events(n: int = 1500, seed: int = 7) -> list[dict]:
    """A fixed event sequence (routes drawn uniformly) with errors, feedback, a signal
    and admin actions: the same input for every batching."""
    rng = random.Random(seed)
    events: list[dict] = []
    for i in range(n):
        t = i * 0.05
        route = rng.choice("abc")
        ok = not (route == "a" and 30 <= t < 45) and rng.random() > 0.02
        execution = uid(rng)
        events.append({"kind": "lm_call", "id": uid(rng), "ts": int(t * US), "program": "qa", "route": route,
                       "status": "ok" if ok else "error", "duration_ms": 50.0 + 100 * rng.random(),
                       "cost_usd": 0.001, "execution_id": execution})
        if ok:
            events.append({"kind": "feedback", "id": uid(rng), "ts": int(t * US), "execution_id": execution,
                           "score": {"a": 0.9, "b": 0.6, "c": 0.5}[route] * rng.random()})
        if i == 400:
            events.append({"kind": "signal", "id": uid(rng), "ts": int(t * US), "signal_type": "anomaly",
                           "state": "open", "program": "qa", "route": "b", "source": "adaptd.anomaly"})
        if i == 900:
            events.append({"kind": "adaptation", "id": uid(rng), "ts": int(t * US), "action": "canary",
                           "program": "qa", "route": "c", "details": {"share": 0.1}})
        if i == 1200:
            events.append({"kind": "adaptation", "id": uid(rng), "ts": int(t * US), "action": "pin",
                           "program": "qa", "route": "b"})
    return events


def fold_in_batches(events: list[dict], size: int, policy: RoutingPolicy | None = None) -> list[dict]:
    policy = policy or RoutingPolicy([routing()], CFG)
    state, outputs = policy.initial_state(), []
    for i in range(0, len(events), size):
        state, out = policy.fold(state, events[i:i + size])
        outputs += out
    return outputs


# ---------------------------------------------------------------------- determinism


def test_same_events_give_the_same_tables_ids_and_values_under_any_batching():
    events = open_loop_events()
    whole = fold_in_batches(events, len(events))
    tables = [o for o in whole if o.get("action") == "routing_table"]
    assert len(tables) >= 5 and {o["kind"] for o in whole} == {"adaptation", "signal"}
    assert [t["version"] for t in tables] == list(range(1, len(tables) + 1))
    for size in (1, 7, 333):
        assert fold_in_batches(events, size) == whole
    # a second policy object (a restart) gives the same again
    assert fold_in_batches(events, 50, RoutingPolicy([routing()], CFG)) == whole


def test_a_snapshot_restored_mid_stream_continues_identically():
    events = open_loop_events()
    policy = RoutingPolicy([routing()], CFG)
    state, first = policy.fold(policy.initial_state(), events[:1000])
    restored = pickle.loads(pickle.dumps(state, protocol=5))
    _, rest = policy.fold(restored, events[1000:])
    assert first + rest == fold_in_batches(events, len(events))


def test_another_seed_gives_other_draws_but_the_same_structure():
    events = open_loop_events()
    other = fold_in_batches(events, len(events), RoutingPolicy([routing()], PolicyConfig(
        seed=99, half_life_s=30, breaker=BreakerConfig(cooldown_s=5, max_cooldown_s=10))))
    base = fold_in_batches(events, len(events))
    assert other != base
    assert [o["action"] for o in other if o["kind"] == "adaptation" and o["action"] != "routing_table"] == \
        [o["action"] for o in base if o["kind"] == "adaptation" and o["action"] != "routing_table"]


def test_outputs_are_valid_events_with_tables_summing_to_one():
    for o in fold_in_batches(open_loop_events(), 100):
        parse_event(o)
        assert o["source"] == "adaptd.policy"
        if o.get("action") == "routing_table":
            table = o["details"]
            assert math.isclose(sum(r["weight"] for r in table["routes"]), 1.0, abs_tol=1e-9)
            assert table["version"] == o["version"] and table["policy"] == "thompson"
            assert set(table) == {"program", "version", "policy", "routes", "fallbacks", "reason", "caused_by", "ts"}


def test_the_processor_adapter_matches_the_pure_core():
    events = [{**e, "ts": iso_us(e["ts"])} for e in open_loop_events(400) if e["kind"] in ("lm_call", "feedback")]
    policy = RoutingPolicy([routing()], CFG)
    _, via_batch = policy.process(policy.initial_state(), EventBatch.from_events(events), 0)
    assert via_batch == fold_in_batches(events, len(events))
    # signal / adaptation records given as (offset, dict) are merged in log order
    admin = {"kind": "adaptation", "id": str(uuid.uuid4()), "ts": events[10]["ts"], "action": "pin",
             "program": "qa", "route": "c"}
    batch = EventBatch.from_events(events)
    batch.extra["_raw"] = [(10.5, admin)]
    _, out = policy.process(policy.initial_state(), batch, 0)
    pinned = [o for o in out if o.get("action") == "routing_table" and "admin pin c" in o["reason"]]
    assert pinned and pinned[0]["caused_by"] == [admin["id"]]


# ---------------------------------------------------------------------- reaction


def test_a_failing_route_loses_90_percent_of_its_share_within_the_rate_limit_and_returns_after_recovery():
    def outage(route: str, t: float):
        ok, quality, cost = steady(route, t)
        return (ok and not (route == "a" and 60 <= t < 90)), quality, cost

    r = routing()
    sim = Sim(RoutingPolicy([r], CFG), outage)
    sim.run(60)
    before = sim.share("a")
    assert before >= 0.8  # the best route (quality 0.9 vs 0.6 / 0.5) got most of the traffic
    sim.run(60 + r.min_change_interval_s)
    moved = [t for t, o in sim.tables if t >= 60 and next(x["weight"] for x in o["details"]["routes"]
                                                          if x["name"] == "a") <= 0.1 * before]
    assert moved and moved[0] - 60 <= r.min_change_interval_s
    opened = [o for o in sim.outputs if o["kind"] == "signal" and o["state"] == "open"]
    assert opened and opened[0]["signal_type"] == "breaker" and opened[0]["route"] == "a"
    breaker_open = next(o for o in sim.outputs if o.get("action") == "breaker_open")
    assert breaker_open["caused_by"] == [opened[0]["id"]]
    table = next(o for t, o in sim.tables if t >= 60)
    assert opened[0]["id"] in table["caused_by"] and "breaker a closed -> open" in table["reason"]
    assert next(x for x in table["details"]["routes"] if x["name"] == "a")["breaker"] == "open"

    sim.run(150)  # recovered at 90 s
    assert sim.share("a") >= 0.8
    back = [t for t, o in sim.tables if t >= 90 and next(x["weight"] for x in o["details"]["routes"]
                                                         if x["name"] == "a") >= 0.5 * before]
    # the closing breaker's probes end the failure regime: no waiting for the errors to decay
    assert back and back[0] - 90 <= 15, back[:1]
    resolved = [o for o in sim.outputs if o["kind"] == "signal" and o["state"] == "resolved"]
    assert resolved and resolved[-1]["incident_id"] == opened[0]["incident_id"]
    assert breaker_states(sim.state)[("default", "qa")]["a"]["state"] == "closed"


def test_a_route_leaves_on_a_latency_slo_breach_and_returns_within_seconds_of_recovering():
    """Route a (the best on quality) runs 10x slower from 60 s to 90 s against a 1 s SLO.
    The latency change test restarts its latency model on the recent calls both ways, so
    it neither waits for the slow minute to decay to leave, nor to come back."""
    jitter = random.Random(5)

    def slowdown(route: str, t: float):
        ok, quality, cost = steady(route, t)
        slow = route == "a" and 60 <= t < 90
        return ok, quality, cost, (4000.0 if slow else 300.0) * math.exp(0.25 * jitter.gauss(0, 1))

    r = routing(latency_slo_ms=1000)
    sim = Sim(RoutingPolicy([r], CFG), slowdown)
    sim.run(60)
    before = sim.share("a")
    assert before >= 0.8
    sim.run(90)
    left = [t for t, o in sim.tables if t >= 60 and next(x["weight"] for x in o["details"]["routes"]
                                                         if x["name"] == "a") <= 0.1]
    assert left and left[0] - 60 <= 5, left[:1]
    sim.run(130)
    back = [t for t, o in sim.tables if t >= 90 and next(x["weight"] for x in o["details"]["routes"]
                                                         if x["name"] == "a") >= 0.5 * before]
    assert back and back[0] - 90 <= 20, back[:1]
    assert sim.state.programs[("default", "qa")].stats["a"].lat_changes >= 2


def test_a_slowdown_that_starves_the_program_of_outcomes_still_moves_the_table_at_once():
    """At 2 calls/s, min_samples = 20 outcomes would hold a change for 10 s after the
    last evaluation; a latency change point is urgent and does not wait for them."""
    jitter, slow_from = random.Random(9), [math.inf]

    def slowdown(route: str, t: float):
        ok, quality, cost = steady(route, t)
        slow = route == "a" and t >= slow_from[0]
        return ok, quality, cost, (4000.0 if slow else 300.0) * math.exp(0.25 * jitter.gauss(0, 1))

    sim = Sim(RoutingPolicy([routing(latency_slo_ms=1000)], CFG), slowdown, rate=2.0)
    sim.run(60)
    assert sim.share("a") >= 0.8
    ps = sim.state.programs[("default", "qa")]
    while ps.since_eval > 1 and sim.t < 90:  # slow down right after an evaluation: no outcomes banked
        sim.run(sim.t + 0.5)
    slow_from[0] = start = sim.t
    sim.run(start + 15)
    left = [t for t, o in sim.tables if t >= start and next(x["weight"] for x in o["details"]["routes"]
                                                            if x["name"] == "a") <= 0.1]
    assert left and left[0] - start <= 5, (start, left[:1])


def test_steady_latency_jitter_restarts_the_latency_model_less_than_once_in_10000_calls():
    from adaptd.daemon.adaptation.posteriors import RouteStats

    restarts = 0
    for seed in range(4):
        rng, stats = random.Random(seed), RouteStats()
        for i in range(5000):
            stats.decay_to((i + 1) * US // 20, 30.0)
            stats.outcome(True, 400.0 * math.exp(0.3 * rng.gauss(0, 1)), None, None, None)
        restarts += stats.lat_changes
    assert restarts < 2


def test_a_route_at_the_exploration_floor_still_notices_its_latency_recovering():
    """One call every 5 s decays to a weight of ~9 samples (half-life 30 s): the change
    test must count the calls it has seen since the last restart, not that weight."""
    from adaptd.daemon.adaptation.posteriors import RouteStats

    rng, stats, t = random.Random(3), RouteStats(), 0.0

    def call(ms: float, every_s: float) -> None:
        nonlocal t
        t += every_s
        stats.decay_to(int(t * US), 30.0)
        stats.outcome(True, ms * math.exp(0.3 * rng.gauss(0, 1)), None, None, None)

    for _ in range(200):
        call(400.0, 0.05)
    for _ in range(24):  # slow, and sent only the floor share
        call(4000.0, 5.0)
    assert stats.lat_changes == 1 and stats.p95_ms() > 2000
    fast = 0
    while stats.lat_changes == 1 and fast < 20:
        call(400.0, 5.0)
        fast += 1
    assert stats.lat_changes == 2 and fast <= 5 and stats.p95_ms() < 1500


def test_failed_calls_teach_the_success_rate_not_the_latency():
    from adaptd.daemon.adaptation.posteriors import RouteStats

    stats = RouteStats()
    for ok, ms in [(True, 100.0), (False, 6000.0), (True, 100.0), (False, 2.0)]:
        stats.outcome(ok, ms, None, None, None)
    assert stats.n == 4 and stats.ok == 2 and stats.lat_n == 2 and stats.p95_ms() == pytest.approx(100.0)


#: The rate limit alone: no move is "strong" enough to skip it.
PATIENT = PolicyConfig(half_life_s=30, breaker=BreakerConfig(cooldown_s=5, max_cooldown_s=10), strong_move=1.0)


def test_table_changes_on_performance_are_rate_limited_and_need_min_samples():
    sim = Sim(RoutingPolicy([routing()], PATIENT))
    sim.run(120)
    stamps = [t for t, o in sim.tables]
    assert len(stamps) >= 2 and all(b - a >= 5 - 0.06 for a, b in zip(stamps, stamps[1:]))
    # hysteresis: each published change moved some weight by >= 0.05
    for (_, old), (_, new) in zip(sim.tables, sim.tables[1:]):
        moved = max(abs(x["weight"] - y["weight"]) for x, y in zip(old["details"]["routes"], new["details"]["routes"]))
        assert moved >= 0.05 and new["attrs"]["moved"] == pytest.approx(moved, abs=1e-4)
    # fewer than min_samples outcomes: only the initial table
    few = Sim(RoutingPolicy([routing()], CFG))
    few.run(0.9)  # 18 calls
    assert [o["version"] for _, o in few.tables] == [1]


def test_a_large_move_on_strong_evidence_skips_the_rate_limit_and_small_moves_do_not():
    """With a 300 s rate limit: the first tables after the uniform start move a's share
    by >= strong_move (0.3) on the evidence that a answers best, and are published at
    once; no later table within the 300 s moves less than that."""
    sim = Sim(RoutingPolicy([routing(min_change_interval_s=300)], CFG))
    sim.run(60)
    later = sim.tables[1:]
    assert later and later[0][0] <= 5 and later[0][1]["reason"].startswith("strong evidence")
    assert all(o["attrs"]["moved"] >= CFG.strong_move for _, o in later)
    assert sim.share("a") >= 0.8


def test_a_signal_lets_the_next_change_skip_the_rate_limit():
    sim = Sim(RoutingPolicy([routing(min_change_interval_s=300)], PATIENT))
    sim.run(30)
    assert [o["version"] for _, o in sim.tables] == [1]  # held back by the rate limit
    signal = {"kind": "signal", "id": str(uuid.uuid4()), "ts": int(30 * US), "signal_type": "drift",
              "state": "open", "program": "qa", "source": "adaptd.drift"}
    sim.feed([signal])
    sim.run(40)
    (t, table), = sim.tables[1:]
    assert t <= 32 and table["caused_by"] == [signal["id"]] and table["reason"].startswith("signal")


def test_a_signal_on_the_program_is_cited_by_the_next_table():
    def degraded(route: str, t: float):
        ok, quality, cost = steady(route, t)
        return ok, (0.1 if route == "a" and t >= 30 else quality), cost

    sim = Sim(RoutingPolicy([routing()], CFG), degraded)
    sim.run(31)
    signal = {"kind": "signal", "id": str(uuid.uuid4()), "ts": int(31 * US), "signal_type": "anomaly",
              "state": "open", "program": "qa", "route": "a", "metric": "quality_mean", "source": "adaptd.anomaly"}
    sim.feed([signal])
    sim.run(60)
    citing = [o for _, o in sim.tables if signal["id"] in o["caused_by"]]
    assert citing and citing[0]["details"]["caused_by"] == citing[0]["caused_by"]
    assert sim.share("a") < 0.2  # the quality regression moved traffic away


# ---------------------------------------------------------------------- overrides


def test_pin_sends_everything_to_the_route_until_unpin():
    sim = Sim(RoutingPolicy([routing()], CFG))
    sim.run(20)
    pin = sim.admin("pin", "c")
    table = sim.table()
    assert [(r["name"], r["weight"], r["pinned"]) for r in table["routes"]] == [
        ("a", 0.0, False), ("b", 0.0, False), ("c", 1.0, True)]
    assert table["caused_by"] == [pin["id"]] and "admin pin c" in table["reason"]
    sim.run(60)
    assert sim.share("c") == 1.0 and {r for t, r in sim.picks if t > 21} == {"c"}
    sim.admin("unpin")
    assert not any(r["pinned"] for r in sim.table()["routes"])
    assert sim.share("a") > 0.5


def test_canary_share_is_respected_until_promoted_or_rolled_back():
    def good_c(route: str, t: float):
        ok, quality, cost = steady(route, t)
        return ok, (0.9 if route == "c" else quality), cost  # as good as the best: no automatic rollback

    sim = Sim(RoutingPolicy([routing()], CFG), good_c)
    sim.run(10)
    sim.admin("canary", "c", share=0.1)
    start = sim.t
    assert sim.share("c") == 0.1 and next(r for r in sim.table()["routes"] if r["name"] == "c")["canary"]
    sim.run(start + 100)  # 2000 calls
    picks = [r for t, r in sim.picks if t > start]
    n, k = len(picks), picks.count("c")
    assert abs(k / n - 0.1) <= 4 * math.sqrt(0.1 * 0.9 / n)
    assert all(next(x["weight"] for x in o["details"]["routes"] if x["name"] == "c") == 0.1
               for t, o in sim.tables if t > start)
    sim.admin("rollback", "c")
    assert sim.share("c") == 0.0 and not next(r for r in sim.table()["routes"] if r["name"] == "c")["canary"]
    sim.admin("promote", "c")
    assert not any(r["canary"] for r in sim.table()["routes"])
    sim.run(sim.t + 60)
    assert sim.share("c") > 0.2  # competes normally: as good as a


def test_a_flawless_canary_is_not_rolled_back_for_having_fewer_samples_than_a_flawless_incumbent():
    def flawless(route: str, t: float):
        return True, 1.0, None  # every call succeeds and scores 1 on every route

    sim = Sim(RoutingPolicy([routing()], CFG), flawless)
    sim.run(1)
    sim.admin("rollback", "c")  # c is (almost) new: it serves nothing until its canary
    sim.run(60)  # the incumbents gather hundreds of perfect outcomes
    assert sim.state.programs[("default", "qa")].stats["c"].total < 10
    sim.admin("canary", "c", share=0.1)
    sim.run(120)
    assert not [o for o in sim.outputs if o.get("action") == "rollback" and o["source"] == "adaptd.policy"]
    assert sim.share("c") == 0.1


def test_a_worse_canary_is_rolled_back_automatically():
    sim = Sim(RoutingPolicy([routing()], CFG))  # c delivers quality 0.5, a 0.9
    sim.run(10)
    sim.admin("canary", "c", share=0.1)
    start = sim.t
    sim.run(start + 40)
    (rollback,) = [o for o in sim.outputs if o.get("action") == "rollback" and o["source"] == "adaptd.policy"]
    at = to_us(rollback["ts"]) / US
    canary_calls = sum(1 for t, r in sim.picks if start < t <= at and r == "c")
    assert canary_calls >= 20 and at - start <= 30  # min_samples of its own first, then soon
    assert rollback["route"] == "c" and rollback["details"]["incumbent"] == "a"
    assert rollback["details"]["probability_worse"] >= 0.95
    table = next(o for t, o in sim.tables if rollback["id"] in o["caused_by"])
    assert "automatic rollback of canary c" in table["reason"]
    assert next(r for r in table["details"]["routes"] if r["name"] == "c")["weight"] == 0.0
    assert sim.share("c") == 0.0


def test_bad_admin_input_is_ignored():
    sim = Sim(RoutingPolicy([routing()], CFG))
    sim.run(5)
    versions = len(sim.tables)
    sim.admin("canary", "c", share=2.0)
    sim.admin("pin", "nope")
    sim.admin("pin", None)
    sim.feed([{"kind": "adaptation", "id": str(uuid.uuid4()), "ts": int(5 * US), "action": "pin",
               "program": "other", "route": "a"}])
    assert len(sim.tables) == versions
    assert sim.state.ignored >= 2


# ---------------------------------------------------------------------- constraints


def test_exploration_floor_keeps_a_bad_route_in_play():
    def bad_c(route: str, t: float):
        ok, quality, cost = steady(route, t)
        return ok, (0.05 if route == "c" else quality), cost

    sim = Sim(RoutingPolicy([routing(exploration_floor=0.03)], CFG), bad_c)
    sim.run(120)
    assert sim.share("c") == pytest.approx(0.03, abs=0.002)
    assert sum(1 for t, r in sim.picks if t > 60 and r == "c") > 0


def test_cost_ceiling_excludes_a_route_whose_calls_cost_more():
    def costs(route: str, t: float):
        return True, {"a": 0.95, "b": 0.6, "c": 0.5}[route], {"a": 0.05, "b": 0.002, "c": 0.001}[route]

    sim = Sim(RoutingPolicy([routing(max_cost_per_call=0.01)], CFG), costs)
    sim.run(60)
    assert sim.share("a") == 0.0  # best quality, but over the ceiling
    assert "excluded: a cost 0.05 > 0.01" in sim.table()["reason"]
    assert sum(1 for t, r in sim.picks if t > 10 and r == "a") == 0


def test_cost_is_estimated_from_tokens_and_prices_when_events_carry_none():
    routes = [RouteConfig(name="a", model="big", cost_per_1k_in=10.0, cost_per_1k_out=30.0),
              RouteConfig(name="b", model="small", cost_per_1k_in=0.1, cost_per_1k_out=0.1)]
    policy = RoutingPolicy([routing(routes=routes, max_cost_per_call=0.01)], CFG)
    events = [{"kind": "lm_call", "id": str(uuid.UUID(int=i)), "ts": i * US // 10, "program": "qa",
               "route": "ab"[i % 2], "tokens_in": 100, "tokens_out": 50} for i in range(100)]
    state, _ = policy.fold(policy.initial_state(), events)
    table = current_tables(state)[("default", "qa")]
    assert [r["weight"] for r in table["routes"]] == [0.0, 1.0]


def test_routing_config_refuses_inconsistent_programs():
    a = RouteConfig(name="a", model="m")
    with pytest.raises(ValidationError, match="duplicate"):
        ProgramRouting(program="p", routes=[a, a])
    with pytest.raises(ValidationError, match="unknown routes"):
        ProgramRouting(program="p", routes=[a], fallbacks={"a": ["z"]})
    with pytest.raises(ValidationError, match="objective"):
        ProgramRouting(program="p", routes=[a], objective={"speed": 1.0})
    with pytest.raises(ValidationError):
        ProgramRouting(program="p", routes=[])


def test_the_watermark_moves_a_quiet_programs_breaker_to_half_open():
    policy = RoutingPolicy([routing()], CFG)
    failures = [{"kind": "lm_call", "id": str(uuid.UUID(int=i)), "ts": i * US // 10, "program": "qa", "route": "a",
                 "status": "error"} for i in range(5)]
    state, out = policy.fold(policy.initial_state(), failures)
    assert [o["action"] for o in out if o["kind"] == "adaptation"][-2:] == ["breaker_open", "routing_table"]
    # only other programs' events from now on; the watermark alone passes the cool-down
    others = [{"kind": "lm_call", "id": str(uuid.UUID(int=100 + i)), "ts": (1 + i) * US, "program": "other",
               "route": "x"} for i in range(10)]
    state, out = policy.fold(state, others, [(1 + i) * US for i in range(10)])
    half = [o for o in out if o.get("action") == "breaker_half_open"]
    assert len(half) == 1 and half[0]["ts"] == iso_us(6 * US)  # opened at 0.4 s + 5 s, at the next 1 s slot
    assert next(r for r in current_tables(state)[("default", "qa")]["routes"] if r["name"] == "a")["weight"] == CFG.probe_share
    # without watermarks, nothing moves
    state2, out2 = policy.fold(policy.fold(policy.initial_state(), failures)[0], others)
    assert out2 == []


def test_the_default_table_shares_equally_before_any_event():
    r = routing(fallbacks={"a": ["b", "c"]})
    t = default_table(r, "2026-11-22T00:00:00+00:00")
    assert t["version"] == 0 and t["fallbacks"] == {"a": ["b", "c"]}
    assert [x["weight"] for x in t["routes"]] == [0.3333, 0.3333, 0.3334]  # residue on the last of the largest
    assert {x["breaker"] for x in t["routes"]} == {"closed"}


def test_tenants_have_separate_tables_and_feedback_cannot_cross_tenants():
    policy = RoutingPolicy([routing()], CFG)
    calls = [{"kind": "lm_call", "id": str(uuid.UUID(int=i)), "ts": i * US // 10, "tenant": "t1", "program": "qa",
              "route": "abc"[i % 3], "execution_id": str(uuid.UUID(int=1000 + i))} for i in range(60)]
    foreign = [{"kind": "feedback", "id": str(uuid.UUID(int=5000 + i)), "ts": 6 * US, "tenant": "t2",
                "execution_id": str(uuid.UUID(int=1000 + i)), "score": 0.0} for i in range(60)]
    state, _ = policy.fold(policy.initial_state(), calls + foreign)
    assert state.feedback == 0 and state.ignored >= 60
    own = [{**f, "tenant": "t1"} for f in foreign]
    state, _ = policy.fold(state, own)
    assert state.feedback == 60
    assert list(current_tables(state)) == [("t1", "qa")]


# ---------------------------------------------------------------------- configuration


def test_routing_policy_knobs_come_from_the_toml_and_bad_ones_say_what_to_fix(tmp_path, monkeypatch) -> None:
    from adaptd.daemon.config import ConfigError, load_settings
    from adaptd.daemon.runtime import build_processors

    path = tmp_path / "adaptd.toml"
    # load_settings() points ADAPTD_CONFIG at the file; setenv makes the test undo that.
    monkeypatch.setenv("ADAPTD_CONFIG", str(path))
    path.write_text('[[routing]]\nprogram = "qa"\n[[routing.routes]]\nname = "a"\nmodel = "m"\n'
                    "[routing_policy]\nhalf_life_s = 12.5\nprobe_share = 0.2\n"
                    "[routing_policy.breaker]\ncooldown_s = 3\nbackoff = 1\n")
    settings = load_settings(path)
    policy = next(p for p in build_processors(settings.processors, settings.routing, settings.routing_policy)
                  if isinstance(p, RoutingPolicy))
    assert (policy.cfg.half_life_s, policy.cfg.probe_share) == (12.5, 0.2)
    assert (policy.cfg.breaker.cooldown_s, policy.cfg.breaker.backoff) == (3.0, 1.0)
    path.write_text("[routing_policy.breaker]\ncooldown_s = 0\n")
    with pytest.raises(ConfigError, match="routing_policy.*cooldown_s"):
        load_settings(path)
