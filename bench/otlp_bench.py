"""OTLP ingest benchmark: DSPy-like OpenInference spans posted to /v1/traces, acked and projected.

Starts a real daemon (``adaptd up``) in a temporary data dir, pre-builds protobuf
``ExportTraceServiceRequest`` bodies (every span id unique; traces shaped like what
``openinference-instrumentation-dspy`` emits for a ChainOfThought: 5 spans, one of them
the LM call with model, provider, token counts and messages), posts them from a few
concurrent connections for ``--seconds``, and reports:

- spans/s acknowledged (durable in the file log) over the posting window;
- spans/s projected: spans acked / time from the first post until the projector's
  position reaches the log end;
- p50 / p99 latency of one acknowledged request; the daemon's peak RSS.

``--stages`` instead times the daemon's per-request work in this process (decode, map,
prepare) without HTTP, the log or DuckDB, to show where the time goes.

``--no-content`` drops the input / output / message attributes from the spans, to show
what the text features (sketches) of content cost.

Usage: python bench/otlp_bench.py [--seconds 20] [--spans 1000] [--connections 3] [--no-content] [--stages]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
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




def stages(bodies: list[bytes]) -> dict[str, object]:
    """Per-span CPU cost (µs, process time: robust to other processes on the machine) of
    each step of ``POST /v1/traces``'s work, in this process; map also without features."""
    from adaptd.daemon.http import otlp
    from adaptd.daemon.ingest import Limits, prepare
    from adaptd.streams.otel_map import map_spans

    limits = Limits(max_batch_events=10**6)
    received = dt.datetime.now(dt.UTC)
    import adaptd.streams.otel_map as otel_map

    totals = {"decode": 0.0, "map": 0.0, "prepare": 0.0}
    spans = events = 0
    clock = time.process_time
    for body in bodies:
        t0 = clock()
        decoded = otlp.decode(body, otlp.PROTOBUF)
        t1 = clock()
        mapped = map_spans(decoded)
        t2 = clock()
        prepare(mapped.events, tenant="default", received=received, limits=limits, source=otlp.SOURCE)
        t3 = clock()
        totals["decode"] += t1 - t0
        totals["map"] += t2 - t1
        totals["prepare"] += t3 - t2
        spans += len(decoded)
        events += len(mapped.events)
    decoded_all = [otlp.decode(body, otlp.PROTOBUF) for body in bodies]
    real_features = otel_map.features
    otel_map.features = lambda value: {"type": "str"}  # what the map costs without text features
    try:
        t0 = clock()
        for decoded in decoded_all:
            map_spans(decoded)
        map_no_features = clock() - t0
    finally:
        otel_map.features = real_features
    per_span = {k: round(v / spans * 1e6, 1) for k, v in totals.items()}
    per_span["map_without_features"] = round(map_no_features / spans * 1e6, 1)
    total = sum(totals.values())
    return {"spans": spans, "events": events, "cpu_us_per_span": per_span,
            "total_cpu_us_per_span": round(total / spans * 1e6, 1), "spans_per_cpu_s": round(spans / total)}



def run(seconds: float, spans: int, connections: int, fsync: str, requests: int,
        content: bool = True) -> dict[str, object]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="posting window")
    parser.add_argument("--spans", type=int, default=1000, help="spans per request")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="pre-built unique requests (upper bound)")
    parser.add_argument("--fsync", choices=["batch", "interval"], default="batch")
    parser.add_argument("--no-content", action="store_true", help="spans without input/output/message attributes")
    parser.add_argument("--stages", action="store_true", help="time decode / map / prepare in-process instead")
    args = parser.parse_args()
    if args.stages:
        print(json.dumps(stages(make_bodies(min(args.requests, 20), args.spans, content=not args.no_content))))
        return
    print(json.dumps(run(args.seconds, args.spans, args.connections, args.fsync, args.requests,
                         content=not args.no_content)))


if __name__ == "__main__":
    main()
