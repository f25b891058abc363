"""A deterministic workload for the dashboard tests and benchmark: fixed times and ids.

Two programs over four minutes of event time: ``qa`` (configured for routing: routes
``primary`` and ``backup``; ``primary`` fails through the last minute, which opens its
breaker) and ``summarize`` (not configured: routes seen in the history only).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

NS = uuid.UUID("0d5c0b1e-7a4e-4d3c-9b2a-2f6a1c9e8d70")
START = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)

#: Two tenants: ``ops`` (token ``t-admin``, an admin) and ``guest`` (``t-viewer``).
TOKENS = """
[[tenants]]
name = "ops"
tokens = ["t-admin"]
admin = true

[[tenants]]
name = "guest"
tokens = ["t-viewer"]
admin = false
"""

CONFIG = """
[[routing]]
program = "qa"
[[routing.routes]]
name = "primary"
model = "openai/gpt-4o-mini"
[[routing.routes]]
name = "backup"
model = "openai/gpt-4.1-nano"
"""


def optimize_config(root: Path) -> str:
    """``CONFIG`` plus ``summarize`` registered for optimization: the offline toy task of
    ``adaptd.daemon.demo.toy`` with example files written under ``root``, BootstrapFewShot
    always (fast, deterministic) and no automatic runs (only the dashboard starts one)."""
    from adaptd.daemon.demo import toy

    files = {}
    for name, seed, n in (("train", 1, 8), ("dev", 2, 12)):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(toy.example_line(q)) + "\n" for q in toy.questions("symbols", n, seed)))
        files[f"{name}set"] = str(path)
    return CONFIG + f"""
[[optimize]]
program = "summarize"
factory = "adaptd.daemon.demo.toy:make_program"
metric = "adaptd.daemon.demo.toy:exact_match"
lm = "adaptd.daemon.demo.toy:make_lm"
optimizer = "BootstrapFewShot"
trigger_on_drift = false
trainset = {json.dumps(files["trainset"])}
devset = {json.dumps(files["devset"])}
"""


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NS, "/".join(map(str, parts))))


def workload(start: dt.datetime = START, seconds: int = 240, fail_after: int = 150) -> list[dict]:
    """Executions, LM calls and feedback, one per route per second, in time order."""
    routes = (("qa", "primary", "gpt-4o-mini", 420.0, 0.0004, 0.72), ("qa", "backup", "gpt-4.1-nano", 260.0, 0.0001, 0.81),
              ("summarize", "fast", "haiku", 180.0, 0.0002, 0.77), ("summarize", "slow", "opus", 900.0, 0.003, 0.9))
    out: list[dict] = []
    for s in range(seconds):
        ts = start + dt.timedelta(seconds=s)
        for program, route, model, latency, cost, quality in routes:
            failing = route == "primary" and s >= fail_after
            status = "error" if failing else "ok"
            jitter = (s * 37 + len(route) * 11) % 100
            ex = _id("ex", program, route, s)
            out.append({"id": ex, "kind": "execution", "ts": ts.isoformat(), "program": program, "route": route,
                        "model": model, "status": status, "duration_ms": latency + jitter,
                        "tokens_in": 200, "tokens_out": 50, "cost_usd": cost,
                        "error_type": "APIError" if failing else None})
            out.append({"id": _id("lm", program, route, s), "kind": "lm_call", "ts": ts.isoformat(),
                        "execution_id": ex, "program": program, "route": route, "model": model, "status": status,
                        "duration_ms": latency + jitter - 5, "tokens_in": 200, "tokens_out": 50, "cost_usd": cost})
            if not failing and s % 5 == 0:
                out.append({"id": _id("fb", program, route, s), "kind": "feedback", "ts": ts.isoformat(),
                            "execution_id": ex, "program": program, "metric": "exact_match",
                            "score": quality + (jitter - 50) / 1000})
    return out


def optimizer_runs(start: dt.datetime = START) -> list[dict]:
    """Two finished jobs and one running, as the optimizer would report them."""
    rows = [("job-1", "qa", "MIPROv2", "succeeded", 0.71, 0.79, 1.8, 420, 30),
            ("job-2", "summarize", "BootstrapFewShot", "succeeded", 0.77, 0.83, 0.6, 150, 60),
            ("job-3", "qa", "GEPA", "running", 0.79, None, 0.2, 40, 200)]
    return [{"id": _id("opt", job, status), "kind": "optimizer_run", "ts": (start + dt.timedelta(seconds=t)).isoformat(),
             "job_id": job, "program": program, "optimizer": optimizer, "status": status,
             "score_before": before, "score_after": after, "cost_usd": cost, "lm_calls": calls}
            for job, program, optimizer, status, before, after, cost, calls, t in rows]
