"""The scripted OpenAI-compatible mock provider used by the routing scenario suite (bench/).

Real HTTP servers on free 127.0.0.1 ports, real httpx and real dspy.LM / LiteLLM calls; the
scenario clock is injected so phase switches are tested without waiting.
"""

from __future__ import annotations

import statistics

import dspy
import httpx
import pytest

from adaptd.daemon.demo.mock_provider import MockProvider, MockServer, decide, main, output_fields, render_reply
from adaptd.daemon.demo.scenarios import (
    SCENARIOS,
    Behaviour,
    Phase,
    Scenario,
    behaviour_at,
    grade,
    make_tasks,
    solve,
)


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


INSTANT = Behaviour(latency_ms=0, latency_sigma=0, quality=1.0)


def scenario(**deployments: list[Phase]) -> Scenario:
    return Scenario("test", "test", 60, deployments, best=next(iter(deployments)))


def ask(client: httpx.Client, base: str, question: str, model: str = "a", **headers: str) -> httpx.Response:
    return client.post(
        f"{base}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": question}]},
        headers=headers,
    )


# --------------------------------------------------------------------------- server lifecycle


def test_server_starts_on_a_free_port_and_stops():
    server = MockServer(scenario(a=[Phase(0, INSTANT)])).start()
    assert server.port > 0 and server.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{server.url}/healthz").json() == {"ok": True}
    assert httpx.get(f"{server.api_base()}/models").json()["data"][0]["id"] == "a"
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_dspy_lm_call_through_the_mock_parses_with_the_chat_adapter():
    with MockServer(scenario(a=[Phase(0, INSTANT)])) as server:
        lm = dspy.LM("openai/a", api_base=server.api_base(), api_key="x", cache=False, num_retries=0)
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            predicted = dspy.Predict("question -> answer")(question="What is 17+25?")
            reasoned = dspy.ChainOfThought("question -> answer: int")(question="What is 6*7?")
        assert predicted.answer == "42"
        assert reasoned.answer == 42 and reasoned.reasoning
        usage = lm.history[-1]["usage"]
        assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0

        # The per-deployment path prefix overrides whatever model name the client sends.
        lm_b = dspy.LM("openai/anything", api_base=server.api_base("a"), api_key="x", cache=False, num_retries=0)
        with dspy.context(lm=lm_b):
            assert dspy.Predict("question -> answer")(question="What is 50-8?").answer == "42"
        assert server.provider.stats()["a"]["ok"] == 3


def test_reply_follows_the_output_fields_the_prompt_asks_for():
    messages = dspy.ChatAdapter().format(
        dspy.ChainOfThought("question -> answer").predict.signature, demos=[], inputs={"question": "What is 1+1?"}
    )
    assert output_fields(messages) == ["reasoning", "answer"]
    reply = render_reply(messages, "2")
    positions = [reply.index(m) for m in ("[[ ## reasoning ## ]]", "[[ ## answer ## ]]\n2", "[[ ## completed ## ]]")]
    assert positions == sorted(positions)
    assert render_reply([{"role": "user", "content": "What is 1+1?"}], "2") == "2"


# --------------------------------------------------------------------------- scripted phases


def test_scripted_phases_switch_at_the_scripted_times():
    down = Behaviour(latency_ms=0, latency_sigma=0, rate_503=1.0)
    clock = FakeClock()
    script = scenario(a=[Phase(0, INSTANT), Phase(10, down), Phase(20, INSTANT)])
    with MockServer(script, clock=clock) as server, httpx.Client(base_url=server.api_base()) as client:
        statuses = {}
        for t in (0.0, 9.99, 10.0, 19.99, 20.0, 500.0):
            clock.now = 1000.0 + t
            statuses[t] = ask(client, "", f"What is {int(t * 100)}+1?").status_code
    assert statuses == {0.0: 200, 9.99: 200, 10.0: 503, 19.99: 503, 20.0: 200, 500.0: 200}


def test_behaviour_at_picks_the_last_phase_started_and_the_first_before_any():
    slow, fast = Behaviour(latency_ms=900), Behaviour(latency_ms=10)
    phases = [Phase(30, fast), Phase(5, slow)]  # order in the list does not matter
    assert behaviour_at(phases, 0) is slow
    assert behaviour_at(phases, 29.9) is slow
    assert behaviour_at(phases, 30) is fast
    with pytest.raises(ValueError):
        behaviour_at([], 1)


def test_scaled_scenario_moves_every_scripted_time():
    quick = SCENARIOS["outage_best"].scaled(0.1)
    assert quick.fault_start_s == pytest.approx(3.0) and quick.fault_end_s == pytest.approx(9.0)
    assert quick.behaviour("strong", 2.9).error_rate == 0
    assert quick.behaviour("strong", 3.0).error_rate == pytest.approx(1.0)
    assert quick.behaviour("strong", 9.0).error_rate == 0


# --------------------------------------------------------------------------- determinism


def test_same_request_gets_the_same_outcome_whatever_the_order():
    coin = Behaviour(latency_ms=0, latency_sigma=0, rate_500=0.25, rate_429=0.25, quality=0.5)
    script = scenario(a=[Phase(0, coin)])
    questions = [t.question for t in make_tasks(40, seed=3)]

    def outcomes(order: list[str], client_name: str, server: MockServer) -> dict[str, tuple]:
        seen = {}
        with httpx.Client(base_url=server.api_base(), headers={"authorization": f"Bearer {client_name}"}) as client:
            for q in order:
                r = ask(client, "", q)
                answer = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else None
                seen[q] = (r.status_code, r.headers["x-mock-outcome"], answer)
        return seen

    with MockServer(script, seed=7) as server:
        forward = outcomes(questions, "router-a", server)
        # A second router on the same server, opposite order: its own attempt counters.
        backward = outcomes(list(reversed(questions)), "router-b", server)
    with MockServer(script, seed=7) as fresh:
        again = outcomes(questions[::3] + questions, "router-c", fresh)  # repeats are retries...
    assert forward == backward
    assert {s for s, _, _ in forward.values()} == {200, 429, 500}  # the draws did vary
    # ...so a retry of the same request is a new attempt with fresh (but fixed) draws.
    retried = {q for q in questions[::3]}
    assert all(again[q] == forward[q] for q in questions if q not in retried)
    with MockServer(script, seed=8) as other_seed:
        assert outcomes(questions, "router-a", other_seed) != forward


def test_attempt_number_drives_retries_and_can_be_set_explicitly():
    flaky = Behaviour(latency_ms=0, latency_sigma=0, rate_503=0.5)
    provider = MockProvider(scenario(a=[Phase(0, flaky)]), seed=1, clock=FakeClock())
    payload = {"model": "a", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    attempts = [provider.plan("/v1/chat/completions", {}, payload).headers["x-mock-attempt"] for _ in range(3)]
    assert attempts == ["0", "1", "2"]
    statuses = {provider.plan("/v1/chat/completions", {"x-mock-attempt": str(i)}, payload).status for i in range(40)}
    assert statuses == {200, 503}
    fixed = provider.plan("/v1/chat/completions", {"x-mock-attempt": "5"}, payload)
    assert fixed.status == provider.plan("/v1/chat/completions", {"x-mock-attempt": "5"}, payload).status


def test_draw_rates_match_the_behaviour():
    b = Behaviour(latency_ms=400, latency_sigma=0.5, rate_429=0.1, rate_503=0.2, quality=0.7)
    outcomes = [decide(b, 0, "a", f"request-{i}", 0) for i in range(4000)]
    share = {s: sum(o.status == s for o in outcomes) / len(outcomes) for s in ("ok", "429", "503")}
    assert share["429"] == pytest.approx(0.1, abs=0.02) and share["503"] == pytest.approx(0.2, abs=0.025)
    ok = [o for o in outcomes if o.status == "ok"]
    assert sum(o.correct for o in ok) / len(ok) == pytest.approx(0.7, abs=0.03)
    assert statistics.median(o.delay_s for o in ok) == pytest.approx(0.4, rel=0.06)


# --------------------------------------------------------------------------- failure modes


def test_429_carries_retry_after_and_litellm_sees_a_rate_limit():
    limited = Behaviour(latency_ms=0, latency_sigma=0, rate_429=1.0, retry_after_s=2.5)
    with MockServer(scenario(a=[Phase(0, limited)])) as server, httpx.Client() as client:
        r = ask(client, server.api_base(), "What is 1+2?")
        assert r.status_code == 429 and r.headers["retry-after"] == "2.5"
        assert r.json()["error"]["type"] == "rate_limit_error"
        lm = dspy.LM("openai/a", api_base=server.api_base(), api_key="x", cache=False, num_retries=0)
        with pytest.raises(Exception, match="(?i)rate ?limit"):
            lm("What is 3+4?")


def test_a_hang_outlasts_a_short_client_timeout_and_does_not_block_stop():
    hung = Behaviour(latency_ms=0, latency_sigma=0, rate_hang=1.0, hang_s=60)
    server = MockServer(scenario(a=[Phase(0, hung)])).start()
    try:
        with pytest.raises(httpx.ReadTimeout):
            ask(httpx.Client(timeout=0.3), server.api_base(), "What is 5+5?")
        assert server.provider.stats()["a"]["hang"] == 1
    finally:
        stopper = __import__("threading").Thread(target=server.stop)
        stopper.start()
        stopper.join(timeout=10)
    assert not stopper.is_alive(), "stop() waited for the hanging handler"


def test_connection_reset_and_server_errors():
    resets = Behaviour(latency_ms=0, latency_sigma=0, rate_reset=1.0)
    errors = Behaviour(latency_ms=0, latency_sigma=0, rate_500=1.0)
    with MockServer(scenario(r=[Phase(0, resets)], e=[Phase(0, errors)])) as server, httpx.Client() as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            ask(client, server.api_base(), "What is 9+9?", model="r")
        r = ask(client, server.api_base(), "What is 9+9?", model="e")
        assert r.status_code == 500 and "mock upstream error" in r.json()["error"]["message"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # the server survived


def test_usage_and_cost_are_reported_per_response_and_in_stats():
    priced = Behaviour(latency_ms=0, latency_sigma=0, quality=1.0, price_in_per_1k=0.5, price_out_per_1k=2.0)
    with MockServer(scenario(a=[Phase(0, priced)])) as server, httpx.Client() as client:
        bodies = [ask(client, server.api_base(), t.question) for t in make_tasks(5, seed=1)]
        stats = httpx.get(f"{server.url}/stats").json()["deployments"]["a"]
    total = 0.0
    for r in bodies:
        usage = r.json()["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        cost = float(r.headers["x-mock-cost-usd"])
        assert cost == pytest.approx(priced.cost_usd(usage["prompt_tokens"], usage["completion_tokens"]))
        assert r.json()["x_mock"]["cost_usd"] == pytest.approx(cost)
        total += cost
    assert stats["requests"] == stats["ok"] == stats["correct"] == 5
    assert stats["cost_usd"] == pytest.approx(total)


def test_completions_endpoint_answers_the_prompt():
    with MockServer(scenario(a=[Phase(0, INSTANT)])) as server:
        r = httpx.post(f"{server.api_base()}/completions", json={"model": "a", "prompt": "Q: What is 20+22?\nA:"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "42"


def test_bad_requests_get_a_clear_4xx_reason():
    with MockServer(scenario(a=[Phase(0, INSTANT)])) as server, httpx.Client(base_url=server.url) as client:
        unknown = ask(client, "/v1", "What is 1+1?", model="nope")
        assert unknown.status_code == 404 and "unknown deployment 'nope'" in unknown.json()["error"]["message"]
        bad_json = client.post("/v1/chat/completions", content=b"{not json")
        assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["error"]["message"]
        no_messages = client.post("/v1/chat/completions", json={"model": "a", "messages": []})
        assert no_messages.status_code == 400
        stream = client.post("/v1/chat/completions", json={"model": "a", "stream": True,
                                                           "messages": [{"role": "user", "content": "hi"}]})
        assert stream.status_code == 400 and "streaming" in stream.json()["error"]["message"]
        assert client.post("/v2/elsewhere", json={}).status_code == 404
        assert ask(client, "/v1", "What is 1+1?").status_code == 200  # still serving


def test_behaviour_rejects_impossible_rates():
    with pytest.raises(ValueError, match="sum"):
        Behaviour(rate_500=0.6, rate_503=0.6)
    with pytest.raises(ValueError, match="quality"):
        Behaviour(quality=1.5)


# --------------------------------------------------------------------------- tasks and scenarios


def test_tasks_are_deterministic_and_graded_by_their_answer():
    tasks = make_tasks(20, seed=4)
    assert tasks == make_tasks(20, seed=4) != make_tasks(20, seed=5)
    assert make_tasks(0) == []
    for t in tasks:
        assert solve(t.question) == t.answer
        assert grade(t.answer, t.answer) == 1.0
        assert grade(f"The answer is {t.answer}.", t.answer) == 1.0
        assert grade(str(int(t.answer) + 1), t.answer) == 0.0
    assert grade(None, "4") == grade("", "4") == grade("four", "4") == 0.0
    assert solve("demo: What is 1+1? now: What is 3*5?") == "15"  # the last question counts
    assert solve("no arithmetic here") is None


def test_every_scenario_scripts_a_fault_on_its_affected_routes_only_inside_the_window():
    assert {"outage_best", "latency_degradation", "rate_limiting", "group_down", "quality_regression",
            "recovery", "cost_spike"} <= set(SCENARIOS)
    for s in SCENARIOS.values():
        assert s.best in s.deployments and set(s.affected) <= set(s.deployments), s.name
        inside = (s.fault_start_s + (s.fault_end_s or s.duration_s)) / 2
        after = s.fault_end_s + 1 if s.fault_end_s is not None else None
        for dep in s.affected:
            assert s.behaviour(dep, inside) != s.behaviour(dep, after), s.name
            if s.fault_start_s > 0:
                assert s.behaviour(dep, s.fault_start_s - 1) == s.behaviour(dep, after), s.name
        for dep in set(s.deployments) - set(s.affected):
            assert s.behaviour(dep, inside) == s.behaviour(dep, 0), s.name
    group = SCENARIOS["group_down"]
    assert group.fallbacks["primary"] == ("backup",)
    assert all(group.behaviour(d, 60).error_rate == pytest.approx(1.0) for d in group.groups["primary"])


def test_cli_lists_the_scenarios(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SCENARIOS)
