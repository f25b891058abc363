"""Routing scenario benchmark: adaptd (``AdaptiveLM`` + a real ``adaptd up``) vs LiteLLM's
``Router`` (simple-shuffle and latency-based-routing) on the scripted mock provider.

Per scenario and seed, one run: a fresh mock server (``daemon/demo/mock_provider.py``) plays the
scenario time-scaled; a fresh daemon (subprocess, new data dir) gets the scenario's
deployments as a ``[[routing]]`` program; the same DSPy workload (``dspy.Predict`` on the
scenario's arithmetic tasks, a few paced threads per router) runs through the three routers
*at the same time* against the same server, each with its own api key so the mock's attempt
counters and our attempt log keep them apart. The adaptd path sends the grader's score as
``feedback`` on each call's execution, so the policy sees quality.

Figures per scenario and router (definitions in ``routing_workload.summarise``): success
rate, mean answer quality, p95 latency, cost, seconds until >= 90% of attempts left the
affected deployment(s), attempts spent on them during the fault, seconds until traffic
returns after recovery. Prints a markdown table per scenario and writes all runs as JSON.

    .venv/bin/python bench/routing_bench.py --scenarios outage_best,recovery --seeds 1,2 --scale 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from adaptd.daemon.demo.mock_provider import MockServer  # noqa: E402
from adaptd.daemon.demo.scenarios import Scenario, grade, make_tasks  # noqa: E402
from adaptd.daemon.testing import DaemonProcess  # noqa: E402
from bench.routing_scenarios import ALL_SCENARIOS as SCENARIOS  # noqa: E402
from bench.routing_workload import AttemptRecorder, ReportingLM, RouterLM, run_workload, summarise  # noqa: E402

PROGRAM = "bench"
TIMEOUT_S = 6.0  # per provider request, the same for every router
ROUTERS = ("adaptd", "litellm-shuffle", "litellm-latency")
DEFAULT_SCENARIOS = ("outage_best,latency_degradation,rate_limiting,quality_regression,recovery,group_down,cost_spike,"
                     "brownout,latency_4x,quality_regression_fast")


# --------------------------------------------------------------------------- configuration


#: What a user states about this workload: answers matter most, and cost counts a little
#: (a route at the highest cost per call loses 0.1 of quality).
OBJECTIVE = 'objective = { quality = 1.0, cost = 0.1, latency = 0.0 }'
#: ``--stated``: the knobs the issue-5 runs set by hand (a 2 s SLO, a 5% floor, a 10 s
#: rate limit scaled with the run, 10 samples). Without it every knob is at its default.
STATED = {"latency_slo_ms": 2000, "exploration_floor": 0.05, "min_samples": 10}


def routing_toml(scenario: Scenario, *, stated: dict[str, float] | None = None) -> str:
    """The daemon's ``[[routing]]`` program for ``scenario``: one route per deployment
    (priced as at t=0), fallback chains from the scenario's groups (a deployment whose
    group is only ever a fallback target is ``fallback_only``), the user's objective, and
    ``stated`` knobs; every other knob (breakers, latency, pacing) at its default."""
    lines = ["[[routing]]", f'program = "{PROGRAM}"', OBJECTIVE]
    lines += [f"{k} = {v}" for k, v in (stated or {}).items()]
    reserve = _fallback_only(scenario)
    for dep in scenario.deployments:
        b = scenario.behaviour(dep, 0.0)
        lines += ["[[routing.routes]]", f'name = "{dep}"', f'model = "openai/{dep}"',
                  f"cost_per_1k_in = {b.price_in_per_1k}", f"cost_per_1k_out = {b.price_out_per_1k}"]  # fmt: skip
        if dep in reserve:
            lines.append("fallback_only = true")
    chains = _route_fallbacks(scenario)
    if chains:
        lines.append("[routing.fallbacks]")
        lines += [f'"{dep}" = {json.dumps(chain)}' for dep, chain in chains.items()]
    return "\n".join(lines) + "\n"


def _fallback_only(scenario: Scenario) -> set[str]:
    """Deployments of groups that are fallback targets and never fall back themselves:
    what LiteLLM calls only through ``fallbacks`` (its model group is the best route's)."""
    targets = {g for to in scenario.fallbacks.values() for g in to} - set(scenario.fallbacks)
    return {d for g in targets for d in scenario.groups.get(g, ())}


def _route_fallbacks(scenario: Scenario) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for group, to_groups in scenario.fallbacks.items():
        targets = [d for g in to_groups for d in scenario.groups.get(g, (g,))]
        for dep in scenario.groups.get(group, ()):
            out[dep] = targets
    return out


def litellm_router(scenario: Scenario, server: MockServer, strategy: str, api_key: str) -> tuple[Any, str]:
    """A LiteLLM Router over the scenario's deployments and the model group to call.

    Settings as LiteLLM's reliability docs advise: ``num_retries=2`` (a retry re-picks,
    skipping the failed deployment), cooldowns on (``allowed_fails=1``: a deployment with
    more than one failure in the minute cools down for ``cooldown_time`` = 5 s; 429s cool
    down at once), group fallbacks from the scenario's groups, the same per-request timeout
    as adaptd's routes. Scenarios without groups put every deployment in one group.
    """
    from litellm import Router

    groups = dict(scenario.groups) or {"bench": tuple(scenario.deployments)}
    group_of = {d: g for g, deps in groups.items() for d in deps}
    model_list = [{"model_name": group_of[d],
                   "litellm_params": {"model": f"openai/{d}", "api_base": server.api_base(), "api_key": api_key,
                                      "timeout": TIMEOUT_S},
                   "model_info": {"id": f"{strategy}:{d}"}} for d in scenario.deployments]  # fmt: skip
    fallbacks = [{g: list(to)} for g, to in scenario.fallbacks.items()]
    router = Router(model_list=model_list, routing_strategy=strategy, num_retries=2, retry_after=0,
                    allowed_fails=1, cooldown_time=5, fallbacks=fallbacks or None, timeout=TIMEOUT_S)  # fmt: skip
    entry = group_of[scenario.best]
    return router, entry


# --------------------------------------------------------------------------- daemon


class Daemon(DaemonProcess):
    """``adaptd up --config`` in a fresh data dir on a free port (context manager); ready
    once the program's routing table answers."""

    def __init__(self, config_text: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="adaptd-routing-bench-"))
        super().__init__(self.dir / "data", config_text=config_text, env={"ADAPTD_LOG_LEVEL": "warning"},
                         ready_path=f"/v1/routing/{PROGRAM}", log_path=self.dir / "daemon.log", cwd=REPO)

    def __enter__(self) -> Daemon:
        self.start(timeout=90)
        return self

    def table(self) -> dict[str, Any] | None:
        try:
            return httpx.get(f"{self.url}/v1/routing/{PROGRAM}", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- one run


def run_one(name: str, seed: int, *, scale: float, threads: int, interval_s: float, window_s: float,
            decisions: bool = True, stated: bool = False) -> dict[str, Any]:
    """Run scenario ``name`` with ``seed`` through the three routers at once; their figures.

    ``decisions`` lets ``AdaptiveLM`` emit its ``route_decision`` events (as in
    production); feedback joins to routes through them and the ``lm_call`` events this
    bench emits. The adaptd routes use DSPy's LiteLLM engine, the same HTTP stack as
    LiteLLM's Router, which also keeps the mock's cost header for the ``lm_call`` events.
    """
    import adaptd.adapters as adapters
    from adaptd.adapters.adaptive_lm import AdaptiveLM

    scenario = SCENARIOS[name].scaled(scale)
    tasks = make_tasks(500, seed)
    keys = {r: f"key-{r}" for r in ROUTERS}
    with MockServer(scenario, seed) as server:
        recorder = AttemptRecorder(server)
        knobs = {**STATED, "min_change_interval_s": max(1.0, 10 * scale)} if stated else None
        config = routing_toml(scenario, stated=knobs)
        with Daemon(config) as daemon:
            client = adapters.Client(url=daemon.url, spill_dir=False)
            routes = {d: ReportingLM(route=d, program=PROGRAM, client=client, model=f"openai/{d}",
                                     api_base=server.api_base(), api_key=keys["adaptd"], cache=False,
                                     num_retries=0, timeout=TIMEOUT_S, engine="litellm")
                      for d in scenario.deployments}  # fmt: skip
            # local breaker at its defaults (``--stated`` only changes the daemon's program)
            adaptive = AdaptiveLM(PROGRAM, routes, client=client, url=daemon.url, poll_wait_s=10,
                                  poll_min_interval_s=0.2, max_attempts=3, emit_decisions=decisions)  # fmt: skip
            lms: dict[str, Any] = {"adaptd": adaptive}
            for r, strategy in (("litellm-shuffle", "simple-shuffle"), ("litellm-latency", "latency-based-routing")):
                router, group = litellm_router(scenario, server, strategy, keys[r])
                lms[r] = RouterLM(router, group)

            def with_feedback(run: Any, task: Any) -> Any:
                with adapters.observe(PROGRAM, client=client) as obs:
                    pred = run()
                client.feedback(obs.id, score=grade(getattr(pred, "answer", None), task.answer), metric="exact")
                return pred

            results: dict[str, list] = {}
            start = time.monotonic()
            server.provider.start = start  # the scenario's t=0 is the workload's start
            pool = [threading.Thread(target=lambda r=r: results.__setitem__(r, run_workload(
                lms[r], tasks, start=start, duration_s=scenario.duration_s, threads=threads, interval_s=interval_s,
                wrap=with_feedback if r == "adaptd" else None)), name=r) for r in ROUTERS]  # fmt: skip
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            client.flush(timeout=10)
            sdk_stats = client.stats()
            table = daemon.table() or {}
            try:
                processors = httpx.get(f"{daemon.url}/v1/stats", timeout=5).json().get("processors", {})
            except (httpx.HTTPError, ValueError):
                processors = {}
            adaptive.close()
            client.shutdown(timeout=5)
    out: dict[str, Any] = {"scenario": name, "seed": seed, "scale": scale, "duration_s": scenario.duration_s,
                           "fault": [scenario.fault_start_s, scenario.fault_end_s], "routers": {}}  # fmt: skip
    for r in ROUTERS:
        out["routers"][r] = summarise(scenario, results.get(r, []), recorder.of(keys[r]), window_s=window_s)
    out["raw"] = {r: {"calls": [[round(c.t0, 3), round(c.t1, 3), int(c.ok), c.quality] for c in results.get(r, [])],
                      "attempts": [[a.t, a.deployment, a.status, a.cost] for a in recorder.of(keys[r])]}
                  for r in ROUTERS}  # for re-analysis; dropped from the printed line
    out["routers"]["adaptd"]["table_version"] = table.get("version")
    out["routers"]["adaptd"]["final_weights"] = {e["name"]: round(e["weight"], 3) for e in table.get("routes", [])}
    out["routers"]["adaptd"]["client_stats"] = dict(adaptive.stats)
    out["routers"]["adaptd"]["client_table_version"] = adaptive.table.version
    out["routers"]["adaptd"]["daemon_processors"] = {k: processors.get(k) for k in ("errors", "last_error", "lag")}
    out["routers"]["adaptd"]["sdk"] = {k: v for k, v in sdk_stats.items() if v}
    return out


# --------------------------------------------------------------------------- report

COLUMNS = [("success", "success"), ("quality", "quality"), ("p95_ms", "p95 ms"), ("cost_usd", "cost $"),
           ("leave_s", "leave s"), ("fault_attempts", "fault att."), ("fault_failed", "fault failed"),
           ("return_s", "return s"), ("failed_calls", "failed calls"), ("calls", "calls")]  # fmt: skip


def _cell(values: list[Any]) -> str:
    nums = [v for v in values if isinstance(v, (int, float))]
    missing = len(values) - len(nums)
    if not nums:
        return "never" if values and values[0] is None else "-"
    med = statistics.median(nums)
    text = f"{med:.4g}"
    return text + (f" ({missing}x never)" if missing else "")


def markdown(runs: list[dict[str, Any]]) -> str:
    """One table per scenario: per router, the median over seeds (``never``: no seed got there)."""
    out = []
    for name in dict.fromkeys(r["scenario"] for r in runs):
        mine = [r for r in runs if r["scenario"] == name]
        seeds = ",".join(str(r["seed"]) for r in mine)
        out.append(f"\n### {name} (seeds {seeds}; median over seeds; fault {mine[0]['fault']} s)\n")
        out.append("| router | " + " | ".join(h for _, h in COLUMNS) + " |")
        out.append("|---" * (len(COLUMNS) + 1) + "|")
        for router in ROUTERS:
            rows = [r["routers"][router] for r in mine]
            cells = [_cell([row.get(k) for row in rows]) if any(k in row for row in rows) else "-" for k, _ in COLUMNS]
            out.append(f"| {router} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--scale", type=float, default=0.5, help="time scale of the scripts (0.5: 120 s -> 60 s)")
    parser.add_argument("--threads", type=int, default=3, help="workload threads per router")
    parser.add_argument("--interval", type=float, default=0.6, help="least seconds between a thread's calls")
    parser.add_argument("--window", type=float, default=4.0, help="trailing window (s) of the traffic-share figures")
    parser.add_argument("--no-decisions", dest="decisions", action="store_false",
                        help="AdaptiveLM emits no route_decision events")
    parser.add_argument("--stated", action="store_true",
                        help="the program states the issue-5 knobs (SLO 2 s, floor 0.05, ...); default: defaults")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "routing_bench.json"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # `kill PID` unwinds the context managers: the daemon and the mock server stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import litellm

    litellm.suppress_debug_info = True
    runs: list[dict[str, Any]] = []
    for name in args.scenarios.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.monotonic()
            run = run_one(name, seed, scale=args.scale, threads=args.threads, interval_s=args.interval,
                          window_s=args.window, decisions=args.decisions, stated=args.stated)  # fmt: skip
            run["wall_s"] = round(time.monotonic() - t0, 1)
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "raw"}), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(runs, indent=1))
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
