"""Shared kit of the optimization tests: configs, toy-task traffic, job polling."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import dspy
import httpx
import orjson
from conftest import wait_until

from adaptd.daemon.demo import toy
from adaptd.streams.events import new_id

TOY = {"factory": "adaptd.daemon.demo.toy:make_program", "metric": "adaptd.daemon.demo.toy:exact_match",
       "lm": "adaptd.daemon.demo.toy:make_lm"}
FINAL = ("succeeded", "failed", "interrupted", "budget_exhausted")


def toml_value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


def write_config(path: Path, *, optimize: dict[str, Any] | None = None, routing: bool = True,
                 processors: dict[str, Any] | None = None, min_samples: int = 10,
                 extra: list[dict[str, Any]] = ()) -> Path:
    """A daemon config with the toy program registered (and routed on blue/green), plus
    ``extra`` ``[[optimize]]`` entries (toy code under other program names)."""
    lines = []
    if processors:
        lines.append("[processors]")
        lines += [f"{k} = {toml_value(v)}" for k, v in processors.items()]
    if routing:
        lines += ["[[routing]]", 'program = "toy"', f"min_samples = {min_samples}", "min_change_interval_s = 1",
                  "[[routing.routes]]", 'name = "blue"', 'model = "toy/blue"',
                  "[[routing.routes]]", 'name = "green"', 'model = "toy/green"']
    for entry in ({"program": "toy", **TOY, **(optimize or {})}, *({**TOY, **e} for e in extra)):
        lines.append("[[optimize]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def example_file(path: Path, fam: str, n: int, seed: int) -> str:
    """A JSONL example file of ``n`` toy questions of ``fam`` with their right answers."""
    path.write_text("".join(json.dumps(toy.example_line(q)) + "\n" for q in toy.questions(fam, n, seed)))
    return str(path)


def production(questions: list[str], start: dt.datetime, spacing_s: float, *, lm_seed: int = 0, name: str = "toy",
               program: dspy.Module | None = None, route: str | None = None,
               score_of: Any = None) -> list[dict[str, Any]]:
    """Executions (raw inputs / outputs, as ``capture_content=True`` sends them) of the real
    toy program under ``ToyLM`` for ``questions``, each with its feedback (exact match, or
    ``score_of(question, answer)``), at event times ``start + i * spacing_s``."""
    program = program or toy.make_program()
    out = []
    with dspy.context(lm=toy.ToyLM(seed=lm_seed)):
        for i, q in enumerate(questions):
            answer = program(question=q).answer
            ts = (start + dt.timedelta(seconds=i * spacing_s)).isoformat()
            exe = {"id": str(new_id()), "kind": "execution", "program": name, "ts": ts, "duration_ms": 40.0,
                   "inputs": {"question": q}, "outputs": {"answer": answer}, "status": "ok"}
            if route is not None:
                exe["route"] = route
            score = score_of(q, answer) if score_of else float(answer == toy.solve(q))
            out.append(exe)
            out.append({"id": str(new_id()), "kind": "feedback", "execution_id": exe["id"], "program": name,
                        "ts": ts, "metric": "exact_match", "score": score})
    return out


def post(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 2000):
        answer = client.post("/v1/events", content=orjson.dumps(events[i:i + 2000]))
        assert answer.status_code == 200 and not answer.json()["rejected"], answer.text


def wait_job(client: httpx.Client, job_id: str, statuses: tuple[str, ...] = FINAL, timeout: float = 60) -> dict:
    """The job's latest event once its status is one of ``statuses``."""
    def done() -> dict | None:
        r = client.get(f"/v1/optimization/jobs/{job_id}")
        return r.json()["latest"] if r.status_code == 200 and r.json()["latest"]["status"] in statuses else None
    return wait_until(done, timeout=timeout, interval=0.1)


def timeline(client: httpx.Client, program: str = "toy") -> list[dict[str, Any]]:
    """The program's optimization timeline (signals, jobs, rollout steps), in log order."""
    r = client.get(f"/v1/optimization/programs/{program}/timeline")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def live_request(rng: random.Random, table: dict[str, Any]) -> tuple[str, float]:
    """A route drawn by the table's weights, with its probability."""
    routes = [(r["name"], r["weight"]) for r in table["routes"] if r["weight"] > 0]
    x, acc = rng.random(), 0.0
    for name, w in routes:
        acc += w
        if x < acc:
            return name, w
    return routes[-1]
