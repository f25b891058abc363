"""Events/s of the processors as Faust workers (`adaptd worker`) on librdkafka's mock cluster.

Usage::

    .venv/bin/python bench/kafka_bench.py [--events 60000] [--programs 48] [--workers 1 2]
        [--runs 3] [--batch 256] [--baseline DIR]

Per run: a fresh namespace on one mock cluster (started here, in-process), N workers
started and waited for until the group has divided the 4 partitions, then the events
are produced to the events topic through the daemon's log (keyed by (tenant, program),
packed: one message per key and append of 5,000) and the clock runs until the workers'
consumer group has committed the end of every partition.  Committed offsets trail
processing by up to the commit interval (0.5 s here), which the figure includes.

The reference, in the same run: the embedded fold (the embedded runtime's pipeline step
over the same events, in steps of 20,000 records, one core, no I/O), and with
``--baseline DIR`` the code in ``DIR`` (a directory holding an ``adaptd`` package, e.g. a
copy of the tree before a change) run the same way, its events produced one message
each (the unpacked layout), interleaved run by run with the current code.  Reported:
medians per worker count and ratios (to the embedded fold, to the baseline, two
workers to one).

THE MOCK CLUSTER IS NOT A PRODUCTION BROKER: it is librdkafka's in-memory test broker,
living in this process, on loopback, without replication or disk.  The figures compare
one worker with two on the same machine; they say nothing of a real cluster's limits.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kafka_broker import MockCluster, WorkerProcess  # noqa: E402

from adaptd.daemon.config import ProcessorSettings  # noqa: E402
from adaptd.daemon.runtime import build_processors, runtime_options  # noqa: E402
from adaptd.streams.kafka.log import KafkaLog  # noqa: E402
from adaptd.streams.kafka.packing import message_of  # noqa: E402
from adaptd.streams.kafka.partition_fold import PartitionFold  # noqa: E402
from adaptd.streams.kafka.topics import event_key  # noqa: E402
from adaptd.streams.log import open_log  # noqa: E402
from adaptd.streams.log.base import Record  # noqa: E402


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


def embedded_fold_rate(events: list[bytes], step: int = 20_000) -> float:
    """Events/s of the embedded runtime's fold (default processors) over ``events``."""
    settings = ProcessorSettings()
    fold = PartitionFold(build_processors(settings), **runtime_options(settings))  # type: ignore[arg-type]
    now = int(time.time() * 1000)
    records = [Record(i, value, 0, now) for i, value in enumerate(events)]
    state = fold.initial()
    started = time.perf_counter()
    for i in range(0, len(records), step):
        state, _ = fold.fold(state, records[i:i + step])
    return len(events) / (time.perf_counter() - started)


@contextlib.contextmanager
def python_path(path: str | None) -> Iterator[None]:
    """Processes started inside import ``adaptd`` from ``path`` first (None: as installed)."""
    before = os.environ.get("PYTHONPATH")
    if path is not None:
        os.environ["PYTHONPATH"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def one_run(cluster: MockCluster, workdir: Path, workers: int, events: list[bytes], batch: int,
            baseline: str | None = None) -> tuple[float, float]:
    """(events/s processed, events/s produced) of one run with ``workers`` workers: the
    current code with the packed layout, or (``baseline``) that code, unpacked."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{cluster.bootstrap}/{namespace}"
    log = open_log(url, workdir) if baseline is None else KafkaLog(cluster.bootstrap, f"{namespace}.events",
                                                                    key_of=event_key)
    procs = [WorkerProcess(url, workdir / f"{namespace}-w{i}", commit_interval=0.5,
                           batch=batch if baseline is None else 2000)
             for i in range(workers)]
    try:
        with python_path(baseline):
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
        # Committed offsets are Kafka's (of messages); a packed log's end offsets are not.
        ends = [message_of(log.end_offset(p)) if log.packed else log.end_offset(p) for p in range(4)]
        topic, group = f"{namespace}.events", f"{namespace}-processors"
        deadline = time.monotonic() + 600
        while committed(cluster.bootstrap, group, topic, 4) != ends:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not finish within 600 s")
            time.sleep(0.05)
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
    parser.add_argument("--batch", type=int, default=256, help="the workers' --batch (the baseline's: 2000)")
    parser.add_argument("--baseline", help="a directory holding an `adaptd` package to compare with (unpacked)")
    args = parser.parse_args()
    events = make_events(args.events, args.programs)
    cluster = MockCluster()
    print(f"mock cluster (librdkafka, in-process, NOT a production broker) at {cluster.bootstrap};"
          f" {args.events} events, {args.programs} programs, 4 partitions, {args.runs} runs each", flush=True)
    variants = {"current": None, **({"baseline": args.baseline} if args.baseline else {})}
    rates: dict[tuple[str, int], list[float]] = {}
    produce_rates: dict[tuple[str, int], list[float]] = {}
    folds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="adaptd-kafka-bench-") as tmp:
        for run in range(args.runs):  # interleaved: every variant sees the same load of the machine
            folds.append(embedded_fold_rate(events))
            print(f"  run={run + 1}: embedded fold {folds[-1]:,.0f} events/s", flush=True)
            for workers in args.workers:
                for name, path in variants.items():
                    rate, produce_rate = one_run(cluster, Path(tmp), workers, events, args.batch, path)
                    rates.setdefault((name, workers), []).append(rate)
                    produce_rates.setdefault((name, workers), []).append(produce_rate)
                    print(f"  run={run + 1} {name} workers={workers}: {rate:,.0f} events/s processed"
                          f" (produced at {produce_rate:,.0f}/s)", flush=True)
    cluster.close()
    fold = statistics.median(folds)
    print(f"embedded fold: median {fold:,.0f} events/s (runs: {', '.join(f'{r:,.0f}' for r in folds)})")
    for (name, workers), got in rates.items():
        median = statistics.median(got)
        line = (f"{name} workers={workers}: median {median:,.0f} events/s"
                f" (runs: {', '.join(f'{r:,.0f}' for r in got)}); {median / fold:.1%} of the embedded fold;"
                f" produce median {statistics.median(produce_rates[(name, workers)]):,.0f} events/s")
        if name != "baseline" and ("baseline", workers) in rates:
            line += f"; x{median / statistics.median(rates[('baseline', workers)]):.1f} the baseline"
        one = rates.get((name, 1))
        if workers > 1 and one:
            line += f"; x{median / statistics.median(one):.2f} one worker"
        print(line, flush=True)


if __name__ == "__main__":
    main()
