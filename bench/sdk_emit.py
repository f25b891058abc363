"""Emit cost on the caller's thread: adaptd ``Client.emit`` vs an OpenTelemetry span.

Every variant runs in the same process, interleaved block by block, so machine drift
(this is a shared VM whose speed varies by ~1.5x over minutes) hits them all alike:

* ``emit``: ``client.emit("execution", <8 fields by keyword>)`` on a ``Client`` whose
  exporter discards (its worker still builds, validates and serializes every event).
* ``emit_dict``: ``client.emit_dict("execution", {<the same 8>})``.
* ``emit_module``: the module-level ``adaptd.adapters.emit(...)`` (default client).
* ``alt_kwargs``: the design ``emit()`` replaced: ``def emit(self, kind, /, **fields)``
  appending ``(kind, time_ns(), fields)`` to a deque; shows what the dict costs.
* ``otel_span``: ``span = tracer.start_span("execution", attributes={<the same 8>});
  span.end()`` (``start_span``, not ``start_as_current_span``: no context attach and
  detach) with ``TracerProvider`` + ``BatchSpanProcessor`` + a no-op ``SpanExporter``.
* ``loop``: an empty ``for`` loop of the same length, the overhead included above and a
  gauge of the machine's speed during the run.

Per-call cost = ``perf_counter_ns`` around a block of N calls / N; the summary is the
median, p10 and p90 of those block means. After each block the pipeline is flushed
outside the timed region; flush time / N is ``background_ns``, the worker's cost per
event (it runs on another thread but holds the GIL, so a host pays it too).

Usage: ``.venv/bin/python bench/sdk_emit.py [--blocks 200] [--block-size 500]``
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import adaptd.adapters as adapters
from adaptd.adapters import Client, ExportResult

WARMUP_ROUNDS = 10


class Discard:
    """An adaptd exporter that drops every batch and reports success."""

    def export(self, events: Sequence[bytes]) -> ExportResult:
        return ExportResult.success(len(events))

    def shutdown(self) -> None:
        pass


class NoopSpanExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class KwargsEmit:
    """The design ``Client.emit`` replaced: ``**fields`` collects every field in a dict."""

    def __init__(self) -> None:
        self._q: collections.deque[Any] = collections.deque(maxlen=20_000)
        self._check_at, self._now_ns = 999, time.time_ns

    def emit(self, kind: str, /, **fields: Any) -> None:
        q = self._q
        if len(q) >= self._check_at:
            q.clear()
        q.append((kind, self._now_ns(), fields))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_blocks(client: Client, tracer: Any, n: int) -> dict[str, Callable[[], int]]:
    """One timed block per variant; each returns the elapsed ns of ``n`` calls."""
    clock = time.perf_counter_ns
    alt = KwargsEmit()

    def emit() -> int:
        t0 = clock()
        for _ in range(n):
            client.emit("execution", program="qa", module="retrieve", route="r1", model="gpt-4o-mini",
                        duration_ms=1.0, status="ok", tokens_in=120, tokens_out=30)  # fmt: skip
        return clock() - t0

    def emit_dict() -> int:
        t0 = clock()
        for _ in range(n):
            client.emit_dict("execution", {"program": "qa", "module": "retrieve", "route": "r1",
                                           "model": "gpt-4o-mini", "duration_ms": 1.0, "status": "ok",
                                           "tokens_in": 120, "tokens_out": 30})  # fmt: skip
        return clock() - t0

    def emit_module() -> int:
        t0 = clock()
        for _ in range(n):
            adapters.emit("execution", program="qa", module="retrieve", route="r1", model="gpt-4o-mini",
                          duration_ms=1.0, status="ok", tokens_in=120, tokens_out=30)  # fmt: skip
        return clock() - t0

    def alt_kwargs() -> int:
        t0 = clock()
        for _ in range(n):
            alt.emit("execution", program="qa", module="retrieve", route="r1", model="gpt-4o-mini",
                     duration_ms=1.0, status="ok", tokens_in=120, tokens_out=30)  # fmt: skip
        elapsed = clock() - t0
        alt._q.clear()
        return elapsed

    def otel_span() -> int:
        t0 = clock()
        for _ in range(n):
            span = tracer.start_span("execution", attributes={
                "program": "qa", "module": "retrieve", "route": "r1", "model": "gpt-4o-mini",
                "duration_ms": 1.0, "status": "ok", "tokens_in": 120, "tokens_out": 30})  # fmt: skip
            span.end()
        return clock() - t0

    def loop() -> int:
        t0 = clock()
        for _ in range(n):
            pass
        return clock() - t0

    return {"emit": emit, "emit_dict": emit_dict, "emit_module": emit_module,
            "alt_kwargs": alt_kwargs, "otel_span": otel_span, "loop": loop}  # fmt: skip


def summarize(per_call: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(per_call, n=10)
    return {
        "median_ns": round(statistics.median(per_call), 1),
        "p10_ns": round(deciles[0], 1),
        "p90_ns": round(deciles[-1], 1),
    }


def run(blocks: int, n: int) -> dict[str, Any]:
    """Measure every variant over ``blocks`` kept blocks of ``n`` calls each."""
    client = adapters.configure(exporter=Discard(), spill_dir=False)
    provider = TracerProvider()
    bsp = BatchSpanProcessor(NoopSpanExporter())
    provider.add_span_processor(bsp)
    tracer = provider.get_tracer("bench")
    variants = make_blocks(client, tracer, n)
    flush = {"emit": client.flush, "emit_dict": client.flush, "emit_module": client.flush,
             "otel_span": lambda: bsp.force_flush()}  # fmt: skip
    cost: dict[str, list[float]] = {k: [] for k in variants}
    background: dict[str, list[float]] = {k: [] for k in flush}
    for i in range(blocks + WARMUP_ROUNDS):
        for name, block in variants.items():
            elapsed = block()
            t0 = time.perf_counter_ns()
            if name in flush:
                flush[name]()
            flushed = time.perf_counter_ns() - t0
            if i >= WARMUP_ROUNDS:
                cost[name].append(elapsed / n)
                if name in background:
                    background[name].append(flushed / n)
    stats = client.stats()
    adapters.shutdown(5)
    provider.shutdown()
    results = {name: summarize(v) for name, v in cost.items()}
    for name, values in background.items():
        results[name]["background_ns"] = round(statistics.median(values), 1)
    ratio = results["otel_span"]["median_ns"] / results["emit"]["median_ns"]
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "opentelemetry_sdk": version("opentelemetry-sdk")},  # fmt: skip
        "blocks": blocks,
        "block_size": n,
        "results": results,
        "ratio_otel_over_emit": round(ratio, 1),
        "targets_met": {"emit_median_le_1us": results["emit"]["median_ns"] <= 1000, "ratio_ge_15x": ratio >= 15},
        "client_stats": {k: stats[k] for k in ("enqueued", "exported", "dropped_queue_full", "dropped_invalid")},
    }


def markdown_row(r: dict[str, Any]) -> str:
    """One row of the table in docs/BENCHMARKS.md (µs: median (p10–p90))."""
    res = r["results"]

    def us(name: str) -> str:
        x = res[name]
        return f"{x['median_ns'] / 1000:.2f} ({x['p10_ns'] / 1000:.2f}–{x['p90_ns'] / 1000:.2f})"

    cells = [r["date"], us("emit"), us("emit_dict"), us("emit_module"), us("alt_kwargs"), us("otel_span"),
             f"{r['ratio_otel_over_emit']}x", f"{res['emit']['background_ns'] / 1000:.1f}",
             f"{res['otel_span']['background_ns'] / 1000:.1f}", f"{res['loop']['median_ns']:.0f} ns"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--blocks", type=int, default=200, help="timed blocks per variant")
    parser.add_argument("--block-size", type=int, default=500, help="calls per block (below the batch size)")
    args = parser.parse_args()
    result = run(args.blocks, args.block_size)
    print(json.dumps(result, indent=2))
    print(markdown_row(result))


if __name__ == "__main__":
    main()
