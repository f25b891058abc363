"""Replay benchmark: rebuild the DuckDB read model from a file log of N events.

Writes N realistic events (execution / lm_call / feedback, as ingest writes them: only
present fields plus the non-None defaults) into a FileLog once (reused by later runs with
the same N and seed), then times ``adaptd.daemon.readmodel.replay.replay`` into a fresh database, and,
to show what holds the figure back, the two halves on their own: reading the log
(FileLog.read only) and projecting records already in memory (Store.project only).

Usage: python bench/replay_bench.py [--events 1000000] [--runs 3] [--batch 100000]
                                    [--random-ids] [--dir bench/out/replay]
Prints a table and one JSON object; figures are the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adaptd.daemon.readmodel.replay import replay  # noqa: E402
from adaptd.daemon.readmodel.store import Store  # noqa: E402
from adaptd.streams.events import DEFAULTS, new_id  # noqa: E402
from adaptd.streams.log.file import FileLog  # noqa: E402

_V7_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_V7_SET = (0x7 << 76) | (0x2 << 62)


def make_events(n: int, seed: int, random_ids: bool) -> list[bytes]:
    """``n`` log records: 40% executions, 45% LM calls, 15% feedback, ~400 bytes each."""
    rnd = random.Random(seed)
    programs = [f"prog_{i}" for i in range(20)]
    models = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "together/llama-3.1-8b"]
    t0 = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    dumps, out, parent = orjson.dumps, [], new_id()
    for i in range(n):
        # Random ids (version 7 layout, unordered) model many clients with skewed clocks.
        eid = uuid.UUID(int=(rnd.getrandbits(128) & _V7_CLEAR) | _V7_SET) if random_ids else new_id()
        ts = t0 + dt.timedelta(microseconds=i * 3_000)
        roll = rnd.random()
        if roll < 0.40:
            parent, tokens = eid, rnd.randrange(50, 2000)
            ev = {"id": eid, "ts": ts, "kind": "execution", "tenant": "acme", "source": "sdk",
                  "program": rnd.choice(programs), "module": "answer", "module_type": "ChainOfThought",
                  "route": f"r{rnd.randrange(4)}", "model": rnd.choice(models), "duration_ms": rnd.expovariate(1 / 300),
                  "tokens_in": tokens, "tokens_out": rnd.randrange(5, 500), "cost_usd": tokens * 1e-6,
                  "inputs": {"question": {"type": "str", "len": rnd.randrange(10, 900)}},
                  "outputs": {"answer": {"type": "str", "len": rnd.randrange(1, 300)}}}
            if rnd.random() < 0.03:
                ev.update(status="error", error_type="TimeoutError", error_message="request timed out")
        elif roll < 0.85:
            ev = {"id": eid, "ts": ts, "kind": "lm_call", "tenant": "acme", "source": "sdk", "execution_id": parent,
                  "program": rnd.choice(programs), "route": f"r{rnd.randrange(4)}", "model": rnd.choice(models),
                  "provider": "openai", "duration_ms": rnd.expovariate(1 / 200), "tokens_in": rnd.randrange(50, 2000),
                  "tokens_out": rnd.randrange(5, 500), "cost_usd": 0.0004, "cache_hit": rnd.random() < 0.2}
        else:
            ev = {"id": eid, "ts": ts, "kind": "feedback", "tenant": "acme", "source": "sdk", "execution_id": parent,
                  "program": rnd.choice(programs), "metric": "exact_match", "score": rnd.random()}
        out.append(dumps({**DEFAULTS[ev["kind"]], **ev}))
    return out


def build_log(path: Path, n: int, seed: int, random_ids: bool) -> None:
    """Fill a FileLog at ``path`` with ``n`` events, unless one with exactly ``n`` is there."""
    if path.exists():
        with FileLog(path) as log:
            if log.end_offset() == n:
                return
        shutil.rmtree(path)
    started = time.perf_counter()
    values = make_events(n, seed, random_ids)
    with FileLog(path) as log:
        for i in range(0, n, 10_000):
            log.append(values[i:i + 10_000])
    print(f"built log of {n} events ({sum(map(len, values)) / n:.0f} B each) in {time.perf_counter() - started:.1f}s")


def read_all(log: FileLog, batch: int) -> list:
    out, offset = [], log.start_offset()
    while chunk := log.read(offset, batch):
        out.append(chunk)
        offset = chunk[-1].offset + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--random-ids", action="store_true", help="random (not time-ordered) UUIDv7 ids")
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out" / "replay")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    log_dir = args.dir / f"log-{args.events}-{args.seed}{'-random' if args.random_ids else ''}"
    build_log(log_dir, args.events, args.seed, args.random_ids)

    replay_rates, read_rates, project_rates = [], [], []
    with FileLog(log_dir) as log:
        for run in range(args.runs):
            stats = replay(log, args.dir / "replayed.duckdb", batch=args.batch, overwrite=True)
            replay_rates.append(stats.events_per_s)

            started = time.perf_counter()
            batches = read_all(log, args.batch)
            read_rates.append(args.events / (time.perf_counter() - started))

            db = args.dir / "project-only.duckdb"
            for p in (db, db.with_name(db.name + ".wal")):
                p.unlink(missing_ok=True)
            started = time.perf_counter()
            with Store(db, bulk=True) as store:
                for records in batches:
                    store.project(records)
            project_rates.append(args.events / (time.perf_counter() - started))
            del batches
            print(f"run {run + 1}: replay {replay_rates[-1]:,.0f} ev/s | log read only {read_rates[-1]:,.0f} ev/s"
                  f" | project only {project_rates[-1]:,.0f} ev/s")
    result = {
        "events": args.events, "batch": args.batch, "runs": args.runs, "random_ids": args.random_ids,
        "replay_events_per_s": round(statistics.median(replay_rates)),
        "log_read_events_per_s": round(statistics.median(read_rates)),
        "project_only_events_per_s": round(statistics.median(project_rates)),
        "rows": stats.inserted, "target_events_per_s": 500_000,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
