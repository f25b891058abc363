"""Anomaly-processor benchmark: CPU cost of the error-burst fast path per event and of the
window anomaly processor per window, and their snapshot size per key.

The stream is ``history_bench``'s (pre-parsed ``EventBatch``es, 50 % executions / 35 %
LM calls / 15 % feedback, 5 % errors, up to 1 s of disorder), plus a 30 % error burst
on ``--burst-keys`` routes halfway through, so incidents open, update and resolve while
the clock runs.  Parsing and watermarks are done before timing, as in ``history_bench``.

- fast path: ``ErrorBurstProcessor.process`` over all batches, CPU seconds per event;
- window path: the history processor's closed windows (10 s and 1 min) are collected
  first (untimed), then ``AnomalyProcessor.process`` is timed over them, CPU per window
  and per source event.

Usage: python bench/anomaly_bench.py [--events 1000000] [--keys 10000] [--rate 100000]
                                     [--batch 50000] [--runs 3]
Prints one line per run and a JSON summary (medians).
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from history_bench import make_batches  # noqa: E402

from adaptd.streams.processors.anomaly.error_burst import ErrorBurstProcessor  # noqa: E402
from adaptd.streams.processors.anomaly.processor import AnomalyProcessor  # noqa: E402
from adaptd.streams.processors.base import EXECUTION, LM_CALL  # noqa: E402
from adaptd.streams.processors.history.processor import HistoryProcessor  # noqa: E402


def add_burst(batches: list, routes: int, seed: int = 11) -> None:
    """Raise the error rate to 30 % on the events of ``routes`` route codes from halfway on."""
    rng = np.random.default_rng(seed)
    half = len(batches) // 2
    for batch in batches[half:half + max(1, len(batches) // 10)]:
        hit = (batch.route.codes < routes) & ((batch.kind == EXECUTION) | (batch.kind == LM_CALL))
        batch.status_error = batch.status_error | (hit & (rng.random(len(batch)) < 0.3))


def fast_path(batches: list) -> tuple[float, int, ErrorBurstProcessor, object]:
    proc = ErrorBurstProcessor()
    state = proc.initial_state()
    signals = 0
    cpu = time.process_time()
    for batch in batches:
        state, out = proc.process(state, batch, int(batch.wm[-1]))
        signals += len(out)
    return time.process_time() - cpu, signals, proc, state


def windows_of(batches: list) -> list[list[dict]]:
    proc = HistoryProcessor(("10s", "1m"))
    state = proc.initial_state()
    out = []
    for batch in batches:
        state, windows = proc.process(state, batch, int(batch.wm[-1]))
        out.append(windows)
    return out


def window_path(windows: list[list[dict]]) -> tuple[float, int, AnomalyProcessor, object]:
    proc = AnomalyProcessor()
    state = proc.initial_state()
    signals = 0
    cpu = time.process_time()
    for step in windows:
        state, out = proc.process(state, step, 0)
        signals += len(out)
    return time.process_time() - cpu, signals, proc, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100_000, help="events per second of event time")
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--burst-keys", type=int, default=5, help="route codes that get a 30 %% error burst")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    t = time.perf_counter()
    batches = make_batches(args.events, args.keys, args.rate, args.batch)
    add_burst(batches, args.burst_keys)
    windows = windows_of(batches)
    n_windows = sum(len(w) for w in windows)
    gc.freeze()
    print(f"built {args.events} events, {n_windows} windows (10s, 1m) in {time.perf_counter() - t:.1f}s", flush=True)
    fast_us, win_us, fast_state, win_state = [], [], None, None
    for run in range(args.runs):
        cpu, signals, fproc, fast_state = fast_path(batches)
        fast_us.append(cpu / args.events * 1e6)
        wcpu, wsignals, wproc, win_state = window_path(windows)
        win_us.append(wcpu / max(1, n_windows) * 1e6)
        print(f"run {run + 1}: fast path {cpu:.2f} CPU-s = {fast_us[-1]:.2f} us/event ({signals} signals);"
              f" windows {wcpu:.2f} CPU-s = {win_us[-1]:.1f} us/window ({wsignals} signals)", flush=True)
    fast_blob = pickle.dumps(fast_state, protocol=5)
    win_blob = pickle.dumps(win_state, protocol=5)
    keys = fproc.metrics(fast_state)["keys"]
    win_keys = len({sid[0] for sid in win_state.series})
    summary = {
        "events": args.events, "keys": keys, "rate": args.rate, "batch": args.batch, "windows": n_windows,
        "fast_path_us_per_event_median": round(statistics.median(fast_us), 3),
        "fast_path_us_per_event_runs": [round(u, 3) for u in fast_us],
        "window_path_us_per_window_median": round(statistics.median(win_us), 1),
        "window_path_us_per_window_runs": [round(u, 1) for u in win_us],
        "window_path_us_per_event_median": round(statistics.median(win_us) * n_windows / args.events, 3),
        "fast_path_metrics": fproc.metrics(fast_state), "window_path_metrics": wproc.metrics(win_state),
        "fast_path_snapshot_bytes_per_key": round(len(fast_blob) / max(1, keys)),
        "window_path_snapshot_bytes_per_key": round(len(win_blob) / max(1, win_keys)),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
