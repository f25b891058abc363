"""OTLP ingest benchmark: DSPy-like OpenInference spans posted to /v1/traces, acked and projected.

Starts a real daemon (``adaptd up``) in a temporary data dir, pre-builds protobuf
``ExportTraceServiceRequest`` bodies (every span id unique; traces shaped like what
``openinference-instrumentation-dspy`` emits for a ChainOfThought: 5 spans, one of them
the LM call with model, provider, token counts and messages), posts them from a few
concurrent connections for ``--seconds``, and reports:

- spans/s acknowledged (durable in the file log) over the posting window;
- spans/s projected: spans acked / time from the first post until the projector's
  position reaches the log end;
- p50 / p99 latency of one acknowledged request; the daemon's peak RSS;
- the machine limit, ``duckdb_reference_spans_per_s``: DuckDB itself loading the very log
  records those requests become (``otlp.ingest`` of the same bodies, ``log_offset``
  added) from NDJSON into the same migrated tables (same primary keys), one transaction
  per request, measured in this process before the daemon starts; and the ratio of the
  projected rate to it.

``--stages`` instead times the daemon's per-request work in this process (decode, map,
prepare) without HTTP, the log or DuckDB, to show where the time goes; ``mapping`` is
decode + map (spans to event dicts, text features included), the OTLP-specific part.

``--baseline DIR`` also measures other code, interleaved run by run with the current code
(``--runs`` each): its daemon (or ``--stages`` process) runs with ``DIR`` first on
``PYTHONPATH``, so ``DIR`` holds an ``adaptd`` package of that code, or a
``sitecustomize.py`` that swaps some modules for other versions.  The medians and the
current / baseline ratios are printed (above 1 is better for a rate ``*_per_s``, below 1
for a cost ``*_per_span``).

``--no-content`` drops the input / output / message attributes from the spans, to show
what the text features (sketches) of content cost.

Usage: python bench/otlp_bench.py [--seconds 20] [--spans 1000] [--connections 3] [--no-content] [--stages]
                                 [--runs 1] [--baseline DIR]
Prints one JSON object (last line); with ``--runs`` or ``--baseline`` a line per run first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import daemon_proc  # bench/ is on sys.path when a script here runs
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPANS_PER_TRACE = 5
_WORDS = ("capital", "france", "paris", "river", "population", "history", "science", "planet", "energy",
          "music", "ocean", "language", "economy", "ancient", "modern", "city", "mountain", "climate",
          "computer", "network", "theory", "novel", "author", "century", "empire", "war", "peace", "art")
_SYSTEM = ("Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. `reasoning` (str): \n"
           "2. `answer` (str):\nAll interactions will be structured in the following way, with the appropriate"
           " values filled in.\n\n[[ ## question ## ]]\n{question}\n\n[[ ## reasoning ## ]]\n{reasoning}\n\n"
           "[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]\nIn adhering to this structure, your objective"
           " is: \n        Given the fields `question`, produce the fields `answer`.")


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


_CONTENT_PREFIXES = ("input.value", "output.value", "llm.input_messages.", "llm.output_messages.")


def _trace(rng: random.Random, trace_id: bytes, first_span: int, start_ns: int, content: bool = True) -> list[Span]:
    """The 5 spans of one DSPy ChainOfThought call, root first (ids ``first_span``..+4).

    ``content=False`` leaves out the input / output / message attributes.
    """
    question = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(6, 16))) + "?"
    reasoning = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(10, 30))) + "."
    answer = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(1, 5)))
    q_json = json.dumps({"question": question})
    out_json = json.dumps({"reasoning": reasoning, "answer": answer})
    user = (f"[[ ## question ## ]]\n{question}\n\nRespond with the corresponding output fields, starting with "
            "the field `[[ ## reasoning ## ]]`, then `[[ ## answer ## ]]`, and then ending with the marker for "
            "`[[ ## completed ## ]]`.")
    completion = f"[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"
    messages = json.dumps({"messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]})
    chain = {"openinference.span.kind": "CHAIN", "input.value": q_json, "input.mime_type": "application/json",
             "output.value": out_json, "output.mime_type": "application/json"}
    shapes = [
        ("ChainOfThought.forward", chain),
        ("Predict.forward", chain),
        ("Predict(StringSignature).forward", chain),
        ("ChatAdapter.__call__", {"openinference.span.kind": "CHAIN", "input.mime_type": "application/json",
                                  "input.value": json.dumps({"lm_kwargs": {}, "signature": "question -> reasoning,"
                                                             " answer", "demos": [], "inputs": {"question": question}}),
                                  "output.value": json.dumps([{"reasoning": reasoning, "answer": answer}]),
                                  "output.mime_type": "application/json"}),
        ("LM.__call__", {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
                         "llm.invocation_parameters": '{"temperature": 0.0, "max_tokens": 1000}',
                         "input.value": messages, "input.mime_type": "application/json",
                         "llm.input_messages.0.message.role": "system",
                         "llm.input_messages.0.message.content": _SYSTEM,
                         "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": user,
                         "output.value": json.dumps([completion]), "output.mime_type": "application/json",
                         "llm.output_messages.0.message.role": "assistant",
                         "llm.output_messages.0.message.content": completion,
                         "llm.token_count.prompt": rng.randrange(150, 400),
                         "llm.token_count.completion": rng.randrange(20, 120),
                         "llm.token_count.total": 0}),
    ]
    spans = []
    duration = rng.randrange(200_000_000, 2_000_000_000)
    for depth, (name, attrs) in enumerate(shapes):
        span_id = (first_span + depth).to_bytes(8, "big")
        parent = (first_span + depth - 1).to_bytes(8, "big") if depth else b""
        offset = depth * 1_000_000
        if not content:
            attrs = {k: v for k, v in attrs.items() if not k.startswith(_CONTENT_PREFIXES)}
        spans.append(Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
                          kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start_ns + offset,
                          end_time_unix_nano=start_ns + duration - offset,
                          attributes=[_kv(k, v) for k, v in attrs.items()]))
        spans[-1].status.code = 1
    return spans


def make_bodies(requests: int, spans: int, seed: int = 7, content: bool = True) -> list[bytes]:
    """``requests`` serialized requests of ``spans`` spans each (whole traces; ids unique)."""
    rng = random.Random(seed)
    run = rng.getrandbits(64)
    start_ns = int(dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC).timestamp() * 1e9)
    bodies = []
    n = 0
    for _ in range(requests):
        resource_spans = ResourceSpans()
        for k, v in (("service.name", "qa-cot"), ("telemetry.sdk.language", "python"),
                     ("telemetry.sdk.name", "opentelemetry"), ("telemetry.sdk.version", "1.45.2")):
            resource_spans.resource.attributes.append(_kv(k, v))
        scope = resource_spans.scope_spans.add()
        scope.scope.name = "openinference.instrumentation.dspy"
        for _ in range(max(1, spans // SPANS_PER_TRACE)):
            n += 1
            trace_id = run.to_bytes(8, "big") + n.to_bytes(8, "big")
            scope.spans.extend(_trace(rng, trace_id, n * 16, start_ns + n * 1_000_000, content))
        bodies.append(ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString())
    return bodies




def stages(bodies: list[bytes], repeats: int = 3) -> dict[str, object]:
    """Per-span CPU cost (µs, process time: robust to other processes on the machine) of
    each step of ``POST /v1/traces``'s work, in this process; map also without features.

    Each step is timed ``repeats`` times over all bodies; the medians are reported.
    """
    from adaptd.daemon.http import otlp
    from adaptd.daemon.ingest import Limits, prepare
    from adaptd.streams import otel_map
    from adaptd.streams.otel_map import map_spans

    limits = Limits(max_batch_events=10**6)
    received = dt.datetime.now(dt.UTC)
    clock = time.process_time
    runs: dict[str, list[float]] = {"decode": [], "map": [], "prepare": [], "map_without_features": []}
    spans = events = 0
    for _ in range(repeats):
        totals = dict.fromkeys(runs, 0.0)
        spans = events = 0
        for body in bodies:
            t0 = clock()
            decoded = otlp.decode(body, otlp.PROTOBUF)
            t1 = clock()
            mapped = map_spans(decoded, tenant="default")
            t2 = clock()
            prepare(mapped.events, tenant="default", received=received, limits=limits, source=otlp.SOURCE)
            t3 = clock()
            totals["decode"] += t1 - t0
            totals["map"] += t2 - t1
            totals["prepare"] += t3 - t2
            spans += len(decoded)
            events += len(mapped.events)
        decoded_all = [otlp.decode(body, otlp.PROTOBUF) for body in bodies]
        # What the map costs without text features (both the one-value and batch entry points).
        stubs = {"features": lambda value: {"type": "str"},
                 "features_many": lambda values: [{"type": "str"} for _ in values]}
        real = {name: getattr(otel_map, name) for name in stubs if hasattr(otel_map, name)}
        try:
            for name in real:
                setattr(otel_map, name, stubs[name])
            t0 = clock()
            for decoded in decoded_all:
                map_spans(decoded, tenant="default")
            totals["map_without_features"] = clock() - t0
        finally:
            for name, fn in real.items():
                setattr(otel_map, name, fn)
        for key, value in totals.items():
            runs[key].append(value)
    per_span = {k: round(statistics.median(v) / spans * 1e6, 1) for k, v in runs.items()}
    mapping = per_span["decode"] + per_span["map"]
    total = mapping + per_span["prepare"]
    return {"spans": spans, "events": events, "cpu_us_per_span": per_span,
            "mapping_spans_per_cpu_s": round(1e6 / mapping), "total_cpu_us_per_span": round(total, 1),
            "spans_per_cpu_s": round(1e6 / total)}


def duckdb_reference(bodies: list[bytes], capture_content: bool = False) -> dict[str, object]:
    """The machine limit: DuckDB loading the log records of ``bodies`` (what ``otlp.ingest``
    makes of them, as the daemon would write them) from NDJSON into the daemon's migrated
    tables, one transaction per request.  Spans per second of that load alone."""
    import duckdb

    from adaptd.daemon.http import otlp
    from adaptd.daemon.ingest import Limits
    from adaptd.daemon.readmodel.migrations import EVENT_TABLES, migrate

    limits = Limits(max_batch_events=10**6)
    received = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="adaptd-otlp-ref-") as tmp:
        root = Path(tmp)
        files, offset, spans, kinds = [], 0, 0, set()
        for n, body in enumerate(bodies):
            batch = otlp.ingest(body, otlp.PROTOBUF, tenant="default", received=received, limits=limits,
                                capture_content=capture_content)
            lines = []
            for record in batch.records:
                lines.append(record[:-1] + b',"log_offset":%d}\n' % offset)
                kinds.add(json.loads(record)["kind"])
                offset += 1
            path = root / f"{n:06d}.ndjson"
            path.write_bytes(b"".join(lines))
            files.append(path)
            spans += batch.spans
        con = duckdb.connect(str(root / "ref.duckdb"))
        con.execute("SET TimeZone = 'UTC'")
        migrate(con)
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall():
            columns.setdefault(table, []).append((column, dtype))
        kinds_sorted = sorted(kinds)
        union = {"kind": "VARCHAR"}
        for kind in kinds_sorted:
            union.update(columns[EVENT_TABLES[kind]])
        spec = "{" + ", ".join(f"'{c}': '{d}'" for c, d in union.items()) + "}"
        started = time.perf_counter()
        for path in files:
            con.execute("BEGIN TRANSACTION")
            for kind in kinds_sorted:
                table = EVENT_TABLES[kind]
                names = ", ".join(f'"{c}"' for c, _ in columns[table])
                con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM read_json('{path}',"
                            f" format = 'newline_delimited', columns = {spec}) WHERE kind = '{kind}'")
            con.execute("COMMIT")
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        rows = sum(con.execute(f"SELECT count(*) FROM {EVENT_TABLES[k]}").fetchone()[0] for k in kinds_sorted)
        con.close()
    if rows != offset:
        raise SystemExit(f"reference stored {rows} rows of {offset} records")
    return {"duckdb_reference_spans_per_s": round(spans / seconds), "duckdb_reference_rows": rows}


def run(seconds: float, spans: int, connections: int, fsync: str, requests: int,
        content: bool = True, bodies: list[bytes] | None = None) -> dict[str, object]:
    if bodies is None:
        bodies = make_bodies(requests, spans, content=content)
    with daemon_proc.daemon(fsync, prefix="adaptd-otlp-bench-") as (proc, url):
        cpu_before = daemon_proc.cpu_seconds(proc.pid)
        latencies: list[float] = []
        next_body = iter(bodies)
        lock = threading.Lock()
        acked_spans = rejected = failures = 0
        start = time.perf_counter()
        stop_at = start + seconds

        def worker() -> None:
            nonlocal acked_spans, rejected, failures
            headers = {"Content-Type": "application/x-protobuf"}
            with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
                while time.perf_counter() < stop_at:
                    with lock:
                        body = next(next_body, None)
                    if body is None:
                        return
                    t = time.perf_counter()
                    answer = client.post("/v1/traces", content=body)
                    elapsed = time.perf_counter() - t
                    with lock:
                        if answer.status_code == 200:
                            acked_spans += spans
                            rejected += len(answer.content) > 0  # a partial_success was reported
                            latencies.append(elapsed)
                        else:
                            failures += 1

        ack_elapsed, projected_elapsed, stats = daemon_proc.drive(url, worker, connections, start)
        daemon_cpu = daemon_proc.cpu_seconds(proc.pid) - cpu_before
        rss = daemon_proc.peak_rss_mb(proc.pid)
        latencies.sort()
        return {
            "seconds": seconds, "spans_per_request": spans, "connections": connections, "fsync": fsync,
            "requests_acked": len(latencies), "spans_acked": acked_spans, "events_in_log": stats["log_end_offset"],
            "requests_with_partial_success": rejected, "failed_requests": failures,
            "bodies_exhausted": len(latencies) + failures >= len(bodies),
            "acked_spans_per_s": round(acked_spans / ack_elapsed),
            "projected_spans_per_s": round(acked_spans / projected_elapsed),
            "ack_latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "ack_latency_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1)
            if latencies else None,
            "daemon_peak_rss_mb": round(rss, 1), "content": content,
            "daemon_cpu_s": round(daemon_cpu, 1),
            "daemon_cpu_us_per_span": round(daemon_cpu / acked_spans * 1e6, 1) if acked_spans else None,
            "seconds_to_ack": round(ack_elapsed, 2), "seconds_to_project": round(projected_elapsed, 2),
        }


def _in_subprocess(args: argparse.Namespace, baseline: Path | None) -> dict[str, object]:
    """One measurement (``--single``) in a fresh interpreter, with ``baseline`` first on its
    PYTHONPATH (and so on its daemon's) when given."""
    env = dict(os.environ)
    if baseline is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(baseline), *filter(None, [env.get("PYTHONPATH")])])
    argv = [sys.executable, __file__, "--single", "--seconds", str(args.seconds), "--spans", str(args.spans),
            "--connections", str(args.connections), "--requests", str(args.requests), "--fsync", args.fsync,
            *(["--no-content"] if args.no_content else []), *(["--stages"] if args.stages else [])]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _medians(results: list[dict[str, object]]) -> dict[str, float]:
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: statistics.median(float(r[k]) for r in results) for k in keys}  # type: ignore[arg-type]


def _flat(result: dict[str, object]) -> dict[str, object]:
    """``--stages`` results nest the per-step costs: flatten them for the medians."""
    out = {k: v for k, v in result.items() if not isinstance(v, dict)}
    for k, v in (result.get("cpu_us_per_span") or {}).items():  # type: ignore[union-attr]
        out[f"cpu_us_per_span.{k}"] = v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="posting window")
    parser.add_argument("--spans", type=int, default=1000, help="spans per request")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="pre-built unique requests (upper bound)")
    parser.add_argument("--fsync", choices=["batch", "interval"], default="batch")
    parser.add_argument("--no-content", action="store_true", help="spans without input/output/message attributes")
    parser.add_argument("--stages", action="store_true", help="time decode / map / prepare in-process instead")
    parser.add_argument("--runs", type=int, default=1, help="runs of each code, interleaved; medians reported")
    parser.add_argument("--baseline", type=Path, help="also measure the code this directory puts first on PYTHONPATH")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # one measurement, this process
    args = parser.parse_args()
    content = not args.no_content
    if args.single or (args.runs == 1 and args.baseline is None):
        if args.stages:
            print(json.dumps(stages(make_bodies(min(args.requests, 20), args.spans, content=content))))
            return
        bodies = make_bodies(args.requests, args.spans, content=content)
        # The reference loads the records of the bodies the daemon will be sent (at most
        # 40 of them: enough for a stable rate), before the daemon runs.
        reference = duckdb_reference(bodies[:40])
        result = run(args.seconds, args.spans, args.connections, args.fsync, args.requests, content, bodies)
        result.update(reference)
        result["projected_vs_duckdb_reference"] = round(
            result["projected_spans_per_s"] / reference["duckdb_reference_spans_per_s"], 4)  # type: ignore[operator]
        print(json.dumps(result))
        return
    codes: dict[str, Path | None] = {"current": None}
    if args.baseline is not None:
        codes["baseline"] = args.baseline.resolve()
    results: dict[str, list[dict[str, object]]] = {name: [] for name in codes}
    for n in range(args.runs):
        for name, path in codes.items():
            result = _flat(_in_subprocess(args, path))
            results[name].append(result)
            print(json.dumps({"run": n + 1, "code": name, **result}), flush=True)
    summary: dict[str, object] = {name: _medians(rs) for name, rs in results.items()}
    if "baseline" in results:
        cur, base = summary["current"], summary["baseline"]
        # The DuckDB reference runs the same code either way: its ratio would be noise.
        keys = [k for k in cur if (k.endswith("per_s") or k.endswith("per_span"))  # type: ignore[union-attr]
                and not k.startswith("duckdb_reference")]
        summary["current_vs_baseline"] = {k: round(cur[k] / base[k], 2) for k in keys if base.get(k)}  # type: ignore[index,union-attr]
    print(json.dumps({"runs": args.runs, "medians": summary}))


if __name__ == "__main__":
    main()
