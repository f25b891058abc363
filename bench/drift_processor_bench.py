"""Drift processor throughput: events/s of ``DriftProcessor.process`` alone, and what the
``inputs`` / ``parent_id`` columns it asks for add to parsing.

The stream: ``--programs`` programs, each with ``--rate`` root executions per minute of
event time for ``--minutes`` minutes (in time order), every execution with a text input
described as the SDK does (``adaptd.streams.features``, 8-30 words) and a feedback score one
second later; so half the events are executions, half feedback.

Measured (CPU time, ``time.process_time``), each ``--runs`` times, median reported:

- ``drift``: ``process`` over pre-parsed batches of ``--batch`` records (watermarks set as
  the runtime sets them), default config (5 min windows, >= 500 executions, thinning
  above 2000 executions per window), window closes (the tests) included;
- ``drift_unthinned``: the same with thinning off (``sample_target`` huge): the cost when
  every execution is observed;
- ``parse`` / ``parse_columns``: ``parse_records`` records/s without and with the columns.

Usage: python bench/drift_processor_bench.py [--programs 4] [--rate 1000] [--minutes 15]
                                             [--batch 20000] [--runs 3]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from adaptd.streams.features import features as describe  # noqa: E402
from adaptd.streams.log.base import Record  # noqa: E402
from adaptd.streams.processors.base import NO_WATERMARK  # noqa: E402
from adaptd.streams.processors.drift.processor import DriftProcessor, DriftProcessorConfig  # noqa: E402
from adaptd.streams.processors.parse import parse_records  # noqa: E402
from adaptd.streams.processors.windows import US, watermarks  # noqa: E402

WORDS = ("refund invoice charge billing payment shipping delivery package tracking parcel password login "
         "account email reset error crash bug install update the a my please help with is it for").split()
T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def records(args: argparse.Namespace) -> list[Record]:
    rnd = random.Random(1)
    events = []
    n = args.programs * args.rate * args.minutes
    for i in range(n):
        t = T0 + dt.timedelta(seconds=i * 60 / (args.programs * args.rate))
        eid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 30)))
        events.append({"id": eid, "ts": t, "v": 1, "kind": "execution", "tenant": "default", "source": "bench",
                       "program": f"p{i % args.programs}", "route": "fast", "model": "m", "status": "ok",
                       "duration_ms": 800 * math.exp(rnd.gauss(0, 0.6)), "tokens_in": 60, "tokens_out": 120,
                       "cost_usd": 1e-4, "inputs": {"question": describe(text)}})
        events.append({"id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "ts": t + dt.timedelta(seconds=1),
                       "v": 1, "kind": "feedback", "tenant": "default", "source": "bench", "execution_id": eid,
                       "score": rnd.random()})
    events.sort(key=lambda e: e["ts"])
    return [Record(i, orjson.dumps({**e, "ts": e["ts"].isoformat()})) for i, e in enumerate(events)]


def batches(recs: list[Record], size: int) -> list:
    out, high = [], NO_WATERMARK
    for a in range(0, len(recs), size):
        batch = parse_records(recs[a:a + size], DriftProcessor.kinds, DriftProcessor.columns).batch
        batch.wm, high = watermarks(batch.ts, batch.append_ms, high, 5 * US, None)
        out.append((batch, high - 5 * US))
    return out


def run_drift(parsed: list, config: DriftProcessorConfig) -> tuple[float, dict]:
    processor = DriftProcessor(config)
    state = processor.initial_state()
    t0 = time.process_time()
    for batch, watermark in parsed:
        state, _ = processor.process(state, batch, watermark)
    return time.process_time() - t0, processor.metrics(state)


def run_parse(recs: list[Record], size: int, columns: frozenset[str]) -> float:
    t0 = time.process_time()
    for a in range(0, len(recs), size):
        parse_records(recs[a:a + size], DriftProcessor.kinds, columns)
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=4)
    ap.add_argument("--rate", type=int, default=1000, help="executions per minute per program")
    ap.add_argument("--minutes", type=int, default=15)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    recs = records(args)
    parsed = batches(recs, args.batch)
    n = len(recs)
    results: dict[str, list[float]] = {"drift": [], "drift_unthinned": [], "parse": [], "parse_columns": []}
    metrics = {}
    for _ in range(args.runs):
        cpu, metrics["drift"] = run_drift(parsed, DriftProcessorConfig())
        results["drift"].append(n / cpu)
        cpu, metrics["drift_unthinned"] = run_drift(parsed, DriftProcessorConfig(sample_target=10**9))
        results["drift_unthinned"].append(n / cpu)
        results["parse"].append(n / run_parse(recs, args.batch, frozenset()))
        results["parse_columns"].append(n / run_parse(recs, args.batch, DriftProcessor.columns))
    summary = {
        "events": n, "programs": args.programs, "rate_per_min": args.rate, "minutes": args.minutes,
        "batch": args.batch, "runs": args.runs,
        **{f"{k}_events_per_cpu_s": round(statistics.median(v)) for k, v in results.items()},
        "all_runs": {k: [round(x) for x in v] for k, v in results.items()},
        "windows_closed": metrics["drift"]["windows_closed"], "thinned": metrics["drift"]["thinned"],
        "signals": metrics["drift"]["signals"],
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
