"""Processor state under a flood of distinct program names: peak RSS and state size.

**Question.** Does the processors' state stay bounded when one tenant posts 1M events over
100k distinct program names (issue 14, item 9), with the per-tenant key caps on?

**Method.** The daemon's processors (``build_processors`` with default settings, so the
default caps: 10,000 history / error-burst keys and 1,000 anomaly / drift keys per tenant)
run in the embedded runtime over a real file log holding:

- tenant ``acme``: a steady 10 programs (``--steady`` share of the events), with feedback;
- tenant ``flood``: the rest, spread over ``--names`` distinct program names, in
  ``--span-s`` seconds of event time.

It reports the peak RSS of this process (``ru_maxrss``) before and after, the keys each
processor holds, the refusals and evictions per tenant, the pickled size of each state
(what a snapshot writes), the wall time, and that acme's keys were all kept.  ``--no-caps``
raises every cap to 10**9 (what main did before the caps) for comparison; mind the memory.

    .venv/bin/python bench/state_memory_bench.py                      # 1M events, 100k names
    .venv/bin/python bench/state_memory_bench.py --events 200000 --names 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import resource
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from adaptd.daemon.config import ProcessorSettings
from adaptd.daemon.runtime import build_processors
from adaptd.streams.log.file import FileLog
from adaptd.streams.processors.anomaly.error_burst import BurstConfig
from adaptd.streams.processors.anomaly.processor import AnomalyConfig
from adaptd.streams.processors.drift.processor import DriftProcessorConfig
from adaptd.streams.processors.runtime import ProcessorRuntime

BASE = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def uncap(processors: list) -> None:
    """Raise every key cap to 10**9 (state then grows as on main before the caps)."""
    big = 10**9
    for p in processors:
        if hasattr(p, "max_keys"):
            p.max_keys = big
        cfg = getattr(p, "cfg", None)
        if isinstance(cfg, BurstConfig | AnomalyConfig | DriftProcessorConfig):
            object.__setattr__(cfg, "max_keys_per_tenant", big)


def write_log(log: FileLog, events: int, names: int, span_s: float, steady: float) -> None:
    chunk: list[bytes] = []
    step = span_s / events
    flood_i = steady_i = 0
    every = max(1, round(1 / steady)) if steady > 0 else events + 1
    for i in range(events):
        ts = (BASE + dt.timedelta(seconds=i * step)).isoformat()
        eid = str(uuid.UUID(int=i + 1, version=4))
        if i % every == 0:
            steady_i += 1
            e = {"id": eid, "kind": "execution", "ts": ts, "tenant": "acme", "program": f"steady-{steady_i % 10}",
                 "duration_ms": 10.0 + i % 7, "status": "ok", "tokens_in": 10, "tokens_out": 5}
        else:
            e = {"id": eid, "kind": "execution", "ts": ts, "tenant": "flood", "program": f"name-{flood_i % names:06d}",
                 "duration_ms": 12.0, "status": "ok", "inputs": {"q": "hello"}}
            flood_i += 1
        chunk.append(orjson.dumps(e))
        if len(chunk) >= 20_000:
            log.append(chunk)
            chunk = []
    if chunk:
        log.append(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--names", type=int, default=100_000)
    ap.add_argument("--span-s", type=float, default=200.0, help="event-time seconds the events span")
    ap.add_argument("--steady", type=float, default=0.05, help="share of events from the steady tenant")
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--no-caps", action="store_true")
    args = ap.parse_args()

    rss0 = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        log = FileLog(Path(tmp) / "log", fsync="interval")
        t0 = time.perf_counter()
        write_log(log, args.events, args.names, args.span_s, args.steady)
        written = time.perf_counter() - t0
        rss_written = peak_rss_mb()
        settings = ProcessorSettings()
        processors = build_processors(settings)
        if args.no_caps:
            uncap(processors)
        rt = ProcessorRuntime(log, processors, batch=args.batch, lateness_s=settings.lateness_s,
                              max_future_s=None, emit=lambda values: None)
        t1 = time.perf_counter()
        steps = 0
        while rt.step():
            steps += 1
        elapsed = time.perf_counter() - t1
        stats = rt.stats()["processors"]
        log.close()
    report = {
        "date": dt.date.today().isoformat(), "events": args.events, "names": args.names, "span_s": args.span_s,
        "caps": not args.no_caps, "write_log_s": round(written, 1), "process_s": round(elapsed, 1),
        "events_per_s": round(args.events / elapsed), "peak_rss_mb_start": round(rss0),
        "peak_rss_mb_after_writing": round(rss_written), "peak_rss_mb": round(peak_rss_mb()),
        "processors": {},
    }
    for p in processors:
        m = stats[p.name]
        state = rt.states[p.name]
        report["processors"][p.name] = {
            "keys": m.get("keys", m.get("programs")), "cap": m.get("keys_per_tenant_cap"),
            "refused": m.get("keys_refused"), "evicted": m.get("keys_evicted"),
            "snapshot_bytes": len(pickle.dumps(state, protocol=5)),
        }
    history = rt.states["history"]
    report["acme_keys_kept"] = sorted(k[1] for k in history.keys.index if k[0] == "acme")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
