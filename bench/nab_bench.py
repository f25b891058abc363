#!/usr/bin/env python3
"""NAB benchmark of adaptd's streaming anomaly detector (bench/nab_detector.py).

Prints, first, the figure to quote: the leave-one-category-out (LOCO) score of the
dev subset (bench/nab_loco.py): per held-out category, the detector parameters (from
the declared grid, printed) and the threshold are chosen on the other three categories
and the held-out one is scored at that fixed threshold; the four held-out results are
pooled as NAB pools files (window-weighted). The held-out score of the standard profile
is re-scored through ``nab_score.py --categories H --thresholds`` as a cross-check.

Then it runs the shared NAB runner over the whole dev subset with the default
parameters, with the causal check, and prints the three profile scores (standard,
reward_low_FP_rate, reward_low_FN_rate) at thresholds picked after the fact on the same
data (the all-data figure: a fit, not an estimate), the causal check status and the
detector's time per row. Run from the project root:

    .venv/bin/python bench/nab_bench.py [--runs 3] [--jobs 2] [--no-loco | --loco-only]

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
    from bench.nab_detector import parse_time, parse_value, read_rows

    series = []
    for dirpath, _, names in sorted(os.walk(os.path.join(data, "data"))):
        for name in sorted(names):
            if name.endswith(".csv"):
                rows = read_rows(os.path.join(dirpath, name))
                series.append([(parse_time(t), parse_value(v)) for t, v in rows])
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


def write_results(path: str, rows, scores) -> None:
    """A results CSV in NAB's layout (timestamp,value,anomaly_score)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("timestamp,value,anomaly_score\n")
        f.writelines(f"{t},{v},{s!r}\n" for (t, v), s in zip(rows, scores))


def cli_heldout_score(args, nab_score, corpus, fold, scores) -> float:
    """Score of ``fold``'s held-out category through ``nab_score.py --thresholds``."""
    from bench.nab_detector import read_rows

    base = os.path.join(ROOT, args.out, "loco", fold.heldout)
    det_dir = os.path.join(base, "adaptd")
    for df in corpus.files:
        if df.rel.startswith(fold.heldout + "/"):
            rows = read_rows(os.path.join(corpus.root, "data", *df.rel.split("/")))
            cat, name = df.rel.split("/")
            write_results(os.path.join(det_dir, cat, f"adaptd_{name}"), rows, scores[df.rel])
    thr_path = os.path.join(base, "thresholds.json")
    with open(thr_path, "w") as f:
        json.dump({"adaptd": {p: {"threshold": fold.threshold} for p in PROFILES}}, f)
    out_json = os.path.join(base, "heldout.json")
    proc = subprocess.run(
        [sys.executable, os.path.join(args.tools, "nab_score.py"), "--root", args.data,
         "--results", det_dir, "--categories", fold.heldout, "--thresholds", thr_path,
         "--json", out_json], cwd=ROOT, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nab_score.py failed:\n{proc.stderr[-2000:]}")
    with open(out_json) as f:
        return json.load(f)["adaptd"]["standard"]["score"]


def run_loco(args) -> bool:
    """Print the LOCO figures for every profile; True when the CLI cross-check agrees."""
    sys.path.insert(0, ROOT)
    from bench import nab_loco, nab_null
    from bench.nab_detector import parse_time, parse_value, read_rows

    nab_score = nab_loco.load_nab_score(args.tools)
    data = os.path.join(ROOT, args.data)
    corpus = nab_score.Corpus(data)
    profiles = nab_score.load_profiles(None, data)
    series = nab_loco.read_series(corpus, parse_time, parse_value, read_rows)
    grid = nab_loco.GRID
    print(f"LOCO grid ({len(nab_loco.grid_points(grid))} points): "
          + ", ".join(f"{k} in {list(v)}" for k, v in grid.items()), flush=True)
    null = nab_null.series()
    print(f"  false positives counted on {len(null)} anomaly-free synthetic series "
          f"({', '.join(nab_null.FAMILIES)}; bench/nab_null.py), "
          + ("in the training objective" if args.null_objective else "not in the objective"),
          flush=True)
    t0 = time.process_time()
    cands = nab_loco.candidates_for(series, grid, null)
    if not args.null_objective:     # the objective sees only the training categories
        objective = [(prm, sc, None) for prm, sc, _ in cands]
    else:
        objective = cands
    print(f"  scored {len(cands)} grid points in {time.process_time() - t0:.0f}s CPU", flush=True)
    agree = True
    for p in PROFILES:
        folds = nab_loco.loco(nab_score, corpus, objective, profiles[p])
        print(f"\nLOCO {p}: held-out category at params + threshold chosen on the other three")
        for f in folds:
            thr = "never" if f.threshold is None else f"{f.threshold:.6g}"
            nsc = next(n for prm, _, n in cands if prm == f.params)
            n_fp = sum(nab_null.false_positives(v, f.threshold) for v in nsc.values())
            rows = sum(len(v) - nab_null.probation(len(v)) for v in nsc.values())
            fp = f", synthetic FP/10k rows {1e4 * n_fp / rows:.1f}"
            print(f"  {f.heldout:<22} {f.score:6.2f}   (train {f.train_score:6.2f}, "
                  f"threshold {thr}, windows detected {f.detected}/{f.windows}{fp}) "
                  f"params {f.params}")
        mean = statistics.mean(f.score for f in folds)
        print(f"  {'LOCO mean':<22} {nab_loco.pooled(folds):6.2f}   window-weighted "
              f"(NAB pooling of the 4 held-out results); plain mean {mean:.2f}")
        if p == "standard":
            for f in folds:
                scores = next(sc for prm, sc, _ in cands if prm == f.params)
                cli = cli_heldout_score(args, nab_score, corpus, f, scores)
                ok = abs(cli - f.score) < 1e-9
                agree &= ok
                print(f"  cross-check nab_score.py --thresholds {f.heldout}: {cli:.2f} "
                      f"{'(same)' if ok else '(DIFFERS)'}")
    return agree


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
    ap.add_argument("--no-loco", action="store_true", help="skip the LOCO evaluation")
    ap.add_argument("--loco-only", action="store_true", help="only the LOCO evaluation")
    ap.add_argument("--null-objective", action="store_true",
                    help="count the false positives on anomaly-free synthetic series "
                    "(bench/nab_null.py) in the LOCO training objective")
    args = ap.parse_args(argv)

    loco_ok = True
    if not args.no_loco:
        loco_ok = run_loco(args)
        if args.loco_only:
            return 0 if loco_ok else 1
        print()
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
    return 1 if failures or not scores_agree or not loco_ok else 0


if __name__ == "__main__":
    sys.exit(main())
