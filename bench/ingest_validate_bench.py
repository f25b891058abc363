"""Ingest micro benchmark: the CPU cost per event of turning a body into log records.

Times what ``POST /v1/events`` does on its worker thread (``parse_items`` then
``prepare``) on the bodies of ``bench/ingest_bench.py`` (batches of 1,000, ~400 bytes per
event), no HTTP and no log, and in the same run:

- ``before``: the same two calls from another copy of ``daemon/ingest.py`` (``--before``,
  e.g. the file as it was before a change), on the same bodies, interleaved with ``after``;
- references, what the machine allows for the same bodies: ``orjson.loads`` alone (the
  parse every path pays) and pydantic-core's ``validate_json`` of a whole batch with the
  event schema (``wire_list_adapter``), the figure issue 19 names.

Two corpora: ``valid`` (every event valid, as the end-to-end bench) and ``mixed`` (1 in
50 items invalid, 1 in 50 with an unknown field, to show what the per-item fallback costs).
Before timing, checks that ``before`` and ``after`` give byte-identical event records and
the same verdicts on both corpora.

Usage: python bench/ingest_validate_bench.py [--events 20000] [--reps 7] [--before PATH]
Prints one JSON object (microseconds per event, medians over the repetitions, and ratios).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_bench import make_bodies

from adaptd.daemon import ingest
from adaptd.streams.events import wire_list_adapter


def load_module(path: str) -> ModuleType:
    """``path`` imported as a module of its own (a copy of ``daemon/ingest.py``)."""
    spec = importlib.util.spec_from_file_location("ingest_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def mixed_bodies(events: int, batch: int) -> list[bytes]:
    """The bench bodies with 1 item in 50 made invalid and 1 in 50 given an unknown field."""
    out = []
    for body in make_bodies(events, batch, seed=11):
        items = orjson.loads(body)
        for n, item in enumerate(items):
            if n % 50 == 7:
                item["ts"] = "not a time"
            elif n % 50 == 21:
                item["client_extra"] = {"k": n}
        out.append(orjson.dumps(items))
    return out


def run_prepare(module: Any, bodies: list[bytes], received: dt.datetime, limits: Any) -> list[Any]:
    return [module.prepare(module.parse_items(b, "application/json"), tenant="acme", received=received,
                           limits=limits) for b in bodies]


def events_of(prepared: list[Any]) -> list[list[bytes]]:
    """Event records only (dead letters carry fresh ids), and the verdicts."""
    return [([r for r in p.records if not r.startswith(b'{"kind":"dead_letter"')], p.accepted,
             [x["index"] for x in p.rejected]) for p in prepared]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--before", help="path of another copy of daemon/ingest.py to compare against")
    args = parser.parse_args()
    before = load_module(args.before) if args.before else None
    received = dt.datetime.now(dt.UTC)
    corpora = {"valid": make_bodies(args.events, args.batch), "mixed": mixed_bodies(args.events, args.batch)}

    def limits_of(module: Any) -> Any:
        # a dead-letter rate that never runs out: every rejected item costs its record
        return module.Limits(max_future_s=None, dead_letters_per_s=1e12)

    if before is not None:
        for name, bodies in corpora.items():
            a = events_of(run_prepare(before, bodies, received, limits_of(before)))
            b = events_of(run_prepare(ingest, bodies, received, limits_of(ingest)))
            if a != b:
                raise SystemExit(f"{name}: before and after give different records or verdicts")

    candidates: dict[str, Any] = {"after": ingest}
    if before is not None:
        candidates = {"before": before, "after": ingest}
    result: dict[str, Any] = {"events": args.events, "batch": args.batch, "reps": args.reps,
                              "records_identical": before is not None}
    for name, bodies in corpora.items():
        n = sum(len(orjson.loads(b)) for b in bodies)
        times: dict[str, list[float]] = {k: [] for k in [*candidates, "ref_orjson_loads", "ref_validate_json"]}
        for _ in range(args.reps):  # interleaved: each repetition times every variant once
            for label, module in candidates.items():
                limits = limits_of(module)
                t = time.process_time()
                run_prepare(module, bodies, received, limits)
                times[label].append(time.process_time() - t)
            t = time.process_time()
            for b in bodies:
                orjson.loads(b)
            times["ref_orjson_loads"].append(time.process_time() - t)
            t = time.process_time()
            for b in bodies:
                try:
                    wire_list_adapter.validate_json(b)
                except ValueError:
                    pass
            times["ref_validate_json"].append(time.process_time() - t)
        med = {k: statistics.median(v) / n * 1e6 for k, v in times.items()}
        figures: dict[str, Any] = {f"{k}_us_per_event": round(v, 2) for k, v in med.items()}
        figures["after_events_per_s"] = round(1e6 / med["after"])
        if before is not None:
            figures["speedup_after_vs_before"] = round(med["before"] / med["after"], 2)
        figures["after_vs_ref_validate_json"] = round(med["after"] / med["ref_validate_json"], 2)
        result[name] = figures
    print(json.dumps(result))


if __name__ == "__main__":
    main()
