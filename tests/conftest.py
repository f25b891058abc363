"""Shared test kit: the harness of ``adaptd.daemon.testing`` (free ports, condition waits,
a real daemon in a subprocess or in process), the fixtures built on it, and the event
builders the processor tests share."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adaptd.daemon.testing import DaemonProcess as _DaemonProcess
from adaptd.daemon.testing import InProcessDaemon, MemoryLog, free_port, wait_until
from adaptd.streams.events import new_id

__all__ = ["BASE", "REPO", "DaemonProcess", "InProcessDaemon", "MemoryLog", "ev", "free_port", "messy_events",
           "past_minute", "post_events", "run_cli", "wait_until"]

REPO = Path(__file__).resolve().parents[1]


class DaemonProcess(_DaemonProcess):
    """The harness' daemon, run from the repository root (as a user in a checkout would)."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        kwargs.setdefault("cwd", REPO)
        super().__init__(data_dir, **kwargs)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons in ``tmp_path``; every one started is ended after the test."""
    started: list[DaemonProcess] = []

    def make(name: str = "data", **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path / name, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=10)


@pytest.fixture
def inprocess_daemon(tmp_path: Path) -> Iterator[Callable[..., InProcessDaemon]]:
    """Start in-process daemons (uvicorn in a thread) for ``Settings``; all stopped after the test.

    Call it with a ``Settings`` (its data dir under ``tmp_path``, for instance); it returns
    the started daemon.
    """
    started: list[InProcessDaemon] = []

    def make(settings: Any) -> InProcessDaemon:
        d = InProcessDaemon(settings)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def exporter() -> Any:
    """An in-memory exporter: what an SDK ``Client`` sent, without a daemon."""
    from adaptd.adapters import InMemoryExporter

    return InMemoryExporter()


@pytest.fixture
def client(exporter: Any) -> Iterator[Any]:
    """An SDK ``Client`` sending to ``exporter`` (no spill file, 10 ms batches); shut down after."""
    from adaptd.adapters import Client

    c = Client(exporter=exporter, spill_dir=False, schedule_delay_ms=10)
    yield c
    c.shutdown(timeout=5)


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``adaptd ARGS`` as a subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "adaptd.daemon.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, input=input, timeout=timeout)


# ---------------------------------------------------------------- events for the processor tests

BASE = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def ev(kind: str, t: float, **fields: Any) -> dict[str, Any]:
    """An event of ``kind`` at ``BASE + t`` seconds (program ``qa`` unless given)."""
    event = {"id": str(new_id()), "ts": BASE + dt.timedelta(seconds=t), "kind": kind, "tenant": "acme"}
    if kind in ("execution", "lm_call"):
        event["program"] = "qa"
    if kind == "lm_call":
        event["model"] = "gpt"
    return {**event, **fields}


def messy_events(n: int, seed: int) -> list[dict]:
    """Several keys, errors, LM calls, feedback, re-sends, and events up to 20 s out of order."""
    rnd = random.Random(seed)
    events, runs = [], []
    for i in range(n):
        t = i * 0.05 + rnd.choice([0, 0, 0, 0, -rnd.uniform(0, 20)])
        roll = rnd.random()
        if roll < 0.03 and events:
            events.append(dict(rnd.choice(events)))
        elif roll < 0.55:
            e = ev("execution", t, program=rnd.choice(["qa", "sum"]), module=rnd.choice([None, "cot", ""]),
                   route=rnd.choice(["a", "b"]), duration_ms=rnd.expovariate(1 / 50),
                   status="error" if rnd.random() < 0.1 else "ok", error_type=rnd.choice(["Timeout", "Rate", None]),
                   tokens_in=rnd.randrange(100), cost_usd=rnd.random() / 1000)
            runs.append(e)
            events.append(e)
        elif roll < 0.85:
            events.append(ev("lm_call", t, route=rnd.choice(["a", "b"]), duration_ms=rnd.expovariate(1 / 20),
                             cache_hit=rnd.choice([True, False, None]), cost_usd=rnd.random() / 1e4))
        elif runs:
            events.append(ev("feedback", t, execution_id=rnd.choice(runs)["id"], score=rnd.random()))
    return events


def past_minute() -> dt.datetime:
    """A minute boundary an hour ago: event times a real daemon accepts as the past."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return now.replace(second=0, microsecond=0)


def post_events(url: str, events: list[dict]) -> None:
    """POST ``events`` (``ts`` as datetimes) to a daemon without tenants; all must be accepted."""
    body = [{**e, "ts": e["ts"].isoformat()} for e in events]
    answer = httpx.post(f"{url}/v1/events", json=body, timeout=10).json()
    assert answer["accepted"] == len(events), answer
