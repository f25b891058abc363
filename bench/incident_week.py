"""The incident week: a simulated week of 20 routes through the real processors, scored
per injected incident (detected? how fast? by which signal?) and for false incidents.

The traffic is ``incident_week_sim``'s (see its docstring: daily and weekly load cycles,
heavy-tailed latency, slow trends, a planned x2.5 traffic step that is not an incident,
and 10 incidents: two each of latency step, error burst, cost per call jump, quality
decay and throughput collapse, on different routes and days).  Its records go, chunk by
chunk in event-time order (fast-forwarded), through ``Pipeline`` with the processors
the daemon builds from ``ProcessorSettings()`` (shipped defaults: history -> anomaly,
error burst, drift), ``lateness_s`` from the settings and ``max_future_s=None`` (the
records have no real append times; the daemon's bound only caps client clocks).
Nothing is tuned here: this only measures.

Scoring, per seed, from the ``open`` signals (``ts`` = the end of the window that opened it):

* an incident is **detected** by the first open signal of its route (anomaly, error
  burst: same program + route; drift: same program, it is per program) whose metric, or
  one of drift's drifted features, is of the incident's kind (``EXPECTED``) and whose
  ``ts`` is in the incident's span ``[start, end]``; the **delay** is ``ts - start`` in
  event time, and in windows of the series that showed it (``window_end -
  window_start`` of that signal: 10 s / 1 min history windows, the 10 s / 60 s burst
  window, the drift window).  The first signal of any metric on the route is reported too;
* a **false incident** is an open signal outside every incident's *claim* on its route
  (``[start, end + GRACE_S]``: the recovery of a real incident is not a new one), one
  per open signal; the ones on the planned-step route after the step, and those of day 0
  (detectors warming up), are also counted apart.

Usage: python bench/incident_week.py [--seeds 1 2 3] [--rate 2] [--days 7] [--json out.json]
Prints a table per seed and one JSON object (per incident rows and a summary).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from incident_week_sim import DAY_S, Week, events, make_week  # noqa: E402

from adaptd.daemon.config import ProcessorSettings  # noqa: E402
from adaptd.daemon.runtime import build_processors  # noqa: E402
from adaptd.streams.log.base import Record  # noqa: E402
from adaptd.streams.processors.base import NO_WATERMARK, to_us  # noqa: E402
from adaptd.streams.processors.pipeline import Pipeline  # noqa: E402

#: Metrics (anomaly / error burst) and drift features that name each incident kind.
EXPECTED = {
    "latency_step": {"p95_ms", "p99_ms", "duration_ms"},
    "error_burst": {"error_rate", "status"},
    "cost_jump": {"cost_per_call", "cost_usd"},
    "quality_decay": {"quality_mean", "quality"},
    "throughput": {"throughput", "route"},
}
#: After an incident ends, signals on its route are still its aftermath for this long.
GRACE_S = 1800
BATCH = 20_000


def run_week(week: Week, chunk_s: int = 600, end_s: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Feed ``week`` (up to ``end_s``, default all of it) through the daemon's processors;
    return the open signals and run figures."""
    settings = ProcessorSettings()
    pipeline = Pipeline(build_processors(settings), lateness_s=settings.lateness_s, max_future_s=None)
    states, high = pipeline.initial_states(), NO_WATERMARK
    opens: list[dict[str, Any]] = []
    n = offset = 0
    cpu, wall = time.process_time(), time.perf_counter()
    day = 0
    for t1, values in events(week, chunk_s, end_s):
        if t1 >= (day + 1) * DAY_S:
            day += 1
            print(f"  seed {week.seed}: day {day} done, {time.process_time() - cpu:.0f} CPU-s", file=sys.stderr, flush=True)
        for a in range(0, len(values), BATCH):
            records = [Record(offset + i, v) for i, v in enumerate(values[a:a + BATCH])]
            offset += len(records)
            step = pipeline.step(states, high, records)
            high = step.high
            opens += [o for _, o in step.outputs if o.get("kind") == "signal" and o.get("state") == "open"]
        n += len(values)
    metrics = {p.name: p.metrics(states[p.name]) for p in pipeline.processors}
    return opens, {"events": n, "cpu_s": round(time.process_time() - cpu, 1),
                   "wall_s": round(time.perf_counter() - wall, 1),
                   "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                   "drift_windows_not_tested": metrics.get("drift", {}).get("windows_not_tested")}


def _on_route(signal: dict[str, Any], program: str, route: str) -> bool:
    return signal.get("program") == program and signal.get("route") in (route, None)


def _names(signal: dict[str, Any]) -> set[str]:
    drifted = (signal.get("explanation") or {}).get("drifted") or []
    return {signal.get("metric") or "", *drifted}


def score(week: Week, opens: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per incident rows and the false incidents of ``opens`` (see the module docstring)."""
    t0 = week.start_us
    for s in opens:
        s["_t"] = (to_us(s["ts"]) - t0) / 1e6
        s["_w"] = (to_us(s["window_end"]) - to_us(s["window_start"])) / 1e6 if s.get("window_start") else None
    rows = []
    for inc in week.incidents:
        r = week.routes[inc.route]
        mine = sorted((s for s in opens if _on_route(s, r.program, r.route) and inc.start_s <= s["_t"] <= inc.end_s),
                      key=lambda s: s["_t"])
        right = [s for s in mine if _names(s) & EXPECTED[inc.kind]]
        row: dict[str, Any] = {"kind": inc.kind, "route": f"{r.program}/{r.route}", "day": int(inc.start_s // DAY_S),
                               "start": f"{int(inc.start_s % DAY_S // 3600):02d}:{int(inc.start_s % 3600 // 60):02d}",
                               "detected": bool(right)}
        if right:
            s = right[0]
            row.update(delay_s=round(s["_t"] - inc.start_s, 1), window_s=s["_w"],
                       delay_windows=round((s["_t"] - inc.start_s) / s["_w"], 2) if s["_w"] else None,
                       signal=f"{s['source'].removeprefix('adaptd.')}:{s['metric']}",
                       test=(s.get("explanation") or {}).get("test"))
        if mine:
            row["first_any"] = f"{mine[0]['source'].removeprefix('adaptd.')}:{mine[0]['metric']}" \
                               f" +{mine[0]['_t'] - inc.start_s:.0f}s"
        rows.append(row)
    false = []
    for s in opens:
        claimed = any(_on_route(s, week.routes[i.route].program, week.routes[i.route].route)
                      and i.start_s <= s["_t"] <= i.end_s + GRACE_S for i in week.incidents)
        if not claimed:
            false.append(s)
    planned = week.routes[week.planned.route]
    summary = {
        "detected": sum(r["detected"] for r in rows), "injected": len(rows),
        "false_incidents": len(false),
        "false_after_day0": sum(s["_t"] >= DAY_S for s in false),
        "false_on_planned_step_route": sum(_on_route(s, planned.program, planned.route)
                                           and s["_t"] >= week.planned.at_s for s in false),
        "false_by_signal": _count(f"{s['source'].removeprefix('adaptd.')}:{s['metric']}" for s in false),
        "false_list": [{"t": _when(s["_t"]), "key": f"{s['program']}/{s.get('route')}",
                        "signal": f"{s['source'].removeprefix('adaptd.')}:{s['metric']}",
                        "window_s": s["_w"]} for s in sorted(false, key=lambda s: s["_t"])],
    }
    return rows, summary


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _when(t_s: float) -> str:
    return f"d{int(t_s // DAY_S)} {int(t_s % DAY_S // 3600):02d}:{int(t_s % 3600 // 60):02d}"


def print_table(seed: int, rows: list[dict[str, Any]], summary: dict[str, Any], run: dict[str, Any]) -> None:
    print(f"\nseed {seed}: {run['events']} events, {run['cpu_s']} CPU-s ({run['wall_s']} s wall)")
    print(f"{'kind':14} {'route':11} {'day':>3} {'start':>5}  {'det':3} {'delay':>8} {'windows':>7}  signal"
          f"  (first signal of any metric)")
    for r in rows:
        delay = f"{r['delay_s']:.0f}s" if r["detected"] else "-"
        wins = f"{r['delay_windows']:.2f}" if r.get("delay_windows") is not None else "-"
        print(f"{r['kind']:14} {r['route']:11} {r['day']:>3} {r['start']:>5}  {'yes' if r['detected'] else 'NO':3}"
              f" {delay:>8} {wins:>7}  {r.get('signal', '-')}  ({r.get('first_any', 'none')})")
    print(f"detected {summary['detected']}/{summary['injected']}; false incidents {summary['false_incidents']}"
          f" ({summary['false_after_day0']} after day 0, {summary['false_on_planned_step_route']} on the planned-step"
          f" route after the step): {summary['false_by_signal']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--rate", type=float, default=2.0, help="mean weekday executions/s per route")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    if args.days < 7 or args.rate <= 0:
        ap.error("--days must be >= 7 and --rate > 0")
    per_seed, delays, detected, total, false = [], [], 0, 0, []
    for seed in args.seeds:
        week = make_week(seed, args.rate, args.days)
        opens, run = run_week(week)
        rows, summary = score(week, opens)
        print_table(seed, rows, summary, run)
        per_seed.append({"seed": seed, "planned_step": {"route": week.routes[week.planned.route].program + "/"
                                                        + week.routes[week.planned.route].route,
                                                        "at": _when(week.planned.at_s)},
                         "run": run, "incidents": rows, **summary})
        delays += [r["delay_windows"] for r in rows if r.get("delay_windows") is not None]
        detected += summary["detected"]
        total += summary["injected"]
        false.append(summary["false_incidents"])
    out = {"rate_per_route": args.rate, "days": args.days, "seeds": args.seeds,
           "settings": "ProcessorSettings() defaults", "grace_s": GRACE_S,
           "summary": {"detected": detected, "injected": total,
                       "median_delay_windows": statistics.median(delays) if delays else None,
                       "false_incidents_per_seed": false,
                       "targets": "all detected, median delay <= 2 windows, <= 2 false incidents per week"},
           "per_seed": per_seed}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
