"""Fallback-only routes: a route named as a fallback (``fallback_only = true``) is no bandit
arm. It gets weight 0 while a primary route may be chosen, clients reach it through the
fallback chains (the ``"*"`` chain included) when their primary choices fail or are open,
and the policy gives it the traffic only when every primary's breaker is open."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import random
import uuid
from collections import Counter

import dspy
import httpx
import pytest
from pydantic import ValidationError

from adaptd.adapters import Client, InMemoryExporter
from adaptd.adapters.adaptive_lm import AdaptiveLM
from adaptd.daemon.adaptation.breaker import BreakerConfig
from adaptd.daemon.adaptation.config import ProgramRouting, RouteConfig
from adaptd.daemon.adaptation.policy import PolicyConfig, RoutingPolicy
from adaptd.daemon.adaptation.table import default_table
from adaptd.daemon.config import Settings

US = 1_000_000
ANSWER = "[[ ## answer ## ]]\n{}\n\n[[ ## completed ## ]]"


def routing(**kw) -> ProgramRouting:
    routes = [RouteConfig(name="a", model="m-a"), RouteConfig(name="b", model="m-b"),
              RouteConfig(name="spare", model="m-spare", fallback_only=True)]
    kw.setdefault("fallbacks", {"*": ["spare"]})
    return ProgramRouting(program="qa", routes=routes, min_samples=10, min_change_interval_s=1, **kw)


def weights(table: dict) -> dict[str, float]:
    return {r["name"]: r["weight"] for r in table["routes"]}


def test_a_fallback_only_route_is_configured_with_the_any_route_chain_and_old_configs_still_load():
    r = routing()
    assert r.reserve == {"spare"} and r.fallbacks == {"*": ["spare"]}
    assert ProgramRouting(program="qa", routes=[RouteConfig(name="a", model="m")]).reserve == frozenset()
    table = default_table(r, "2026-12-06T00:00:00Z")
    assert weights(table) == {"a": 0.5, "b": 0.5, "spare": 0.0}
    assert [x["fallback_only"] for x in table["routes"]] == [False, False, True]


@pytest.mark.parametrize("routes, fallbacks, says", [
    ([("a", False), ("spare", True)], {}, "named in no fallback chain"),
    ([("a", True)], {"*": ["a"]}, "every route is fallback_only"),
    ([("a", False), ("b", False)], {"a": ["*"]}, "'*' is only a key"),
    ([("a", False), ("b", False)], {"*": ["nope"]}, "unknown routes ['nope']"),
])
def test_a_fallback_configuration_that_cannot_work_is_refused_with_the_reason(routes, fallbacks, says):
    with pytest.raises(ValidationError) as err:
        ProgramRouting(program="qa", routes=[RouteConfig(name=n, model="m", fallback_only=f) for n, f in routes],
                       fallbacks=fallbacks)
    assert says in str(err.value)


def test_the_policy_never_gives_a_fallback_only_route_a_bandit_share_until_every_primary_is_open():
    """Closed loop over the pure policy: a and b serve; spare's weight stays 0 in every
    table (it would be a bandit arm at >= the exploration floor otherwise); once a and b
    fail every call their breakers open and spare takes the traffic; once they recover,
    spare is back to 0."""
    policy = RoutingPolicy([routing()], PolicyConfig(breaker=BreakerConfig(cooldown_s=2, max_cooldown_s=4)))
    state, rng = policy.initial_state(), random.Random(3)
    shares: dict[str, float] = {"a": 0.5, "b": 0.5, "spare": 0.0}
    tables: list[tuple[float, dict[str, float]]] = []
    t = 0.0
    while t < 60:
        t += 0.05
        down = 20 <= t < 40
        names = [n for n, w in shares.items() if w > 0]
        route = rng.choices(names, weights=[shares[n] for n in names])[0]
        ok = not (down and route != "spare")
        execution = str(uuid.UUID(int=rng.getrandbits(128)))
        events = [{"kind": "lm_call", "id": str(uuid.UUID(int=rng.getrandbits(128))), "ts": int(t * US),
                   "program": "qa", "route": route, "status": "ok" if ok else "error", "duration_ms": 100.0,
                   "execution_id": execution}]
        state, out = policy.fold(state, events)
        for o in out:
            if o["kind"] == "adaptation" and o["action"] == "routing_table":
                shares = weights(o["details"])
                tables.append((t, shares))
    before = [s for at, s in tables if at < 20]
    during = [s for at, s in tables if 25 <= at < 40]
    after = [s for at, s in tables if at >= 40]
    assert before and all(s["spare"] == 0.0 for s in before)
    assert during and max(s["spare"] for s in during) >= 0.8, during
    # the primaries' probes succeed after 40 s: once one breaker closes, spare is out again
    assert after and after[-1]["spare"] == 0.0 and sum(after[-1].values()) == pytest.approx(1.0), after


def test_adaptive_lm_reaches_a_fallback_only_route_only_when_its_primary_choices_fail():
    """The client on the daemon's table for that config: healthy primaries take every call
    (spare gets none); when both primaries fail, every call is answered by spare through
    the "*" chain, with reason "fallback"."""
    exporter = InMemoryExporter()
    client = Client(exporter=exporter, spill_dir=False, schedule_delay_ms=10)
    table = default_table(routing(), "2026-12-06T00:00:00Z")
    ok = {n: dspy.LM("openai/m", mock_response=ANSWER.format(n), cache=False, num_retries=0) for n in "ab"}
    down = {n: dspy.LM("openai/m", mock_response=RuntimeError("503 from provider"), cache=False, num_retries=0)
            for n in "ab"}
    spare = dspy.LM("openai/m", mock_response=ANSWER.format("spare"), cache=False, num_retries=0)
    predict = dspy.Predict("question -> answer")
    try:
        healthy = AdaptiveLM("qa", {**ok, "spare": spare}, table=table, client=client, refresh=False,
                             rng=random.Random(1), sleep=lambda s: None)
        with dspy.context(lm=healthy):
            served = Counter(predict(question=f"q{i}").answer for i in range(40))
        assert served["spare"] == 0 and served["a"] + served["b"] == 40

        failing = AdaptiveLM("qa", {**down, "spare": spare}, table=table, client=client, refresh=False,
                             rng=random.Random(2), sleep=lambda s: None, max_attempts=3)
        with dspy.context(lm=failing):
            answers = [predict(question=f"r{i}").answer for i in range(10)]
        assert answers == ["spare"] * 10
        assert client.flush(timeout=5)
        reasons = Counter(e["reason"] for e in exporter.events if e["kind"] == "route_decision"
                          and e["route"] == "spare")
        assert reasons == {"fallback": 10}
    finally:
        client.shutdown(timeout=5)


def test_the_daemon_serves_a_fallback_only_route_at_weight_0_with_the_any_route_chain(inprocess_daemon, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", log_level="warning", routing=[routing()])
    daemon = inprocess_daemon(settings)
    table = httpx.get(f"{daemon.url}/v1/routing/qa", timeout=10).json()
    assert weights(table) == {"a": 0.5, "b": 0.5, "spare": 0.0}
    assert table["fallbacks"] == {"*": ["spare"]}
