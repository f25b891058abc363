"""Per-call routing decision cost: adaptd ``AdaptiveLM`` vs LiteLLM ``Router``, same run.

Variants, each over the same three routes/deployments with weights 0.6 / 0.3 / 0.1:

* ``adaptd_choose``: ``AdaptiveLM.choose()``, the hot path of every call (one
  ``random()`` and a bisect over the table's precomputed cumulative weights, plus the
  "any local breaker not closed?" check).
* ``adaptd_choose_emit``: ``choose()`` + ``Client.emit("route_decision", ...)`` with the
  fields ``AdaptiveLM`` sends, into a client whose exporter discards: the whole
  per-call routing overhead on the caller's thread.
* ``adaptd_run_noop``: ``AdaptiveLM.router.run(call)`` with a ``call`` that returns at
  once: choice + stats + breaker bookkeeping + ``route_decision`` emit, i.e. everything
  routing adds to an LM call except the route's own work.
* ``adaptd_choose_breaker``: ``choose()`` while one route's local breaker is open (the
  slower exact path: renormalise over the routes left).
* ``litellm_simple_shuffle``: ``router.get_available_deployment(model="qa")`` with
  ``routing_strategy="simple-shuffle"`` and ``weight`` per deployment.
* ``litellm_latency``: the same with ``routing_strategy="latency-based-routing"``.
* ``timer``: two ``perf_counter_ns`` calls with nothing between: the floor included in
  every per-call figure above (not subtracted).

Each call is timed alone with ``perf_counter_ns``; a run reports median and p99 per
variant; variants are interleaved in blocks so machine drift hits all alike. Nothing is
sent anywhere (no LM is called; LiteLLM's cost map is read locally).

Usage: ``.venv/bin/python bench/route_choice_bench.py [--runs 3] [--calls 20000]``
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import datetime
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy
from litellm import Router

from adaptd.adapters import Client
from adaptd.adapters.adaptive_lm import AdaptiveLM
from adaptd.adapters.exporter import ExportResult

WEIGHTS = {"fast": 0.6, "good": 0.3, "cheap": 0.1}


class Discard:
    """An exporter that accepts and drops every batch."""

    def export(self, events: list[bytes]) -> ExportResult:
        return ExportResult.success(len(events))

    def shutdown(self) -> None:
        pass


def table(version: int = 1) -> dict:
    return {"program": "qa", "version": version, "policy": "thompson", "fallbacks": {},
            "routes": [{"name": n, "model": f"openai/{n}", "weight": w, "breaker": "closed"}
                       for n, w in WEIGHTS.items()]}  # fmt: skip


def adaptd_variants(client: Client) -> dict[str, Callable[[], object]]:
    routes = {n: dspy.LM(f"openai/{n}", api_key="x", cache=False) for n in WEIGHTS}
    lm = AdaptiveLM("qa", routes, table=table(), client=client, refresh=False, rng=random.Random(1))
    broken = AdaptiveLM("qa", routes, table=table(), client=client, refresh=False, rng=random.Random(1),
                        failure_threshold=1, cooldown_s=1e9)  # fmt: skip
    broken.breakers.failure("cheap")
    choose, emit = lm.choose, client.emit

    def choose_emit() -> None:
        name, p, reason = choose()
        emit("route_decision", program="qa", route=name, model="openai/fast", status="ok", error_type=None,
             execution_id=None, policy_version=1, probability=p, reason=reason, attempt=0)  # fmt: skip

    run = lm.router.run
    noop = lambda name: name

    return {"adaptd_choose": choose, "adaptd_choose_emit": choose_emit, "adaptd_choose_breaker": broken.choose,
            "adaptd_run_noop": lambda: run(noop)}  # fmt: skip


def litellm_variants() -> dict[str, Callable[[], object]]:
    model_list = [
        {"model_name": "qa", "model_info": {"id": n},
         "litellm_params": {"model": f"openai/{n}", "api_key": "x", "api_base": f"http://127.0.0.1:9/{n}",
                            "weight": w}}
        for n, w in WEIGHTS.items()
    ]  # fmt: skip
    out = {}
    for label, strategy in (("litellm_simple_shuffle", "simple-shuffle"), ("litellm_latency", "latency-based-routing")):
        router = Router(model_list=model_list, routing_strategy=strategy)
        out[label] = lambda r=router: r.get_available_deployment(model="qa")
    return out


def time_calls(fn: Callable[[], object], n: int, sink: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        sink.append(clock() - t0)


def one_run(variants: dict[str, Callable[[], object]], calls: int, blocks: int = 20) -> dict[str, dict[str, float]]:
    samples: dict[str, list[int]] = {k: [] for k in variants}
    per_block = max(1, calls // blocks)
    for _ in range(blocks):
        for name, fn in variants.items():
            # LiteLLM's selection is ~100x slower: fewer calls keep the run short.
            time_calls(fn, per_block // 10 if name.startswith("litellm") else per_block, samples[name])
    out = {}
    for name, xs in samples.items():
        xs.sort()
        out[name] = {"median_us": xs[len(xs) // 2] / 1000, "p99_us": xs[int(len(xs) * 0.99)] / 1000, "n": len(xs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20_000, help="timed calls per adaptd variant per run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    client = Client(exporter=Discard(), spill_dir=False, max_queue_size=1_000_000)
    variants = {"timer": lambda: None, **adaptd_variants(client), **litellm_variants()}
    for fn in variants.values():  # warm up (imports, caches, first-call paths)
        for _ in range(200):
            fn()
    runs = [one_run(variants, args.calls) for _ in range(args.runs)]
    client.shutdown(timeout=10)

    summary = {
        name: {"median_us": statistics.median(r[name]["median_us"] for r in runs),
               "p99_us": statistics.median(r[name]["p99_us"] for r in runs),
               "runs_median_us": [round(r[name]["median_us"], 3) for r in runs]}
        for name in variants
    }  # fmt: skip
    meta = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "litellm": version("litellm"), "dspy": version("dspy"),
            "runs": args.runs, "calls": args.calls}  # fmt: skip
    print(f"# route choice bench  {meta}")
    print(f"{'variant':<24}{'median µs':>11}{'p99 µs':>10}   per-run medians")
    for name, s in summary.items():
        print(f"{name:<24}{s['median_us']:>11.3f}{s['p99_us']:>10.3f}   {s['runs_median_us']}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
