"""Pieces of the routing benchmark (``bench/routing_bench.py``): the LMs each router is
driven through, the mock-side attempt recorder, the paced DSPy workload and the metrics.

* :class:`RouterLM` runs DSPy calls through a LiteLLM ``Router`` (one model group).
* :class:`ReportingLM` is a ``dspy.LM`` route for ``AdaptiveLM`` that emits one ``lm_call``
  event per attempt with ``program`` and ``route`` (the policy learns from those; the DSPy
  callback's ``lm_call`` events carry no route, see the report).
* :class:`AttemptRecorder` wraps the mock provider's ``plan`` and keeps every request it
  sees (arrival time, deployment, outcome, cost), keyed by the client's bearer token, so
  each router's attempts are counted where they land, whatever the router believes.
* :func:`run_workload` runs the same task sequence through an LM from a few paced threads.
* :func:`summarise` turns calls + attempts into the figures of one (scenario, router).

Pure except the LMs (HTTP), the recorder (wraps a live server) and the workload (threads).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from adaptd.daemon.demo.scenarios import Scenario, Task, grade

# --------------------------------------------------------------------------- LMs


class RouterLM(dspy.BaseLM):
    """A DSPy LM whose calls go through ``router.completion(model=group, ...)``.

    Provider errors propagate unchanged (as LiteLLM raises them after its own retries and
    fallbacks); DSPy's cache is off so every call reaches the router.
    """

    def __init__(self, router: Any, group: str, **kwargs: Any) -> None:
        super().__init__(model=f"litellm-router/{group}", cache=False, num_retries=0, **kwargs)
        self.router, self.group = router, group

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        messages = messages or [{"role": "user", "content": prompt}]
        kwargs.pop("num_retries", None)  # the router's own retry policy applies
        return self.router.completion(model=self.group, messages=messages, **kwargs)


class ReportingLM(dspy.LM):
    """A route LM that reports each attempt as an ``lm_call`` (program, route, status,
    latency, tokens, cost from the mock's ``x-mock-cost-usd`` header when present).

    The event is emitted inside the caller's observation, so it carries its
    ``execution_id``; emitting never raises (``Client.emit``).
    """

    def __init__(self, *, route: str, program: str, client: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.route, self.program, self.client = route, program, client

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        from adaptd.adapters.observe import current_observation

        obs = current_observation()
        t0 = time.perf_counter()
        try:
            response = super().forward(prompt=prompt, messages=messages, **kwargs)
        except Exception as exc:
            self.client.emit("lm_call", program=self.program, route=self.route, model=self.model, status="error",
                             duration_ms=(time.perf_counter() - t0) * 1000, error_type=type(exc).__name__,
                             execution_id=obs.id if obs is not None else None)  # fmt: skip
            raise
        usage = getattr(response, "usage", None)
        self.client.emit("lm_call", program=self.program, route=self.route, model=self.model, status="ok",
                         duration_ms=(time.perf_counter() - t0) * 1000,
                         tokens_in=getattr(usage, "prompt_tokens", None),
                         tokens_out=getattr(usage, "completion_tokens", None), cost_usd=mock_cost(response),
                         execution_id=obs.id if obs is not None else None)  # fmt: skip
        return response


def mock_cost(response: Any) -> float | None:
    """The mock's ``x-mock-cost-usd`` from a LiteLLM response's kept headers; None if absent."""
    headers = (getattr(response, "_hidden_params", None) or {}).get("additional_headers") or {}
    for key in ("llm_provider-x-mock-cost-usd", "x-mock-cost-usd"):
        if key in headers:
            try:
                return float(headers[key])
            except (TypeError, ValueError):
                return None
    return None


# --------------------------------------------------------------------------- attempts at the mock


@dataclass(frozen=True)
class Attempt:
    """One request as the mock saw it: seconds since the scenario start at arrival."""

    t: float
    client: str
    deployment: str
    status: str  # ok / 429 / 500 / 503 / reset / hang
    cost: float
    correct: bool


class AttemptRecorder:
    """Wraps ``server.provider.plan`` to log every planned request (thread-safe).

    Requests the mock rejects before planning an outcome (bad JSON, unknown deployment)
    are not logged.
    """

    def __init__(self, server: Any) -> None:
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        provider = server.provider
        original = provider.plan

        def plan(path: str, headers: dict[str, str], payload: Any) -> Any:
            out = original(path, headers, payload)
            meta = out.headers
            if "x-mock-outcome" in meta:
                client = headers.get("x-mock-client") or headers.get("authorization", "")
                rec = Attempt(float(meta.get("x-mock-elapsed-s", "nan")), client.removeprefix("Bearer ").strip(),
                              meta["x-mock-deployment"], meta["x-mock-outcome"],
                              float(meta.get("x-mock-cost-usd", 0.0)), meta.get("x-mock-correct") == "1")  # fmt: skip
                with self._lock:
                    self.attempts.append(rec)
            return out

        provider.plan = plan  # instance attribute: the HTTP handler looks it up per request

    def of(self, client: str) -> list[Attempt]:
        """The attempts of one client (api key), in arrival order."""
        with self._lock:
            return sorted((a for a in self.attempts if a.client == client), key=lambda a: a.t)


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Call:
    """One program call: start/end in seconds since the scenario start, outcome, grade."""

    t0: float
    t1: float
    ok: bool
    quality: float
    error: str | None = None


def run_workload(
    lm: dspy.BaseLM,
    tasks: Sequence[Task],
    *,
    start: float,
    duration_s: float,
    threads: int,
    interval_s: float,
    wrap: Callable[[Callable[[], Any], Task], Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Call]:
    """Run ``dspy.Predict("question -> answer")`` over ``tasks`` (cycled, in order, shared by
    the threads) from ``threads`` threads, each starting a call at most every ``interval_s``
    seconds, until ``duration_s`` after ``start`` (a ``clock()`` reading). ``wrap(run,
    task)`` may surround each call (e.g. an observation that sends feedback); it must
    return ``run()``'s result or raise its exception.

    Returns the calls sorted by start; a call that raised is ``ok=False, quality=0``.
    """
    predict = dspy.Predict("question -> answer")
    adapter = dspy.ChatAdapter()
    calls: list[Call] = []
    lock = threading.Lock()
    counter = iter(range(10**9))

    def worker() -> None:
        local: list[Call] = []
        next_at = clock()
        with dspy.context(lm=lm, adapter=adapter):
            while True:
                now = clock()
                if now - start >= duration_s:
                    break
                if now < next_at:
                    time.sleep(next_at - now)  # pacing, not waiting for work
                next_at = max(next_at + interval_s, clock())
                with lock:
                    task = tasks[next(counter) % len(tasks)]
                t0 = clock()
                try:
                    def run(task: Task = task) -> Any:
                        return predict(question=task.question)

                    pred = wrap(run, task) if wrap is not None else run()
                    local.append(Call(t0 - start, clock() - start, True, grade(getattr(pred, "answer", None),
                                                                              task.answer)))
                except Exception as exc:  # a failed call is a data point, not a crash
                    local.append(Call(t0 - start, clock() - start, False, 0.0, type(exc).__name__))
        with lock:
            calls.extend(local)

    pool = [threading.Thread(target=worker, name=f"workload-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sorted(calls, key=lambda c: c.t0)


# --------------------------------------------------------------------------- metrics


def _share(attempts: Sequence[Attempt], affected: set[str], lo: float, hi: float) -> tuple[int, float | None]:
    window = [a for a in attempts if lo <= a.t < hi]
    if not window:
        return 0, None
    return len(window), sum(a.deployment in affected for a in window) / len(window)


def first_time(attempts: Sequence[Attempt], affected: set[str], since: float, until: float,
               test: Callable[[float], bool], window_s: float, *, on_affected: bool,
               min_n: int = 5) -> float | None:
    """Seconds after ``since`` until the first attempt, at ``t`` in ``[since, until)``, that
    is (``on_affected``) or is not on an affected deployment and from which the forward
    window ``[t, t + window_s)`` holds >= ``min_n`` attempts and ``test(share of
    affected)`` is true; None if no attempt qualifies.

    Forward-looking, so a sharp switch at ``t`` is dated ``t``, not ``t + window_s``.
    """
    for a in attempts:
        if a.t < since:
            continue
        if a.t >= until:
            break
        if (a.deployment in affected) != on_affected:
            continue
        n, share = _share(attempts, affected, a.t, a.t + window_s)
        if n >= min_n and share is not None and test(share):
            return round(a.t - since, 2)
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` in [0, 1]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarise(scenario: Scenario, calls: Sequence[Call], attempts: Sequence[Attempt], *,
              window_s: float, leave_share: float = 0.10, return_share: float = 0.20) -> dict[str, Any]:
    """Figures of one router on one scenario run.

    ``success`` = share of calls answered; ``quality`` = mean grade of answered calls
    (``quality_all`` counts failures as 0); ``p95_ms`` over all calls; ``cost_usd`` = what
    the mock billed this router; ``leave_s`` = seconds from fault start until a trailing
    window shows <= ``leave_share`` of attempts on the affected deployments (None: never
    before the fault ended); ``fault_attempts`` / ``fault_failed`` = attempts on them during
    the fault window / those not answered; ``return_s`` = seconds from the fault's end
    until their share is back to >= ``return_share`` (None: not within the run).
    """
    affected = set(scenario.affected)
    answered = [c for c in calls if c.ok]
    out: dict[str, Any] = {
        "calls": len(calls),
        "success": round(len(answered) / len(calls), 4) if calls else None,
        "failed_calls": len(calls) - len(answered),
        "quality": round(sum(c.quality for c in answered) / len(answered), 4) if answered else None,
        "quality_all": round(sum(c.quality for c in calls) / len(calls), 4) if calls else None,
        "p95_ms": round(1000 * (percentile([c.t1 - c.t0 for c in calls], 0.95) or 0), 1) if calls else None,
        "attempts": len(attempts),
        "cost_usd": round(sum(a.cost for a in attempts), 6),
    }
    fs, fe = scenario.fault_start_s, scenario.fault_end_s
    if fs is None or not affected:
        return out
    end = fe if fe is not None else scenario.duration_s
    in_fault = [a for a in attempts if fs <= a.t < end and a.deployment in affected]
    pre_n, pre_share = _share(attempts, affected, 0.0, fs) if fs > 0 else (0, None)
    out.update({
        "pre_fault_share": None if pre_share is None else round(pre_share, 3),
        "leave_s": first_time(attempts, affected, fs, end, lambda s: s <= leave_share, window_s,
                              on_affected=False),
        "fault_attempts": len(in_fault),
        "fault_failed": sum(a.status != "ok" for a in in_fault),
        "fault_share": _share(attempts, affected, fs, end)[1],
    })
    if out["fault_share"] is not None:
        out["fault_share"] = round(out["fault_share"], 3)
    if fe is not None and fe < scenario.duration_s:
        out["return_s"] = first_time(attempts, affected, fe, scenario.duration_s,
                                     lambda s: s >= return_share, window_s, on_affected=True)  # fmt: skip
    return out
