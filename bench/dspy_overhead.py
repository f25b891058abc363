"""What instrumentation adds to a DSPy program: none vs AdaptdCallback vs OpenInference.

A no-op callback shows what DSPy's own callback dispatch costs (any callback pays it),
with DSPy's dispatch and with adaptd's faster one. The program is a ``dspy.ChainOfThought("question -> answer")`` on ``DummyLM`` (two module
calls per program call: the ChainOfThought and its Predict, plus one LM call and the
adapter's format and parse). Each configuration runs in its own fresh process, they
alternate round by round, and every process reports the median time per program
call over its batches, and the whole run's time per call once the export worker's
backlog is flushed. Both instrumentations export to a sink that drops everything, so
the figures are the host-side cost (including the export worker's share of the GIL),
not the network. Every call asks a different question.

    .venv/bin/python bench/dspy_overhead.py --calls 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: none: no instrumentation; noop: a DSPy callback that does nothing (DSPy's own dispatch
#: cost, which any callback pays); noop_fast: the same with adaptd's faster dispatch
#: installed; adaptd: AdaptdCallback (which installs it); openinference: OpenInference's
#: DSPy instrumentation.
CONFIGS = ("none", "noop", "noop_fast", "adaptd", "openinference")
MODULE_CALLS_PER_PROGRAM_CALL = 2


def child(config: str, calls: int, batch: int) -> None:
    """Run one configuration and print ``{"per_call_us": [...]}`` (one value per batch)."""
    import dspy
    from dspy.utils import DummyLM

    answers = [{"reasoning": f"{i} plus {i} makes {2 * i}", "answer": str(2 * i)} for i in range(calls + 200)]
    # A different question each call, as in production: nothing is described twice.
    questions = [f"What is {i} plus {i}?" for i in range(calls + 200)]
    lm = DummyLM(answers)
    flush = None
    callbacks = []
    if config in ("noop", "noop_fast"):
        from dspy.utils.callback import BaseCallback

        callbacks = [BaseCallback()]
        if config == "noop_fast":
            from adaptd.adapters import dspy_dispatch

            assert dspy_dispatch.install()
    elif config == "adaptd":
        from adaptd.adapters import AdaptdCallback, Client
        from adaptd.adapters.exporter import ExportResult

        class Sink:
            def export(self, events) -> ExportResult:
                return ExportResult.success(len(events))

            def shutdown(self) -> None:
                pass

        client = Client(exporter=Sink(), spill_dir=False)
        callbacks = [AdaptdCallback(program="bench", client=client)]
        flush = lambda: client.flush(60)
    elif config == "openinference":
        from openinference.instrumentation.dspy import DSPyInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class NullSpanExporter(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
        DSPyInstrumentor().instrument(tracer_provider=provider)
        flush = lambda: provider.force_flush(60_000)
    dspy.configure(lm=lm, callbacks=callbacks)
    program = dspy.ChainOfThought("question -> answer")
    for q in questions[calls:]:  # warm-up: imports, caches, the adapter's first formatting
        program(question=q)
    if flush is not None:
        flush()
    per_call = []
    start = time.perf_counter_ns()
    for b in range(calls // batch):
        t0 = time.perf_counter_ns()
        for q in questions[b * batch : (b + 1) * batch]:
            program(question=q)
        per_call.append((time.perf_counter_ns() - t0) / batch / 1000)
    if flush is not None:  # the export worker's backlog is part of the cost
        flush()
    end_to_end = (time.perf_counter_ns() - start) / (calls // batch * batch) / 1000
    if config == "adaptd":
        assert callbacks[0].errors == 0
        client.flush(60)
        stats = client.stats()
        assert stats["exported"] > 0 and stats["export_errors"] == 0, stats
    print(json.dumps({"per_call_us": per_call, "end_to_end_us": end_to_end}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="program calls per process")
    parser.add_argument("--batch", type=int, default=100, help="calls per timed batch")
    parser.add_argument("--rounds", type=int, default=5, help="processes per configuration, alternating")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.batch)
        return
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    medians: dict[str, list[float]] = {c: [] for c in CONFIGS}
    whole: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        for config in CONFIGS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", config, "--calls", str(args.calls), "--batch", str(args.batch)],
                check=True, capture_output=True, text=True, env=env,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            medians[config].append(statistics.median(result["per_call_us"]))
            whole[config].append(result["end_to_end_us"])
        print(f"round {r + 1}: " + ", ".join(f"{c} {medians[c][-1]:.1f} us ({whole[c][-1]:.1f} whole)" for c in CONFIGS),
              flush=True)
    for title, runs in (("median of 100-call batches", medians), ("whole run, export backlog flushed", whole)):
        base = statistics.median(runs["none"])
        print(f"\n{title}: per ChainOfThought call, median over {args.rounds} rounds ({args.calls} calls each):")
        for config in CONFIGS:
            # Overhead per round against the same round's uninstrumented run, then the median.
            over = statistics.median(x - b for x, b in zip(runs[config], runs["none"]))
            print(f"  {config:14s} {statistics.median(runs[config]):8.1f} us/call   overhead {over:7.1f} us/call"
                  f" = {over / MODULE_CALLS_PER_PROGRAM_CALL:6.1f} us per module call")
        a = statistics.median(x - b for x, b in zip(runs["adaptd"], runs["none"]))
        o = statistics.median(x - b for x, b in zip(runs["openinference"], runs["none"]))
        print(f"  adaptd overhead / OpenInference overhead = {a / o:.2f} (base {base:.1f} us/call)")

if __name__ == "__main__":
    main()
