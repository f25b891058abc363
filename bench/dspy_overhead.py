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
    .venv/bin/python bench/dspy_overhead.py --host-methods --calls 20000 --rounds 3

Besides wall time, each process reports CPU time per call: the host thread's (the program
and every callback method it runs) and, for ``adaptd``, the SDK worker's; CPU time is
less disturbed than wall time by other processes on a shared machine. ``--baseline DIR``
adds a configuration ``adaptd@base``: ``adaptd`` with another checkout of the package on
``PYTHONPATH`` (``DIR/adaptd/...``), to compare a change with its baseline in one run.
``--host-methods`` times only ``AdaptdCallback``'s own methods on the host thread.
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
    worker = None
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
        worker = client._thread
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
    worker_clock = time.pthread_getcpuclockid(worker.ident) if worker is not None else None
    worker0 = time.clock_gettime_ns(worker_clock) if worker_clock is not None else 0
    host0 = time.thread_time_ns()
    start = time.perf_counter_ns()
    for b in range(calls // batch):
        t0 = time.perf_counter_ns()
        for q in questions[b * batch : (b + 1) * batch]:
            program(question=q)
        per_call.append((time.perf_counter_ns() - t0) / batch / 1000)
    if flush is not None:  # the export worker's backlog is part of the cost
        flush()
    n = calls // batch * batch
    end_to_end = (time.perf_counter_ns() - start) / n / 1000
    host_cpu = (time.thread_time_ns() - host0) / n / 1000
    worker_cpu = (time.clock_gettime_ns(worker_clock) - worker0) / n / 1000 if worker_clock is not None else 0.0
    if config == "adaptd":
        assert callbacks[0].errors == 0
        client.flush(60)
        stats = client.stats()
        assert stats["exported"] > 0 and stats["export_errors"] == 0, stats
    print(json.dumps({"per_call_us": per_call, "end_to_end_us": end_to_end, "host_cpu_us": host_cpu,
                      "worker_cpu_us": worker_cpu}))


def host_methods(calls: int) -> None:
    """Print ``{"host_us": [...]}``: the host-thread CPU time of ``AdaptdCallback``'s own
    methods per ChainOfThought call tree (module, module, format, LM, parse: ten methods),
    called directly (no DSPy dispatch, no worker: it never wakes, GC paused), five times.

    This is the callback's share of the host thread, which the whole-program figures
    above only show mixed with DSPy's dispatch, the garbage collector and the worker.
    """
    import gc

    import dspy
    from dspy.utils import DummyLM
    from dspy.utils.callback_context import ACTIVE_CALL_ID

    from adaptd.adapters import AdaptdCallback, Client
    from adaptd.adapters.exporter import ExportResult

    class Sink:
        def export(self, events) -> ExportResult:
            return ExportResult.success(len(events))

        def shutdown(self) -> None:
            pass

    client = Client(exporter=Sink(), spill_dir=False, schedule_delay_ms=1e9, max_batch_size=10**7,
                    max_queue_size=10**7)  # fmt: skip
    cb = AdaptdCallback(program="bench", client=client)
    lm = DummyLM([{"reasoning": "r", "answer": "a"}])
    cot = dspy.ChainOfThought("question -> answer")
    adapter = dspy.ChatAdapter()
    ids = [tuple(f"{k}{i}" for k in "abcde") for i in range(calls)]
    outputs = [dspy.Prediction(reasoning=f"r{i}", answer=f"a{i}") for i in range(calls)]

    def run() -> None:
        for i in range(calls):
            a, b, c, d, e = ids[i]
            inputs = {"args": (), "kwargs": {"question": f"q{i}"}}
            cb.on_module_start(a, cot, inputs)
            t1 = ACTIVE_CALL_ID.set(a)
            cb.on_module_start(b, cot.predict, inputs)
            t2 = ACTIVE_CALL_ID.set(b)
            cb.on_adapter_format_start(c, adapter, {})
            cb.on_adapter_format_end(c, [])
            cb.on_lm_start(d, lm, {})
            cb.on_lm_end(d, ["x"])
            cb.on_adapter_parse_start(e, adapter, {})
            cb.on_adapter_parse_end(e, {})
            ACTIVE_CALL_ID.reset(t2)
            cb.on_module_end(b, outputs[i])
            ACTIVE_CALL_ID.reset(t1)
            cb.on_module_end(a, outputs[i])

    run()
    client._q.clear()
    gc.disable()
    out = []
    for _ in range(5):
        t0 = time.thread_time_ns()
        run()
        out.append((time.thread_time_ns() - t0) / calls / 1000)
        client._q.clear()
    gc.enable()
    assert cb.errors == 0
    print(json.dumps({"host_us": out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="program calls per process")
    parser.add_argument("--batch", type=int, default=100, help="calls per timed batch")
    parser.add_argument("--rounds", type=int, default=5, help="processes per configuration, alternating")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated subset of: " + ", ".join(CONFIGS) + " (none is always run)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run adaptd from DIR (PYTHONPATH=DIR), as configuration adaptd@base")
    parser.add_argument("--host-methods", action="store_true",
                        help="only time AdaptdCallback's methods on the host thread (and the baseline's)")
    parser.add_argument("--child", choices=CONFIGS + ("host_methods",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "host_methods":
        host_methods(args.calls)
        return
    if args.child:
        child(args.child, args.calls, args.batch)
        return
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    if args.host_methods:
        runs = {"adaptd": env}
        if args.baseline:
            runs["adaptd@base"] = dict(env, PYTHONPATH=args.baseline)
        per: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, child_env in runs.items():
                out = subprocess.run([sys.executable, __file__, "--child", "host_methods", "--calls", str(args.calls)],
                                     check=True, capture_output=True, text=True, env=child_env)  # fmt: skip
                per[name].extend(json.loads(out.stdout.strip().splitlines()[-1])["host_us"])
        print(f"AdaptdCallback's methods on the host thread, per ChainOfThought call tree ({args.rounds} processes"
              f" x 5 repetitions of {args.calls}; median, min):")
        for name, values in per.items():
            med = statistics.median(values)
            print(f"  {name:12s} {med:6.1f} us ({min(values):.1f}) = {med / MODULE_CALLS_PER_PROGRAM_CALL:5.1f} us"
                  " per module call")
        if "adaptd@base" in per:
            print(f"  adaptd / adaptd@base = {statistics.median(per['adaptd']) / statistics.median(per['adaptd@base']):.2f}")
        return
    configs = ["none"] + [c for c in args.configs.split(",") if c in CONFIGS and c != "none"]
    if args.baseline:
        configs.append("adaptd@base")
    medians: dict[str, list[float]] = {c: [] for c in configs}
    whole: dict[str, list[float]] = {c: [] for c in configs}
    host: dict[str, list[float]] = {c: [] for c in configs}
    cpu: dict[str, list[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for config in configs:
            child_env = env
            if config == "adaptd@base":
                child_env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (args.baseline, env.get("PYTHONPATH")) if p))
            out = subprocess.run(
                [sys.executable, __file__, "--child", config.partition("@")[0], "--calls", str(args.calls),
                 "--batch", str(args.batch)],
                check=True, capture_output=True, text=True, env=child_env,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            medians[config].append(statistics.median(result["per_call_us"]))
            whole[config].append(result["end_to_end_us"])
            host[config].append(result["host_cpu_us"])
            cpu[config].append(result["host_cpu_us"] + result["worker_cpu_us"])
        print(f"round {r + 1}: " + ", ".join(
            f"{c} {medians[c][-1]:.1f} us ({whole[c][-1]:.1f} whole, cpu host {host[c][-1]:.1f}"
            f" + worker {cpu[c][-1] - host[c][-1]:.1f})" for c in configs), flush=True)  # fmt: skip
    for title, runs in (("median of 100-call batches", medians), ("whole run, export backlog flushed", whole),
                        ("CPU time, host thread", host), ("CPU time, host thread + SDK worker", cpu)):
        base = statistics.median(runs["none"])
        print(f"\n{title}: per ChainOfThought call, median over {args.rounds} rounds ({args.calls} calls each):")
        for config in configs:
            # Overhead per round against the same round's uninstrumented run, then the median.
            over = statistics.median(x - b for x, b in zip(runs[config], runs["none"]))
            print(f"  {config:14s} {statistics.median(runs[config]):8.1f} us/call   overhead {over:7.1f} us/call"
                  f" = {over / MODULE_CALLS_PER_PROGRAM_CALL:6.1f} us per module call")
        for a_name, b_name in (("adaptd", "openinference"), ("adaptd", "noop_fast"), ("adaptd", "adaptd@base")):
            if a_name in runs and b_name in runs:
                a = statistics.median(x - b for x, b in zip(runs[a_name], runs["none"]))
                o = statistics.median(x - b for x, b in zip(runs[b_name], runs["none"]))
                print(f"  {a_name} overhead / {b_name} overhead = {a / o:.2f} (base {base:.1f} us/call)")
        if "adaptd" in runs and "noop_fast" in runs:  # adaptd's own share: what the dispatch leaves
            own = statistics.median(x - b for x, b in zip(runs["adaptd"], runs["noop_fast"]))
            print(f"  adaptd - noop_fast (adaptd's own work) = {own:.1f} us/call"
                  f" = {own / MODULE_CALLS_PER_PROGRAM_CALL:.1f} us per module call")

if __name__ == "__main__":
    main()
