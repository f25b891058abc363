"""History-processor benchmark: events/s on one core, and memory per key with 10,000 keys.

Feeds the processor alone pre-parsed ``EventBatch``es (parsing the log and the watermark
are the runtime's work and are done before the clock starts), the way the runtime calls
it.  The stream: ``--keys`` keys (programs x modules x routes, plus the LM-call keys those
routes make), 50 % executions / 35 % LM calls / 15 % feedback on recent executions, 5 %
errors, log-normal latencies, event time advancing at ``--rate`` events per second with
up to 1 s of disorder (so windows close and are emitted as in a live daemon).

Memory: after a run the state is pickled (the snapshot the runtime writes) and loaded
again under tracemalloc, which gives the bytes it holds in memory; the id maps for
re-sends and the feedback join are global (bounded by event counts, not keys), so they
are reported apart from the per-key figure.

Throughput is reported per wall-clock second and per CPU second of this process
(``time.process_time``): on a machine shared with other work the CPU figure is the one
that says what one core does.  numpy is single-threaded here (no BLAS calls).

Usage: python bench/history_bench.py [--events 1000000] [--keys 10000] [--rate 100000]
                                     [--batch 50000] [--runs 3]
Prints one line per run and a JSON summary (median of the runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adaptd.streams.processors.base import EXECUTION, FEEDBACK, LM_CALL, NO_WATERMARK, Cat, EventBatch  # noqa: E402
from adaptd.streams.processors.history.processor import HistoryProcessor  # noqa: E402
from adaptd.streams.processors.windows import watermarks  # noqa: E402

T0_US = 1_795_000_000_000_000  # 2026-11-18
LATENESS_US = 5_000_000


def make_batches(n: int, keys: int, rate: float, batch: int, seed: int = 7) -> list[EventBatch]:
    """The stream as pre-parsed batches (vectorised; ids are unique strings)."""
    rng = np.random.default_rng(seed)
    programs, modules = 50, 20
    routes = max(1, keys // (programs * modules))
    k = rng.integers(0, programs * modules * routes, n)
    program, module, route = k % programs, (k // programs) % modules, k // (programs * modules)
    roll = rng.random(n)
    kind = np.where(roll < 0.5, EXECUTION, np.where(roll < 0.85, LM_CALL, FEEDBACK)).astype(np.int8)
    ts = T0_US + (np.arange(n) * (1e6 / rate)).astype(np.int64) - rng.integers(0, 1_000_000, n)
    wm, _ = watermarks(ts, np.zeros(n, np.int64), NO_WATERMARK, LATENESS_US, None)
    ids = [f"{i:08x}-0000-7000-8000-{seed:012x}" for i in range(n)]
    # feedback names an execution among the previous ~20,000 events
    exec_pos = np.flatnonzero(kind == EXECUTION)
    target = np.searchsorted(exec_pos, np.arange(n)) - 1 - rng.integers(0, 10_000, n)
    parent = np.where(target >= 0, exec_pos[np.clip(target, 0, None)], -1)
    is_lm, is_fb = kind == LM_CALL, kind == FEEDBACK
    error = (rng.random(n) < 0.05) & ~is_fb
    duration = np.where(is_fb, np.nan, rng.lognormal(np.where(is_lm, 5.5, 6.0), 0.8))
    tokens_in = np.where(is_fb, np.nan, rng.integers(50, 3000, n).astype(float))
    tokens_out = np.where(is_fb, np.nan, rng.integers(5, 600, n).astype(float))
    cost = np.where(is_fb, np.nan, tokens_in * 1.5e-7 + tokens_out * 6e-7)
    cache = np.where(is_lm, rng.integers(0, 2, n), -1).astype(np.int8)
    score = np.where(is_fb, rng.random(n), np.nan)
    names = {
        "tenant": ["acme"], "program": [f"prog_{i}" for i in range(programs)],
        "module": [f"module_{i}" for i in range(modules)], "route": [f"route_{i}" for i in range(routes)],
        "model": ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"], "error_type": ["Timeout", "RateLimit", "Parse"],
    }
    codes = {
        "tenant": np.where(is_fb, -1, 0), "program": np.where(is_fb, -1, program),
        "module": np.where(is_fb | is_lm, -1, module), "route": np.where(is_fb, -1, route),
        "model": np.where(is_fb, -1, route % 2), "error_type": np.where(error, rng.integers(-1, 3, n), -1),
    }
    codes["tenant"] = np.zeros(n, np.int64)  # every event names its tenant
    out = []
    for a in range(0, n, batch):
        b = min(n, a + batch)
        s = slice(a, b)
        out.append(EventBatch(
            kind=kind[s], id=ids[a:b], ts=ts[s], status_error=error[s], duration_ms=duration[s],
            tokens_in=tokens_in[s], tokens_out=tokens_out[s], cost_usd=cost[s], cache_hit=cache[s], score=score[s],
            probability=np.full(b - a, np.nan),
            execution_id=[ids[p] if f and p >= 0 else None for p, f in zip(parent[s].tolist(), is_fb[s].tolist())],
            offset=np.arange(a, b, dtype=np.int64), append_ms=np.zeros(b - a, np.int64), wm=wm[s],
            **{name: Cat(codes[name][s].astype(np.int32), names[name]) for name in names},
        ))
    return out


def one_run(batches: list[EventBatch]) -> tuple[float, float, int, HistoryProcessor, object]:
    proc = HistoryProcessor()
    state = proc.initial_state()
    windows = 0
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        state, out = proc.process(state, batch, int(batch.wm[-1]))
        windows += len(out)
    return time.perf_counter() - started, time.process_time() - cpu, windows, proc, state


def memory(state) -> dict[str, float]:
    """Bytes the state holds in memory (loaded from its pickle under tracemalloc)."""
    blob = pickle.dumps(state, protocol=5)
    ids = pickle.dumps((state.recent, state.exec_key), protocol=5)
    tracemalloc.start()
    loaded = pickle.loads(blob)
    total = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    id_maps = pickle.loads(ids)
    id_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del loaded, id_maps
    keys = len(state.keys.keys)
    return {"keys": keys, "state_bytes": total, "id_map_bytes": id_bytes, "id_map_entries":
            sum(map(len, state.recent.values())) + sum(map(len, state.exec_key.values())), "bytes_per_key": round((total - id_bytes) / keys),
            "snapshot_bytes": len(blob), "open_windows": {t.name: t.open_windows() for t in state.tables},
            "sketch_entries": {t.name: int(len(t.sketch.codes) + t.sketch.pending) for t in state.tables}}


def parse_rate(n: int, batch: int) -> float:
    """Records/s of ``parse_records`` (the runtime's step before the processor) on canonical records."""
    import orjson

    from adaptd.streams.events import new_id
    from adaptd.streams.log.base import Record
    from adaptd.streams.processors.parse import parse_records

    rng = np.random.default_rng(3)
    values = []
    for i in range(n):
        ts = f"2026-11-22T10:{(i // 60_000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}000+00:00"
        values.append(orjson.dumps({
            "id": str(new_id()), "ts": ts, "v": 1, "tenant": "acme", "source": "sdk", "attrs": {},
            "kind": "execution", "program": f"prog_{i % 50}", "module": "answer", "route": f"r{i % 4}",
            "model": "openai/gpt-4o-mini", "status": "ok", "duration_ms": float(rng.lognormal(6, 0.8)),
            "tokens_in": 812, "tokens_out": 64, "cost_usd": 0.00016, "inputs": {"question": {"len": 42}}}))
    records = [Record(i, v, 0, 1_795_000_000_000) for i, v in enumerate(values)]
    started = time.process_time()
    for a in range(0, n, batch):
        parse_records(records[a:a + batch])
    return n / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100_000, help="events per second of event time")
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parse", type=int, default=0, help="also time parsing this many log records")
    args = parser.parse_args()
    t = time.perf_counter()
    batches = make_batches(args.events, args.keys, args.rate, args.batch)
    # The pre-built input stays resident only in the benchmark: keep the garbage collector
    # from walking its millions of id strings (a live runtime holds one batch at a time).
    gc.freeze()
    print(f"built {args.events} events in {len(batches)} batches in {time.perf_counter() - t:.1f}s", flush=True)
    rates, cpu_rates, state = [], [], None
    for run in range(args.runs):
        seconds, cpu, windows, proc, state = one_run(batches)
        rates.append(args.events / seconds)
        cpu_rates.append(args.events / cpu)
        print(f"run {run + 1}: {seconds:.2f}s wall, {cpu:.2f}s CPU  {rates[-1]:,.0f} events/s wall"
              f"  {cpu_rates[-1]:,.0f} events/CPU-s  {windows} windows emitted", flush=True)
    summary = {"events": args.events, "keys_requested": args.keys, "rate": args.rate, "batch": args.batch,
               "events_per_s_median": round(statistics.median(rates)), "events_per_s_runs": [round(r) for r in rates],
               "events_per_cpu_s_median": round(statistics.median(cpu_rates)),
               "events_per_cpu_s_runs": [round(r) for r in cpu_rates],
               "event_time_s": args.events / args.rate, "metrics": proc.metrics(state), "memory": memory(state)}
    if args.parse:
        summary["parse_records_per_cpu_s"] = round(parse_rate(args.parse, args.batch))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
