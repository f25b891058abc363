"""Ingest benchmark: events posted over HTTP in batches, acked and projected end to end.

Starts a real daemon (``adaptd up``) in a temporary data dir, pre-builds every request body
(so the client spends its CPU on sending, not on JSON), posts them from a few concurrent
connections, and reports:

- events/s acknowledged (durable in the log) and events/s projected into DuckDB,
  both over the whole run from the first post;
- p50 / p99 latency of one acknowledged batch;
- the daemon's peak RSS (VmHWM).

Usage: python bench/ingest_bench.py [--events 1000000] [--batch 1000] [--connections 4]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import daemon_proc  # bench/ is on sys.path when a script here runs
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptd.streams.events import new_id

REPO = Path(__file__).resolve().parents[1]


def make_bodies(events: int, batch: int, seed: int = 7) -> list[bytes]:
    """Request bodies of realistic execution / lm_call / feedback events (ids unique)."""
    rng = random.Random(seed)
    bodies = []
    programs = [f"prog{i}" for i in range(20)]
    n = 0
    while n < events:
        items = []
        for _ in range(min(batch, events - n)):
            eid = str(new_id())
            r = rng.random()
            if r < 0.6:
                items.append({"id": eid, "ts": "2026-11-22T10:00:00.123456Z", "kind": "execution",
                              "program": rng.choice(programs), "module": "predict", "route": f"r{rng.randrange(4)}",
                              "model": "openai/gpt-4o-mini", "duration_ms": rng.uniform(5, 900),
                              "status": "ok" if rng.random() > 0.02 else "error", "tokens_in": rng.randrange(50, 900),
                              "tokens_out": rng.randrange(5, 200), "cost_usd": rng.uniform(0, 0.002),
                              "inputs": {"question": {"type": "str", "len": rng.randrange(10, 400)}}})
            elif r < 0.9:
                items.append({"id": eid, "ts": "2026-11-22T10:00:00.123456Z", "kind": "lm_call",
                              "model": "openai/gpt-4o-mini", "program": rng.choice(programs), "duration_ms": rng.uniform(5, 900),
                              "tokens_in": rng.randrange(50, 900), "tokens_out": rng.randrange(5, 200), "cache_hit": False})
            else:
                items.append({"id": eid, "ts": "2026-11-22T10:00:00.123456Z", "kind": "feedback",
                              "execution_id": eid, "metric": "exact_match", "score": rng.random()})
            n += 1
        bodies.append(orjson.dumps(items))
    return bodies




def run(events: int, batch: int, connections: int, fsync: str) -> dict[str, object]:
    bodies = make_bodies(events, batch)
    with daemon_proc.daemon(fsync, prefix="adaptd-bench-") as (proc, url):
        latencies: list[float] = []
        next_body = iter(bodies)
        lock = threading.Lock()
        acked = 0
        failures = 0

        def worker() -> None:
            nonlocal acked, failures
            with httpx.Client(base_url=url, timeout=60, headers={"Content-Type": "application/json"}) as client:
                while True:
                    with lock:
                        body = next(next_body, None)
                    if body is None:
                        return
                    t = time.perf_counter()
                    answer = client.post("/v1/events", content=body)
                    dt = time.perf_counter() - t
                    with lock:
                        if answer.status_code == 200:
                            acked += answer.json()["accepted"]
                            latencies.append(dt)
                        else:
                            failures += 1

        start = time.perf_counter()
        ack_elapsed, projected_elapsed, stats = daemon_proc.drive(url, worker, connections, start)
        rss = daemon_proc.peak_rss_mb(proc.pid)
        latencies.sort()
        return {
            "events": events, "batch": batch, "connections": connections, "fsync": fsync,
            "acked": acked, "failed_requests": failures,
            "acked_events_per_s": round(acked / ack_elapsed),
            "projected_events_per_s": round(stats["projector_position"] / projected_elapsed),
            "ack_latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "ack_latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "daemon_peak_rss_mb": round(rss, 1),
            "seconds_to_ack": round(ack_elapsed, 2), "seconds_to_project": round(projected_elapsed, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--fsync", choices=["batch", "interval"], default="batch")
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.batch, args.connections, args.fsync)))


if __name__ == "__main__":
    main()
