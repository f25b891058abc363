#!/usr/bin/env python3
"""NAB benchmark of adaptd's streaming anomaly detector (bench/nab_detector.py).

Runs the shared NAB runner over the dev subset, with the causal check, and prints
the three profile scores (standard, reward_low_FP_rate, reward_low_FN_rate), the
causal check status and the detector's time per row. Run from the project root:

    .venv/bin/python bench/nab_bench.py [--runs 3] [--jobs 2]

Scores are deterministic; timings vary with the machine's load, so with --runs N
the median wall time and time per row are reported. Results land in
bench/out/nab/adaptd/ (NAB layout plus scores.json). Exits 1 if a run fails or the
causal check flags look-ahead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
REFERENCE = {"windowed Gaussian": 50.9, "NAB HTM (reads min/max)": 73.1,
             "ARTime (reads min/max)": 80.5}


def run_once(args) -> dict:
    """One nab_run.py run; returns its scores.json summary plus wall seconds."""
    cmd = [sys.executable, os.path.join(args.tools, "nab_run.py"),
           "--root", args.data, "--name", "adaptd", "--out", args.out,
           "--check-causal", str(args.check_causal), "--jobs", str(args.jobs),
           "--cmd", f"{args.python} bench/nab_detector.py"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"nab_run.py failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(ROOT, args.out, "adaptd", "scores.json")) as f:
        summary = json.load(f)
    causal = re.findall(r"causal check .*", proc.stdout)
    return {"summary": summary, "wall": wall, "causal_lines": causal, "stdout": proc.stdout}


def in_process_cost(data: str) -> tuple[float, float]:
    """(microseconds per Detector.update over every dev file, one core, parsing
    excluded; peak kB allocated by one detector over the longest file)."""
    import tracemalloc

    sys.path.insert(0, ROOT)
    from adaptd.streams.processors.anomaly.detectors import Detector
    from bench.nab_detector import parse_time, read_rows

    series = []
    for dirpath, _, names in sorted(os.walk(os.path.join(data, "data"))):
        for name in sorted(names):
            if name.endswith(".csv"):
                rows = read_rows(os.path.join(dirpath, name))
                series.append([(parse_time(t), float(v)) for t, v in rows])
    n, secs = 0, 0.0
    for obs in series:
        det = Detector()
        t0 = time.process_time()
        for t, x in obs:
            det.update(t, x)
        secs += time.process_time() - t0
        n += len(obs)
    longest = max(series, key=len)
    tracemalloc.start()
    det = Detector()
    for t, x in longest:
        det.update(t, x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return 1e6 * secs / n, peak / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--check-causal", type=int, default=2)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data", "nab-dev"))
    ap.add_argument("--tools", default=os.path.join(SHARED, "tools", "nab"))
    ap.add_argument("--out", default=os.path.join("bench", "out", "nab"))
    ap.add_argument("--python", default=os.path.join(".venv", "bin", "python"),
                    help="interpreter for the detector command")
    args = ap.parse_args(argv)

    results = []
    for i in range(args.runs):
        r = run_once(args)
        s = r["summary"]
        run = s["_run"]
        us_row = 1e6 * run["detector_seconds"] / max(1, run["rows"])
        print(f"run {i + 1}/{args.runs}: wall {r['wall']:.1f}s, detector {us_row:.0f} us/row "
              f"(incl. interpreter start), causal failures: {run['causal_check_failures']}",
              flush=True)
        cost = in_process_cost(os.path.join(ROOT, args.data))
        print(f"         in-process: {cost[0]:.1f} us per update (one core), "
              f"peak {cost[1]:.0f} kB for one detector over the longest file", flush=True)
        results.append((r, us_row, cost))

    r0 = results[0][0]
    s = r0["summary"]
    print()
    print(f"NAB dev subset ({s['_run']['files']} files, {s['_run']['rows']} rows), "
          f"detector: {s['_run']['cmd']}")
    for p in PROFILES:
        e = s[p]
        print(f"  {p:<20} {e['score']:6.2f}   threshold {e['threshold']:.6g}   "
              f"windows detected {e['counts']['windows_detected']}/{e['counts']['windows']}")
    for line in r0["causal_lines"]:
        print("  " + line)
    failures = [f for r, _, _ in results for f in r["summary"]["_run"]["causal_check_failures"]]
    scores_agree = all(r["summary"][p]["score"] == s[p]["score"]
                       for r, _, _ in results for p in PROFILES)
    print(f"  causal check: {'PASS' if not failures else 'FAIL ' + ', '.join(failures)}; "
          f"scores identical across runs: {scores_agree}")
    print(f"  median of {len(results)} run(s): wall {statistics.median(r['wall'] for r, _, _ in results):.1f}s, "
          f"detector {statistics.median(u for _, u, _ in results):.0f} us/row "
          f"(subprocess, incl. interpreter start), "
          f"{statistics.median(c[0] for _, _, c in results):.1f} us per update in-process, "
          f"peak {statistics.median(c[1] for _, _, c in results):.0f} kB per detector")
    print("  reference on this subset: " +
          ", ".join(f"{k} {v}" for k, v in REFERENCE.items()))
    return 1 if failures or not scores_agree else 0


if __name__ == "__main__":
    sys.exit(main())
