"""Drift benchmark: detection delay and false alarms of ``DriftDetector`` on controlled shifts.

Each run simulates one program's executions, ``--window`` executions per window (500 by
default: with pass/fail feedback on every execution, 300 are too few to see a 10-point
drop within 2 windows at the detector's false-alarm budget), described as the
SDK would describe them (``execution_features`` of an execution event whose input text is
sketched by ``adaptd.streams.features``):

* input ``question``: 8-30 words drawn from one of 4 topic vocabularies (plus common
  words), the topic picked by a topic mix; its length does not depend on the topic, so a
  topic-mix change is visible only in the text sketch ``inputs.question.hv``;
* ``duration_ms`` lognormal (median 800 ms, sigma 0.6), tokens, cost, route / model /
  status; ``quality``: a feedback score on every execution.

Per scenario and seed: ``--reference`` windows form the reference, then ``--quiet`` windows
without any change (every finding there is a false alarm), then the change, and the
windows until the first finding of the expected feature (delay 1 = flagged when the first
changed window closes; a miss after ``--max-delay`` windows is reported as such).

Scenarios (all shifts start at a window boundary):
  topic_mix       topic shares 40/30/20/10 % -> 10/20/30/40 %
  new_topic       a fifth topic appears at 25 % of the inputs (the others shrink)
  latency         lognormal median +50 % (800 -> 1200 ms), same spread
  quality_graded  graded judge scores {0, .25, .5, .75, 1}, mean 0.80 -> 0.70
  quality_binary  pass/fail scores, pass rate 0.80 -> 0.70 (the hardest case)
  length_growth   questions of 16-60 words instead of 8-30, same topics: flagged as
                  ``inputs.question.len``; a finding on ``inputs.question.text`` in the
                  changed windows is counted as misnamed (``wrong``)

CPU: ``time.process_time`` of ``close_window`` (all tests of one window) and of ``observe``
per execution, over the whole run, reported as medians over windows.

Usage: python bench/drift_bench.py [--window 500] [--seeds 3] [--quiet 100]
                                   [--text-test classifier|mmd] [--scenario NAME ...]
Prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adaptd.streams.features import features as describe  # noqa: E402
from adaptd.streams.processors.drift.detector import DriftConfig, DriftDetector, execution_features  # noqa: E402

COMMON = "the a my your please help with is it this that for on and to of can you how what why when".split()
TOPICS = [
    "refund invoice charge billing payment card credit subscription plan price discount receipt tax "
    "renewal cancel upgrade downgrade overcharged statement balance",
    "shipping delivery package tracking courier parcel address delayed arrived warehouse dispatch "
    "lost damaged return label customs carrier pickup express",
    "password login account email verify reset locked username security twofactor code profile "
    "settings signin session browser cookie device token",
    "error crash bug install update version app install screen freeze slow battery sync download "
    "upload server timeout api integration",
    "recipe oven bake flour sugar butter dough yeast bread cake cookie chocolate vanilla whisk "
    "knead temperature pan tray minutes",
]
TOPICS = [t.split() for t in TOPICS]

SCENARIOS = {
    # name: (changed parameter, before, after, feature expected to be flagged)
    "topic_mix": ("mix", (0.4, 0.3, 0.2, 0.1, 0.0), (0.1, 0.2, 0.3, 0.4, 0.0), "inputs.question.text"),
    "new_topic": ("mix", (0.4, 0.3, 0.2, 0.1, 0.0), (0.3, 0.225, 0.15, 0.075, 0.25), "inputs.question.text"),
    "latency": ("latency_median", 800.0, 1200.0, "duration_ms"),
    "quality_graded": ("quality_mean", 0.80, 0.70, "quality"),
    "quality_binary": ("quality_pass", 0.80, 0.70, "quality"),
    # the same topics in longer questions: a length drift, not a content drift
    "length_growth": ("words", (8, 30), (16, 60), "inputs.question.len"),
}
BASE = {"mix": SCENARIOS["topic_mix"][1], "latency_median": 800.0, "quality_mean": 0.80, "quality_pass": None,
        "words": (8, 30)}
#: Per scenario, features whose finding after the change would misname it (a length
#: change reported as a content change).
WRONG = {"length_growth": ("inputs.question.text",)}


def graded_score(rnd: random.Random, mean: float) -> float:
    """A judge score in {0, .25, .5, .75, 1} with the given mean (binomial of 4 / 4)."""
    return sum(rnd.random() < mean for _ in range(4)) / 4


def execution(rnd: random.Random, p: dict) -> dict:
    """One execution event (as a wire dict) with its quality score."""
    topic = rnd.choices(range(len(TOPICS)), weights=p["mix"])[0]
    n = rnd.randint(*p["words"])
    words = [rnd.choice(TOPICS[topic]) if rnd.random() < 0.6 else rnd.choice(COMMON) for _ in range(n)]
    text = " ".join(words)
    route = "fast" if rnd.random() < 0.7 else "strong"
    tokens_in = 40 + int(1.4 * n) + rnd.randint(0, 20)
    tokens_out = max(1, int(rnd.gauss(120, 30)))
    if p["quality_pass"] is not None:
        quality = 1.0 if rnd.random() < p["quality_pass"] else 0.0
    else:
        quality = graded_score(rnd, p["quality_mean"])
    event = {
        "kind": "execution", "program": "support_qa", "route": route,
        "model": "openai/gpt-4o-mini" if route == "fast" else "openai/gpt-4o",
        "status": "error" if rnd.random() < 0.01 else "ok",
        "duration_ms": p["latency_median"] * math.exp(rnd.gauss(0, 0.6)),
        "tokens_in": tokens_in, "tokens_out": tokens_out,
        "cost_usd": round(tokens_in * 1.5e-7 + tokens_out * 6e-7, 8),
        "inputs": {"question": describe(text)},
    }
    return execution_features(event, quality=quality)


def run(scenario: str, seed: int, args: argparse.Namespace) -> dict:
    """One stream: reference, quiet windows, change; returns false alarms, delay and CPU."""
    param, before, after, expected = SCENARIOS[scenario]
    rnd = random.Random(f"{scenario}/{seed}")
    det = DriftDetector(DriftConfig(seed=seed, text_test=args.text_test, reference_windows=args.reference))
    p = dict(BASE)
    if param == "quality_pass":
        p["quality_pass"] = before
    p[param] = before
    close_cpu, obs_cpu, false_alarms, alarm_features, delay, wrong = [], 0.0, 0, {}, None, 0
    total_windows = args.reference + args.quiet + args.max_delay
    n_obs = 0
    for w in range(total_windows):
        changed = w >= args.reference + args.quiet
        if changed:
            p[param] = after
        rows = [execution(rnd, p) for _ in range(args.window)]
        t0 = time.process_time()
        for row in rows:
            det.observe(row)
        obs_cpu += time.process_time() - t0
        n_obs += len(rows)
        t0 = time.process_time()
        findings = det.close_window(window_end=w)
        if det.reference_ready and w >= args.reference:
            close_cpu.append(time.process_time() - t0)
        if not changed and findings:
            false_alarms += 1
            for f in findings:
                alarm_features[f.feature] = alarm_features.get(f.feature, 0) + 1
        if changed:
            wrong += sum(f.feature in WRONG.get(scenario, ()) for f in findings)
        if changed and delay is None and any(f.feature == expected for f in findings):
            delay = w - (args.reference + args.quiet) + 1
            if scenario not in WRONG:  # else watch every changed window for misnamed findings
                break
    state_bytes = len(json.dumps(det.to_state()))
    return {"false_alarm_windows": false_alarms, "alarm_features": alarm_features, "delay": delay, "wrong": wrong,
            "close_ms": statistics.median(close_cpu) * 1e3 if close_cpu else None,
            "observe_us": obs_cpu / n_obs * 1e6, "state_kb": state_bytes / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=500, help="executions per window")
    ap.add_argument("--reference", type=int, default=5, help="windows forming the reference")
    ap.add_argument("--quiet", type=int, default=100, help="no-shift windows before the change")
    ap.add_argument("--max-delay", type=int, default=5, help="windows after the change before a miss")
    ap.add_argument("--seeds", type=int, default=3, help="independent streams per scenario")
    ap.add_argument("--text-test", choices=["classifier", "mmd"], default="mmd")
    ap.add_argument("--scenario", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = ap.parse_args()

    summary = {"window": args.window, "reference_windows": args.reference, "quiet_windows": args.quiet,
               "seeds": args.seeds, "text_test": args.text_test, "scenarios": {}}
    print(f"window={args.window} executions, reference={args.reference} windows, quiet={args.quiet} "
          f"windows/stream, seeds={args.seeds}, text test={args.text_test}")
    print(f"{'scenario':16} {'delays (windows)':18} {'false alarms':>13} {'FA rate':>8} "
          f"{'close ms':>9} {'observe us':>11} {'state KB':>9}")
    for name in args.scenario:
        runs = [run(name, seed, args) for seed in range(args.seeds)]
        fa = sum(r["false_alarm_windows"] for r in runs)
        quiet_total = args.quiet * args.seeds
        feats: dict[str, int] = {}
        for r in runs:
            for k, v in r["alarm_features"].items():
                feats[k] = feats.get(k, 0) + v
        s = {
            "delays": [r["delay"] for r in runs], "misnamed_findings": sum(r["wrong"] for r in runs),
            "false_alarm_windows": fa, "quiet_windows": quiet_total, "false_alarm_rate": fa / quiet_total,
            "false_alarm_features": feats,
            "close_window_cpu_ms_median": statistics.median(r["close_ms"] for r in runs),
            "observe_cpu_us_per_execution": statistics.median(r["observe_us"] for r in runs),
            "state_kb": max(r["state_kb"] for r in runs),
        }
        summary["scenarios"][name] = s
        delays = ",".join("miss" if d is None else str(d) for d in s["delays"])
        print(f"{name:16} {delays:18} {fa:>6}/{quiet_total:<6} {s['false_alarm_rate']:>8.3f} "
              f"{s['close_window_cpu_ms_median']:>9.1f} {s['observe_cpu_us_per_execution']:>11.1f} {s['state_kb']:>9.0f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
