"""AdaptiveLM: client-side routing over real DSPy LMs (litellm mock responses, no network).

Failing routes are real ``dspy.LM``s whose ``mock_response`` is an exception, so they
raise the provider error types DSPy raises. The table refresh is tested against a real
``http.server`` on 127.0.0.1 serving tables in the contract's JSON format: a stand-in for
the daemon's ``GET /v1/routing/{program}``, which lands separately.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import math
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dspy
import pytest
from conftest import wait_until

from adaptd.adapters import Client, InMemoryExporter
from adaptd.adapters.adaptive_lm import AdaptiveLM, AdaptiveModule, NoRouteError
from adaptd.adapters.route_breaker import RouteBreaker
from adaptd.adapters.routing_table import RoutingTable, TableError, WeightedChoice

ANSWER = "[[ ## answer ## ]]\n{}\n\n[[ ## completed ## ]]"


class ProviderDown(Exception):
    """What a failing route's provider raises (litellm wraps it as a server error)."""


def ok_lm(answer: str, model: str = "openai/gpt-4o-mini") -> dspy.LM:
    return dspy.LM(model, mock_response=ANSWER.format(answer), cache=False, num_retries=0)


def failing_lm(model: str = "openai/gpt-4o") -> dspy.LM:
    return dspy.LM(model, mock_response=ProviderDown("503 from provider"), cache=False, num_retries=0)


def table(version: int, weights: dict[str, float], fallbacks: dict | None = None, program: str = "qa") -> dict:
    return {
        "program": program, "version": version, "policy": "thompson",
        "routes": [{"name": n, "model": None, "weight": w, "breaker": "closed", "pinned": False,
                    "canary": False, "params": {}, "api_base": None} for n, w in weights.items()],
        "fallbacks": fallbacks or {}, "reason": "test", "caused_by": [], "ts": "2026-11-22T00:00:00Z",
    }  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now



def decisions(client: Client, exporter: InMemoryExporter) -> list[dict]:
    assert client.flush(timeout=5)
    return [e for e in exporter.events if e["kind"] == "route_decision"]


def make(routes: dict, client: Client, tbl: dict | None = None, **kw: Any) -> AdaptiveLM:
    kw.setdefault("refresh", False)
    kw.setdefault("rng", random.Random(7))
    kw.setdefault("sleep", lambda s: None)
    return AdaptiveLM("qa", routes, table=tbl, client=client, **kw)


def ask(lm: AdaptiveLM, question: str = "2+2?") -> str:
    with dspy.context(lm=lm):
        return dspy.Predict("question -> answer")(question=question).answer


# -- choosing ------------------------------------------------------------------------------


def test_share_of_choices_matches_table_weights_within_statistical_tolerance(client):
    weights = {"a": 0.6, "b": 0.3, "c": 0.1}
    lm = make({n: ok_lm(n) for n in weights}, client, table(1, weights), rng=random.Random(42))
    n = 20_000
    counts = Counter(lm.choose()[0] for _ in range(n))
    for name, w in weights.items():
        sigma = math.sqrt(n * w * (1 - w))
        assert abs(counts[name] - n * w) < 4 * sigma, (name, counts)


def test_choice_reports_the_probability_it_had_and_skips_zero_weight_routes(client):
    lm = make({"a": ok_lm("a"), "b": ok_lm("b"), "spare": ok_lm("s")}, client,
              table(1, {"a": 0.25, "b": 0.75, "spare": 0.0}))  # fmt: skip
    seen = {lm.choose()[:2] for _ in range(500)}
    assert seen == {("a", 0.25), ("b", 0.75)}


def test_weighted_choice_without_renormalises_and_empty_choice_raises():
    c = WeightedChoice([("a", 2.0), ("b", 1.0), ("c", 1.0)])
    assert c.probs == (0.5, 0.25, 0.25)
    rest = c.without({"a"})
    assert rest.names == ("b", "c") and rest.probs == (0.5, 0.5)
    assert rest.pick(0.0) == ("b", 0.5) and rest.pick(0.999999) == ("c", 0.5)
    with pytest.raises(LookupError):
        c.without({"a", "b", "c"}).pick(0.5)


def test_daemon_open_breaker_route_gets_no_traffic(client):
    t = table(2, {"a": 0.5, "b": 0.5})
    t["routes"][0]["breaker"] = "open"
    lm = make({"a": ok_lm("a"), "b": ok_lm("b")}, client, t)
    assert {lm.choose()[:2] for _ in range(200)} == {("b", 1.0)}


# -- calling and failing over ------------------------------------------------------------------


def test_dspy_program_runs_through_the_chosen_route_and_emits_decision_with_version_and_probability(
    client, exporter
):
    lm = make({"fast": ok_lm("from fast"), "good": ok_lm("from good", "openai/gpt-4o")}, client,
              table(7, {"fast": 0.0, "good": 1.0}))  # fmt: skip
    assert ask(lm) == "from good"
    [d] = decisions(client, exporter)
    assert d["program"] == "qa" and d["route"] == "good" and d["model"] == "openai/gpt-4o"
    assert d["policy_version"] == 7 and d["probability"] == 1.0
    assert d["reason"] == "weighted" and d["status"] == "ok" and d["attempt"] == 0
    assert len(lm.history) == 1  # the route's history entry is mirrored


def test_failed_route_fails_over_to_another_route_never_straight_back_to_it(client, exporter):
    sleeps: list[float] = []
    lm = make({"down": failing_lm(), "up": ok_lm("up")}, client, table(3, {"down": 0.9, "up": 0.1}),
              sleep=sleeps.append, failure_threshold=100)  # fmt: skip
    for _ in range(10):
        assert ask(lm) == "up"
    ds = decisions(client, exporter)
    for prev, nxt in zip(ds, ds[1:], strict=False):
        if prev["status"] == "error":
            assert nxt["route"] != prev["route"] and nxt["reason"] == "retry"
            assert nxt["probability"] == 1.0  # "up" was the only route left to sample
    failed = [d for d in ds if d["status"] == "error"]
    assert failed and all(d["route"] == "down" and d["error_type"] == "LMServerError" for d in failed)
    assert len(sleeps) == len(failed)  # one backoff before each retry


def test_all_routes_of_a_group_failing_goes_to_the_groups_fallback(client, exporter):
    lm = make({"a": failing_lm("openai/gpt-4o"), "b": failing_lm("openai/gpt-4.1"), "backup": ok_lm("backup")},
              client, table(4, {"a": 0.5, "b": 0.5, "backup": 0.0}, {"a": ["backup"], "b": ["backup"]}),
              failure_threshold=100)  # fmt: skip
    assert ask(lm) == "backup"
    ds = decisions(client, exporter)
    assert {d["route"] for d in ds[:2]} == {"a", "b"} and all(d["status"] == "error" for d in ds[:2])
    assert ds[2]["route"] == "backup" and ds[2]["reason"] == "fallback" and ds[2]["probability"] == 1.0
    assert lm.stats["fallbacks"] == 1


def test_every_route_failing_raises_the_providers_error_after_max_attempts(client):
    lm = make({"a": failing_lm("openai/gpt-4o"), "b": failing_lm("openai/gpt-4.1")}, client,
              table(1, {"a": 0.5, "b": 0.5}), max_attempts=4, failure_threshold=100)  # fmt: skip
    with pytest.raises(dspy.utils.exceptions.LMServerError):
        lm("hi")
    assert lm.stats["attempts"] == 2 and lm.stats["exhausted"] == 1  # each route once, no repeats


def test_retries_back_off_exponentially_with_full_jitter(client):
    sleeps: list[float] = []
    routes = {n: failing_lm() for n in "abcde"}
    lm = make(routes, client, table(1, dict.fromkeys("abcde", 0.2)), sleep=sleeps.append,
              max_attempts=5, backoff_base_s=0.1, backoff_max_s=0.3, failure_threshold=100)  # fmt: skip
    with pytest.raises(dspy.utils.exceptions.LMServerError):
        lm("hi")
    assert len(sleeps) == 4
    for k, s in enumerate(sleeps, start=1):
        assert 0 <= s <= min(0.3, 0.1 * 2 ** (k - 1))


def test_callers_own_bad_request_is_raised_at_once_and_does_not_count_against_the_route(client):
    lm = make({"a": ok_lm("a"), "b": ok_lm("b")}, client, table(1, {"a": 0.5, "b": 0.5}), failure_threshold=1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        lm("hi", n=0)
    assert lm.stats["attempts"] == 1 and lm.breakers.states().get("a", "closed") == "closed"
    assert lm.breakers.states().get("b", "closed") == "closed"


def test_async_call_fails_over_like_the_sync_one(client, exporter):
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    lm = make({"down": failing_lm(), "up": ok_lm("up")}, client, table(1, {"down": 1.0, "up": 0.0}, {"down": ["up"]}),
              async_sleep=fake_sleep)  # fmt: skip
    out = asyncio.run(lm.acall("hi"))
    assert out == [ANSWER.format("up")]
    assert [d["route"] for d in decisions(client, exporter)] == ["down", "up"] and len(slept) == 1


# -- local breaker -------------------------------------------------------------------------------


def test_local_breaker_opens_on_consecutive_failures_then_lets_one_probe_through_after_cooldown(client, exporter):
    clock = FakeClock()
    flaky = failing_lm()
    lm = make({"flaky": flaky, "backup": ok_lm("backup")}, client,
              table(1, {"flaky": 1.0, "backup": 0.0}, {"flaky": ["backup"]}),
              failure_threshold=3, cooldown_s=10.0, clock=clock)  # fmt: skip
    for _ in range(3):
        assert ask(lm) == "backup"
    assert lm.breakers.states()["flaky"] == "open"
    n = len(decisions(client, exporter))

    assert ask(lm) == "backup"  # open: no attempt wasted on flaky
    ds = decisions(client, exporter)[n:]
    assert [(d["route"], d["reason"]) for d in ds] == [("backup", "fallback")]

    clock.now += 10.0  # cool-down over, provider still down: the probe fails and re-opens
    assert ask(lm) == "backup"
    assert lm.breakers.states()["flaky"] == "open"
    assert [d["route"] for d in decisions(client, exporter)[n + 1:]] == ["flaky", "backup"]

    flaky.kwargs["mock_response"] = ANSWER.format("flaky again")  # provider recovers
    clock.now += 10.0
    assert ask(lm) == "backup"  # a failed probe doubled the cool-down: 20 s
    clock.now += 10.0
    assert ask(lm) == "flaky again"  # the first probe succeeds: still half-open
    assert lm.breakers.states()["flaky"] == "half_open"
    assert ask(lm) == "flaky again"  # the second success in a row closes it
    assert lm.breakers.states()["flaky"] == "closed"
    assert ask(lm) == "flaky again"


def test_breaker_state_machine_allows_a_single_probe_when_half_open():
    clock = FakeClock()
    b = RouteBreaker(failure_threshold=2, cooldown_s=5, clock=clock)
    b.record_failure()
    assert b.state == "closed" and b.acquire()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"  # the success reset the consecutive count
    assert b.record_failure() == "open" and not b.acquire()
    clock.now += 5
    assert b.acquire() and b.state == "half_open"
    assert not b.acquire()  # the probe is out: nobody else
    b.release()
    assert b.acquire()
    assert b.record_success() == "half_open" and b.state == "half_open"  # one success: the next probe
    assert b.acquire() and not b.acquire()
    assert b.record_success() == "half_open" and b.state == "closed"  # two in a row close it


def test_breaker_opens_on_errors_among_its_last_attempts_when_failures_never_come_in_a_row():
    """A brownout (one call in three fails) never gives two failures in a row here; four
    failures among the last ten attempts open the breaker anyway."""
    b = RouteBreaker(failure_threshold=2, cooldown_s=1, clock=FakeClock(), window=10, window_errors=4)
    states = []
    for failed in [False, True, False, False, True, False, True, False, False, True]:
        states.append(b.record_failure() if failed else (b.record_success(), b.state)[1])
    assert states[:-1] == ["closed"] * 9 and states[-1] == "open"


def test_a_retry_after_opens_the_breaker_at_once_for_that_long_and_failed_probes_double_the_cool_down():
    clock = FakeClock()
    b = RouteBreaker(failure_threshold=2, cooldown_s=1, clock=clock, max_cooldown_s=4)
    assert b.record_failure(cooldown_s=3.0) == "open"  # one 429 with Retry-After: 3
    clock.now += 2.9
    assert not b.acquire()
    clock.now += 0.1
    assert b.acquire() and b.record_failure() == "open"  # a failed probe: 1 s, then 2, 4, 4
    waits = []
    for _ in range(4):
        waited = 0.0
        while not b.acquire():
            clock.now += 0.5
            waited += 0.5
        waits.append(waited)
        b.record_failure()
    assert waits == [2.0, 4.0, 4.0, 4.0]


def test_retry_after_is_read_from_a_rate_limit_error_of_the_provider():
    import httpx
    import litellm

    from adaptd.adapters.route_breaker import retry_after_s

    response = httpx.Response(429, headers={"retry-after": "2.5"}, request=httpx.Request("POST", "http://x"))
    limited = litellm.RateLimitError("slow down", llm_provider="openai", model="m", response=response)
    assert retry_after_s(limited) == 2.5
    assert retry_after_s(ProviderDown("503")) is None
    assert retry_after_s(litellm.RateLimitError("no header", llm_provider="openai", model="m")) is None


# -- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t.pop("version"), "version"),
        (lambda t: t.update(version=-1), "version"),
        (lambda t: t["routes"][0].update(weight=-0.5), "weight"),
        (lambda t: t["routes"][0].update(weight=float("nan")), "weight"),
        (lambda t: t["routes"][0].update(breaker="melted"), "breaker"),
        (lambda t: t["routes"].append(dict(t["routes"][0])), "duplicate"),
        (lambda t: t.update(fallbacks={"a": "b"}), "fallbacks"),
    ],
)
def test_malformed_table_is_rejected_with_the_reason(mutate, reason):
    t = table(1, {"a": 0.5, "b": 0.5})
    mutate(t)
    with pytest.raises(TableError, match=reason):
        RoutingTable.from_json(t)


def test_older_or_foreign_tables_never_replace_the_current_one(client):
    lm = make({"a": ok_lm("a"), "b": ok_lm("b")}, client, table(5, {"a": 1.0, "b": 0.0}))
    assert lm.set_table(table(4, {"a": 0.0, "b": 1.0})) is False
    assert lm.table.version == 5
    with pytest.raises(TableError, match="other"):
        lm.set_table(table(9, {"a": 1.0}, program="other"))
    assert lm.table.version == 5


def test_route_added_by_the_table_is_built_from_its_model_and_params(client, exporter):
    lm = make({"a": failing_lm()}, client, table(1, {"a": 1.0}))
    t = table(2, {"a": 0.0, "new": 1.0})
    t["routes"][1].update(model="openai/gpt-4o-mini", params={"mock_response": ANSWER.format("new"), "cache": False})
    lm.set_table(t)
    assert ask(lm) == "new"
    assert decisions(client, exporter)[-1]["model"] == "openai/gpt-4o-mini"


# -- refresh from the daemon (stand-in server) ------------------------------------------------------


class TableServer:
    """A stand-in for the daemon's routing endpoint: ETag = version, 304 when unchanged."""

    def __init__(self, program: str, tbl: dict) -> None:
        self.table = tbl
        self.requests: list[tuple[str, str | None]] = []
        self.auth: set[str | None] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                etag = f'"v{outer.table["version"]}"'
                outer.requests.append((self.path, self.headers.get("If-None-Match")))
                outer.auth.add(self.headers.get("Authorization"))
                if not self.path.startswith(f"/v1/routing/{program}"):
                    self.send_response(404)
                    self.end_headers()
                elif self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                else:
                    body = json.dumps(outer.table).encode()
                    self.send_response(200)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_table_refresh_follows_the_server_with_etags_and_keeps_routing_while_it_is_down(client, exporter):
    server = TableServer("qa", table(1, {"a": 1.0, "b": 0.0}))
    lm = make({"a": ok_lm("a"), "b": ok_lm("b")}, client, refresh=True, url=server.url, token="t0k",
              poll_wait_s=0, poll_min_interval_s=0.02)  # fmt: skip
    try:
        wait_until(lambda: lm.table.version == 1, timeout=10)
        assert ask(lm) == "a"
        # The client sends the ETag back and takes the 304 as "unchanged".
        wait_until(lambda: lm.poller.counts["unchanged"] >= 1, timeout=10)
        assert any(inm == '"v1"' for _, inm in server.requests)
        assert lm.poller.counts["updates"] == 1
        assert server.auth == {"Bearer t0k"}

        server.table = table(2, {"a": 0.0, "b": 1.0})
        wait_until(lambda: lm.table.version == 2, timeout=10)
        assert ask(lm) == "b"

        server.stop()  # the daemon goes away: routing goes on from the last table
        errors = lm.poller.counts["errors"]
        wait_until(lambda: lm.poller.counts["errors"] > errors, timeout=10)
        assert [ask(lm, f"q{i}") for i in range(3)] == ["b", "b", "b"]
        assert lm.table.version == 2
        assert all(d["policy_version"] == 2 for d in decisions(client, exporter)[-3:])
    finally:
        lm.close()


def test_routing_works_from_the_initial_table_when_the_daemon_was_never_reachable(client):
    from conftest import free_port

    lm = make({"a": ok_lm("a"), "b": ok_lm("b")}, client, table(3, {"a": 0.0, "b": 1.0}), refresh=True,
              url=f"http://127.0.0.1:{free_port()}", poll_wait_s=0, poll_min_interval_s=0.02)  # fmt: skip
    try:
        wait_until(lambda: lm.poller.counts["errors"] >= 1, timeout=10)
        assert ask(lm) == "b" and lm.table.version == 3
    finally:
        lm.close()


# -- AdaptiveModule: routing among program variants --------------------------------------------


def variants() -> dict[str, dspy.Module]:
    predict = dspy.Predict("question -> answer")
    predict.set_lm(failing_lm())
    cot = dspy.ChainOfThought("question -> answer")
    cot.set_lm(dspy.utils.DummyLM([{"reasoning": "think", "answer": "from cot"}] * 10))
    return {"predict": predict, "cot": cot}


def test_adaptive_module_fails_over_from_a_failing_variant_to_its_fallback(client, exporter):
    am = AdaptiveModule("qa", variants(), table=table(5, {"predict": 1.0, "cot": 0.0}, {"predict": ["cot"]}),
                        client=client, refresh=False, rng=random.Random(3), sleep=lambda s: None)  # fmt: skip
    assert am(question="2+2?").answer == "from cot"
    ds = decisions(client, exporter)
    assert [(d["route"], d["status"], d["reason"]) for d in ds] == [
        ("predict", "error", "weighted"), ("cot", "ok", "fallback")]  # fmt: skip
    assert all(d["policy_version"] == 5 for d in ds)


def test_route_decisions_name_the_execution_the_programs_feedback_lands_on(client, exporter):
    """Under AdaptdCallback, a routed call's decision carries the outermost execution: the
    one ``execution_id_of(prediction)`` gives for feedback, so quality joins the route."""
    from adaptd.adapters import AdaptdCallback, execution_id_of

    am = AdaptiveModule("qa", variants(), table=table(5, {"predict": 0.0, "cot": 1.0}), client=client,
                        refresh=False)  # fmt: skip
    with dspy.context(callbacks=[AdaptdCallback(program="qa", client=client)]):
        pred = am(question="2+2?")
        plain = am(question="3+3?")
    ds = decisions(client, exporter)
    assert [d.get("execution_id") for d in ds] == [str(execution_id_of(pred)), str(execution_id_of(plain))]
    roots = [e for e in exporter.events if e["kind"] == "execution" and e["parent_id"] is None]
    assert {r["id"] for r in roots} == {str(execution_id_of(pred)), str(execution_id_of(plain))}
    am(question="outside")  # no callback: no execution to name
    assert decisions(client, exporter)[-1].get("execution_id") is None


def test_adaptive_module_shows_its_variants_to_optimizers_and_copies_share_the_router(client):
    am = AdaptiveModule("qa", variants(), client=client, refresh=False)
    assert len(am.predictors()) == 2
    copy = am.deepcopy()
    assert copy.router is am.router and copy.variants["cot"] is not am.variants["cot"]


def test_adaptive_module_choice_shares_match_weights(client):
    am = AdaptiveModule("qa", variants(), table=table(1, {"predict": 0.3, "cot": 0.7}), client=client,
                        refresh=False, rng=random.Random(11))  # fmt: skip
    n = 10_000
    share = Counter(am.choose()[0] for _ in range(n))["cot"] / n
    assert abs(share - 0.7) < 4 * math.sqrt(0.7 * 0.3 / n)


def test_copy_with_generation_options_passes_them_to_every_route_and_shares_routing(client):
    lm = make({"a": ok_lm("a")}, client, table(1, {"a": 1.0}))
    hot = lm.copy(temperature=0.9)
    assert hot("hi") == [ANSWER.format("a")]
    assert lm.routes["a"].history[-1]["kwargs"]["temperature"] == 0.9
    assert hot.router is lm.router and hot.stats["calls"] == 1
    lm("hi")
    assert "temperature" not in lm.routes["a"].history[-1]["kwargs"]


def test_every_local_breaker_open_fails_fast_without_calling_a_provider(client, exporter):
    clock = FakeClock()
    lm = make({"a": failing_lm("openai/gpt-4o"), "b": failing_lm("openai/gpt-4.1")}, client,
              table(1, {"a": 0.5, "b": 0.5}), failure_threshold=1, cooldown_s=30, clock=clock)  # fmt: skip
    with pytest.raises(dspy.utils.exceptions.LMServerError):
        lm("hi")
    assert lm.breakers.states() == {"a": "open", "b": "open"}
    n = len(decisions(client, exporter))
    with pytest.raises(NoRouteError, match="local breakers"):
        lm("hi")
    assert len(decisions(client, exporter)) == n  # nothing was attempted


def test_local_breaker_counts_only_consecutive_failures_below_its_window_error_count(client):
    flaky = failing_lm()
    lm = make({"flaky": flaky, "backup": ok_lm("backup")}, client,
              table(1, {"flaky": 1.0, "backup": 0.0}, {"flaky": ["backup"]}), failure_threshold=3,
              window_errors=6)  # fmt: skip
    for _ in range(2):
        assert ask(lm) == "backup"
    flaky.kwargs["mock_response"] = ANSWER.format("flaky")
    assert ask(lm) == "flaky"  # a success in between resets the count
    flaky.kwargs["mock_response"] = ProviderDown("503 again")
    for _ in range(2):
        assert ask(lm) == "backup"
    assert lm.breakers.states()["flaky"] == "closed"
    assert ask(lm) == "backup"
    assert lm.breakers.states()["flaky"] == "open"


def test_fallback_chain_skips_routes_whose_daemon_breaker_is_open(client, exporter):
    t = table(2, {"a": 1.0, "b": 0.0, "c": 0.0}, {"a": ["b", "c"]})
    t["routes"][1]["breaker"] = "open"
    lm = make({"a": failing_lm(), "b": ok_lm("b"), "c": ok_lm("c")}, client, t)
    assert ask(lm) == "c"
    assert [d["route"] for d in decisions(client, exporter)] == ["a", "c"]


def test_concurrent_calls_from_threads_all_succeed_while_one_route_fails(client, exporter):
    lm = make({"down": failing_lm(), "up": ok_lm("up")}, client, table(1, {"down": 0.5, "up": 0.5}),
              failure_threshold=2, cooldown_s=60)  # fmt: skip
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                results.append(lm("hi")[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors and results == [ANSWER.format("up")] * 40
    assert lm.breakers.states()["down"] == "open"
    ok = [d for d in decisions(client, exporter) if d["status"] == "ok"]
    assert len(ok) == 40 and {d["route"] for d in ok} == {"up"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_keeps_refreshing_the_table(client):
    server = TableServer("qa", table(1, {"a": 1.0, "b": 0.0}))
    lm = make({"a": ok_lm("a"), "b": ok_lm("b")}, client, refresh=True, url=server.url,
              poll_wait_s=0, poll_min_interval_s=0.02, rng=None)  # fmt: skip
    try:
        wait_until(lambda: lm.table.version == 1, timeout=10)
        pid = os.fork()
        if pid == 0:  # the child: only os._exit, whatever happens
            code = 1
            try:
                wait_until(lambda: lm.table.version == 2, timeout=10)
                code = 0 if lm.choose()[0] == "b" else 3
            finally:
                os._exit(code)
        server.table = table(2, {"a": 0.0, "b": 1.0})  # changed after the fork
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        lm.close()
        server.stop()


def test_a_429_with_retry_after_from_the_provider_opens_the_local_breaker_for_that_long(client):
    """A real HTTP 429 (``Retry-After: 3``) from the mock provider through DSPy's LiteLLM
    engine: the call fails over, and the route's breaker stays open 3 s, not the 1 s
    default cool-down."""
    from adaptd.daemon.demo.mock_provider import MockServer
    from adaptd.daemon.demo.scenarios import Behaviour, Phase, Scenario

    limited = Behaviour(latency_ms=1, latency_sigma=0, rate_429=1.0, retry_after_s=3.0)
    scenario = Scenario(name="limited", description="", duration_s=60, best="fine",
                        deployments={"limited": [Phase(0, limited)], "fine": [Phase(0, Behaviour(latency_ms=1))]})
    clock = FakeClock()
    with MockServer(scenario, 1) as server:
        routes = {d: dspy.LM(f"openai/{d}", api_base=server.api_base(), api_key="k", cache=False, num_retries=0,
                             engine="litellm") for d in ("limited", "fine")}  # fmt: skip
        lm = make(routes, client, table(1, {"limited": 1.0, "fine": 0.0}, {"limited": ["fine"]}), clock=clock)
        with dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question="What is 2+2?")
        breaker = lm.breakers.get("limited")
        assert breaker.state == "open" and breaker.open_for == 3.0
        clock.now += 2.9
        assert not breaker.would_allow()
        clock.now += 0.1
        assert breaker.would_allow()
