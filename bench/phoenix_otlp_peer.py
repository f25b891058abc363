"""Peer benchmark: OTLP/HTTP trace ingest of an Arize Phoenix server, for comparison with otlp_bench.py.

Posts the same request bodies as ``otlp_bench.py`` (``make_bodies``: DSPy-like
OpenInference traces, 5 spans each, every span id unique) as protobuf
``ExportTraceServiceRequest``s to an already-running Phoenix server's ``POST /v1/traces``
from ``--connections`` concurrent connections for ``--seconds``, then reports one JSON line:

- ``acked_spans_per_s``: spans in requests answered HTTP 200 / time from the first post
  until every connection finished its last request. Phoenix answers 200 *before* it
  decodes or stores the spans (they go to an in-memory queue), so this is not durable:
  spans still queued when the server stops are lost (it drains for 5 s on shutdown).
- ``stored_spans_per_s``: spans Phoenix persisted (rows in its SQLite ``spans`` table,
  read-only, if ``--db`` is given; else the sum of ``recordCount`` over projects from its
  GraphQL API) / time from the first post until that count stopped growing (it reached
  the acked count, or did not change for ``--settle`` s; polled at most ``--poll-max`` s
  after posting ended; ``stored_still_growing`` says whether that cap cut it short).
- requests refused: Phoenix answers 503 when its span queue is full
  (``PHOENIX_MAX_SPANS_QUEUE_SIZE``, default 20,000 spans); such a request is retried with
  the same body after ``--backoff`` s, like an OTLP exporter would, and counted.
- with ``--pid`` (the Phoenix server's pid): its CPU seconds and peak RSS.

Phoenix is not started here; run it from its own venv, e.g.::

    PHOENIX_WORKING_DIR=/tmp/phoenix-bench/data PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=6006 \\
        /tmp/phoenix-bench/venv/bin/phoenix serve &
    /tmp/phoenix-bench/venv/bin/python bench/phoenix_otlp_peer.py --url http://127.0.0.1:6006 \\
        --seconds 20 --db /tmp/phoenix-bench/data/phoenix.db --pid <phoenix pid>

The venv running this script needs ``httpx`` and ``opentelemetry-proto`` (it imports
``otlp_bench``, which imports ``daemon_proc`` from this folder); use a fresh Phoenix data
directory per run so the stored count starts at zero (a non-zero start is subtracted).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from otlp_bench import make_bodies


def stored_counter(url: str, db: str | None):
    """A function returning how many spans Phoenix has persisted so far."""
    if db:
        uri = f"file:{Path(db).resolve()}?mode=ro"

        def count() -> int:
            with sqlite3.connect(uri, uri=True, timeout=30) as conn:
                return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        return count
    client = httpx.Client(base_url=url, timeout=60)

    def count() -> int:
        answer = client.post("/graphql", json={"query": "{ projects { edges { node { recordCount } } } }"})
        answer.raise_for_status()
        return sum(e["node"]["recordCount"] for e in answer.json()["data"]["projects"]["edges"])
    return count


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(args: argparse.Namespace) -> dict[str, object]:
    bodies = make_bodies(args.requests, args.spans)
    count = stored_counter(args.url, args.db)
    baseline = count()
    cpu_before = proc_cpu_s(args.pid) if args.pid else None
    next_body = iter(bodies)
    lock = threading.Lock()
    latencies: list[float] = []
    acked_spans = refused = failures = 0
    statuses: dict[str, int] = {}
    start = time.perf_counter()
    stop_at = start + args.seconds

    def worker() -> None:
        nonlocal acked_spans, refused, failures
        headers = {"Content-Type": "application/x-protobuf"}
        with httpx.Client(base_url=args.url, timeout=120, headers=headers) as client:
            body = None
            while time.perf_counter() < stop_at:
                if body is None:
                    with lock:
                        body = next(next_body, None)
                    if body is None:
                        return
                t = time.perf_counter()
                try:
                    answer = client.post("/v1/traces", content=body)
                    status = str(answer.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                elapsed = time.perf_counter() - t
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "200":
                        acked_spans += args.spans
                        latencies.append(elapsed)
                        body = None
                    elif status == "503":
                        refused += 1  # queue full: retry the same body
                    else:
                        failures += 1
                        body = None
                if status != "200":
                    time.sleep(args.backoff)

    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ack_elapsed = time.perf_counter() - start

    # Poll the stored count until it reaches the acked count or stops growing.
    stored = count() - baseline
    last_growth = time.perf_counter()
    poll_until = last_growth + args.poll_max
    still_growing = False
    while stored < acked_spans:
        now = time.perf_counter()
        if now - last_growth >= args.settle:
            break
        if now >= poll_until:
            still_growing = True
            break
        time.sleep(0.5)
        n = count() - baseline
        if n > stored:
            stored, last_growth = n, time.perf_counter()
    stored_elapsed = last_growth - start

    latencies.sort()
    result: dict[str, object] = {
        "peer": "arize-phoenix", "seconds": args.seconds, "spans_per_request": args.spans,
        "connections": args.connections, "requests_acked": len(latencies), "spans_acked": acked_spans,
        "spans_stored": stored, "requests_refused_503": refused, "failed_requests": failures,
        "statuses": statuses, "bodies_exhausted": len(latencies) + failures >= len(bodies),
        "acked_spans_per_s": round(acked_spans / ack_elapsed),
        "stored_spans_per_s": round(stored / stored_elapsed) if stored else 0,
        "stored_still_growing": still_growing,
        "ack_latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "ack_latency_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1)
        if latencies else None,
        "seconds_to_ack": round(ack_elapsed, 2), "seconds_to_store": round(stored_elapsed, 2),
        "stored_count_source": "sqlite" if args.db else "graphql",
    }
    if args.pid:
        cpu = proc_cpu_s(args.pid) - cpu_before
        result.update({"server_cpu_s": round(cpu, 1),
                       "server_cpu_us_per_stored_span": round(cpu / stored * 1e6, 1) if stored else None,
                       "server_peak_rss_mb": round(proc_peak_rss_mb(args.pid), 1)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="Phoenix base URL, e.g. http://127.0.0.1:6006")
    parser.add_argument("--seconds", type=float, default=20.0, help="posting window")
    parser.add_argument("--spans", type=int, default=1000, help="spans per request")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="pre-built unique requests (upper bound)")
    parser.add_argument("--db", help="Phoenix's SQLite file (counted read-only); default: GraphQL recordCount")
    parser.add_argument("--pid", type=int, help="Phoenix server pid, to report its CPU time and peak RSS")
    parser.add_argument("--backoff", type=float, default=0.25, help="seconds to wait after a non-200")
    parser.add_argument("--settle", type=float, default=30.0, help="stored count unchanged this long = done")
    parser.add_argument("--poll-max", type=float, default=120.0, help="max seconds to poll the stored count")
    print(json.dumps(run(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
