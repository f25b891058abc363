"""Events/s of the processors as Faust workers (`adaptd worker`) on librdkafka's mock cluster.

Usage::

    .venv/bin/python bench/kafka_bench.py [--events 60000] [--programs 48] [--workers 1 2]
        [--runs 3] [--batch 2000]

Per run: a fresh namespace on one mock cluster (started here, in-process), N workers
started and waited for until the group has divided the 4 partitions, then the events
are produced to the events topic (keyed by (tenant, program), as the daemon does) and
the clock runs until the workers' consumer group has committed the end of every
partition.  Reported: the median events/s of the runs, per worker count, and the
producing rate alone.  Committed offsets trail processing by up to the commit interval
(0.5 s here), which the figure includes.

THE MOCK CLUSTER IS NOT A PRODUCTION BROKER: it is librdkafka's in-memory test broker,
living in this process, on loopback, without replication or disk.  The figures compare
one worker with two on the same machine; they say nothing of a real cluster's limits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kafka_broker import MockCluster, WorkerProcess  # noqa: E402

from adaptd.streams.log import open_log  # noqa: E402


def make_events(n: int, programs: int) -> list[bytes]:
    """``n`` executions over ``programs`` programs, 100 per second of event time."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    return [orjson.dumps({
        "id": str(uuid.uuid4()), "kind": "execution", "tenant": "default", "program": f"program-{i % programs}",
        "module": "answer", "route": "gpt-4o-mini", "ts": (start + dt.timedelta(milliseconds=10 * i)).isoformat(),
        "status": "error" if i % 97 == 0 else "ok", "duration_ms": 50.0 + i % 200,
    }) for i in range(n)]


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The consumer group's committed offsets per partition (-1001 where none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def one_run(cluster: MockCluster, workdir: Path, workers: int, events: list[bytes], batch: int) -> tuple[float, float]:
    """(events/s processed, events/s produced) of one run with ``workers`` workers."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{cluster.bootstrap}/{namespace}"
    log = open_log(url, workdir)
    procs = [WorkerProcess(url, workdir / f"{namespace}-w{i}", commit_interval=0.5, batch=batch)
             for i in range(workers)]
    try:
        for w in procs:
            w.start()
        deadline = time.monotonic() + 120
        while True:  # until the group divided the partitions among all workers
            owned = [w.assigned() for w in procs]
            if all(owned) and sorted(p for o in owned for p in o) == list(range(4)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not divide the partitions within 120 s")
            time.sleep(0.2)
        started = time.perf_counter()
        for i in range(0, len(events), 5000):
            log.append(events[i:i + 5000], timeout=60)
        produced = time.perf_counter() - started
        ends = [log.end_offset(p) for p in range(4)]
        topic, group = f"{namespace}.events", f"{namespace}-processors"
        deadline = time.monotonic() + 600
        while committed(cluster.bootstrap, group, topic, 4) != ends:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not finish within 600 s")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        return len(events) / elapsed, len(events) / produced
    finally:
        for w in procs:
            w.stop(timeout=20)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--programs", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    events = make_events(args.events, args.programs)
    cluster = MockCluster()
    print(f"mock cluster (librdkafka, in-process, NOT a production broker) at {cluster.bootstrap};"
          f" {args.events} events, {args.programs} programs, 4 partitions, {args.runs} runs each")
    with tempfile.TemporaryDirectory(prefix="adaptd-kafka-bench-") as tmp:
        for workers in args.workers:
            rates, produce_rates = [], []
            for run in range(args.runs):
                rate, produce_rate = one_run(cluster, Path(tmp), workers, events, args.batch)
                rates.append(rate)
                produce_rates.append(produce_rate)
                print(f"  workers={workers} run={run + 1}: {rate:,.0f} events/s processed"
                      f" (produced at {produce_rate:,.0f}/s)", flush=True)
            print(f"workers={workers}: median {statistics.median(rates):,.0f} events/s"
                  f" (runs: {', '.join(f'{r:,.0f}' for r in rates)});"
                  f" produce median {statistics.median(produce_rates):,.0f} events/s", flush=True)
    cluster.close()


if __name__ == "__main__":
    main()
