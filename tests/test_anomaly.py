"""Anomaly detection: error bursts from raw events, window anomalies, incidents, replay.

Everything runs the real pieces: a ``FileLog`` in ``tmp_path`` holding generated
executions with explicit event times (arriving up to 1 s late, as batched SDKs deliver
them), and a ``ProcessorRuntime`` driving the history processor, the error-burst fast
path and the window anomaly processor over it.  No wall clock: event time is all there is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from adaptd.streams.events import Signal, parse_event
from adaptd.streams.log.file import FileLog
from adaptd.streams.processors.anomaly.error_burst import ErrorBurstProcessor
from adaptd.streams.processors.anomaly.processor import AnomalyConfig, AnomalyProcessor
from adaptd.streams.processors.base import EventBatch, iso_us, to_us
from adaptd.streams.processors.history.processor import HistoryProcessor
from adaptd.streams.processors.runtime import ProcessorRuntime, rerun
from adaptd.streams.processors.windows import US, watermarks

BASE = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
BASE_US = to_us(BASE)
Rate = Callable[[str, np.ndarray], np.ndarray]


def steady_errors(route: str, t: np.ndarray) -> np.ndarray:
    return np.full(len(t), 0.01)


def no_slowdown(route: str, t: np.ndarray) -> np.ndarray:
    return np.ones(len(t))


def generate(seconds: float, *, routes: tuple[str, ...] = ("a", "b"), rps: float = 20.0, seed: int = 0,
             error_p: Rate = steady_errors, slowdown: Rate = no_slowdown,
             silent: Callable[[str, np.ndarray], np.ndarray] | None = None) -> list[bytes]:
    """Executions of program ``qa`` on ``routes`` for ``seconds`` from BASE, ``rps`` each,
    lognormal latency (median 200 ms) times ``slowdown``, errors with probability
    ``error_p``; in arrival order (event time + up to 1 s of delivery delay)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, float, str, bool, float]] = []
    for route in routes:
        n = int(seconds * rps)
        t = np.sort(rng.uniform(0.0, seconds, n))
        keep = np.ones(n, bool) if silent is None else ~silent(route, t)
        error = rng.random(n) < error_p(route, t)
        latency = rng.lognormal(np.log(200.0), 0.4, n) * slowdown(route, t)
        arrival = t + rng.uniform(0.0, 1.0, n)
        rows += [(a, x, route, e, d) for a, x, e, d, k in
                 zip(arrival.tolist(), t.tolist(), error.tolist(), latency.tolist(), keep.tolist()) if k]
    rows.sort()
    return [orjson.dumps({
        "id": f"{seed:08x}-0000-7000-8000-{i:012x}", "kind": "execution", "ts": iso_us(BASE_US + int(x * US)),
        "tenant": "acme", "source": "test", "program": "qa", "route": route, "status": "error" if e else "ok",
        "error_type": "RateLimit" if e else None, "duration_ms": d, "tokens_in": 100, "tokens_out": 20,
        "cost_usd": 0.001,
    }) for i, (_, x, route, e, d) in enumerate(rows)]


def processors() -> list:
    return [HistoryProcessor(), ErrorBurstProcessor(), AnomalyProcessor()]


def filled_log(tmp_path: Path, records: list[bytes], name: str = "log") -> FileLog:
    log = FileLog(tmp_path / name)
    for i in range(0, len(records), 20_000):
        log.append(records[i:i + 20_000])
    return log


def run(log: FileLog, *, batch: int = 20_000, snapshot: Path | None = None) -> ProcessorRuntime:
    runtime = ProcessorRuntime(log, processors(), snapshot_path=snapshot, max_future_s=None, batch=batch,
                               snapshot_every_records=10**9, snapshot_every_s=10**9, clock=lambda: 0.0)
    runtime.drain()
    return runtime


def signals_in(log: FileLog) -> list[dict]:
    """The signal events appended to ``log``, in log order."""
    out, offset = [], 0
    while records := log.read(offset, 50_000):
        offset = records[-1].offset + 1
        out += [e for e in (orjson.loads(r.value) for r in records if b'"signal"' in r.value)
                if e.get("kind") == "signal"]
    return out


def same_signals(a: list[dict], b: list[dict]) -> bool:
    """Same signals (ids and values), in the same order for each key + metric."""
    def per_key(signals: list[dict]) -> list[dict]:
        return sorted(signals, key=lambda s: (s["route"], s["metric"]))  # stable: keeps each key's order
    return per_key(a) == per_key(b)


def seconds_of(iso: str) -> float:
    return (to_us(iso) - BASE_US) / US


def burst(route: str, start: float, end: float = float("inf"), rate: float = 0.30) -> Rate:
    def error_p(r: str, t: np.ndarray) -> np.ndarray:
        return np.where((r == route) & (t >= start) & (t < end), rate, 0.01)
    return error_p


def slow(route: str, start: float, end: float, factor: float = 3.0) -> Rate:
    def slowdown(r: str, t: np.ndarray) -> np.ndarray:
        return np.where((r == route) & (t >= start) & (t < end), factor, 1.0)
    return slowdown


@pytest.fixture(scope="module")
def incident_stream() -> list[bytes]:
    """20 min: an error burst on route a (5:00-6:00) and a p95 x3 slowdown on route b
    (12:00-15:00), both recovering."""
    return generate(1200, seed=7, error_p=burst("a", 300, 360), slowdown=slow("b", 720, 900))


@pytest.fixture(scope="module")
def incident_signals(incident_stream, tmp_path_factory) -> list[dict]:
    log = filled_log(tmp_path_factory.mktemp("incidents"), incident_stream)
    run(log)
    signals = signals_in(log)
    log.close()
    return signals


# ---------------------------------------------------------------- the two requirements


def test_error_burst_from_1_to_30_percent_on_one_route_is_signalled_within_5s(tmp_path) -> None:
    start = 300.0  # five minutes of 1 % errors on both routes first
    log = filled_log(tmp_path, generate(420, seed=1, error_p=burst("a", start)))
    run(log)
    opened = [s for s in signals_in(log) if s["state"] == "open"]
    assert [(s["route"], s["metric"], s["source"]) for s in opened] == [("a", "error_rate", "adaptd.error_burst")]
    (signal,) = opened
    fired = seconds_of(signal["ts"])
    assert start <= fired <= start + 5.0, fired
    assert signal["window_end"] == signal["ts"] and signal["signal_type"] == "anomaly"
    why = signal["explanation"]
    assert why["observed"] > why["expected"][1] > why["baseline"] and why["errors"] >= 5
    assert 0.5 <= signal["score"] < 1.0
    assert Signal.model_validate(signal).incident_id is not None  # the event contract holds
    log.close()


def test_a_steady_hour_raises_no_signal(tmp_path) -> None:
    log = filled_log(tmp_path, generate(3600, seed=2))
    stats = run(log).stats()["processors"]
    assert signals_in(log) == []
    # ...and not because nothing looked: every window and event went through the detectors
    # 2 keys x 2 sizes x 5 metrics (no feedback, so no quality series)
    assert stats["anomaly"]["windows"] == 2 * (359 + 59) and stats["anomaly"]["series"] == 2 * 2 * 5
    assert stats["error_burst"]["keys"] == 2 and stats["error_burst"]["stale_events"] == 0
    log.close()


# ---------------------------------------------------------------- windows and incidents


def test_a_p95_slowdown_on_one_key_is_signalled_from_the_windows(incident_signals) -> None:
    latency = [s for s in incident_signals if s["source"] == "adaptd.anomaly"]
    opened = {s["metric"]: s for s in latency if s["state"] == "open"}
    assert {s["route"] for s in latency} == {"b"}
    p95 = opened["p95_ms"]
    assert 720 <= seconds_of(p95["ts"]) <= 730  # the first 10 s window of the slowdown
    why = p95["explanation"]
    assert why["window_size"] == "10s" and why["observed"] > why["expected"][1]
    assert why["observed"] == pytest.approx(3 * why["baseline"], rel=0.25)
    assert p95["severity"] in ("warning", "critical")


def test_one_incident_is_one_open_and_one_resolved_signal(incident_signals) -> None:
    by_incident: dict[str, list[dict]] = {}
    for s in incident_signals:
        by_incident.setdefault(s["incident_id"], []).append(s)
    keys = sorted((s[0]["route"], s[0]["metric"]) for s in by_incident.values())
    assert keys == [("a", "error_rate"), ("b", "p95_ms"), ("b", "p99_ms")]
    for signals in by_incident.values():
        states = [s["state"] for s in signals]
        assert states[0] == "open" and states[-1] == "resolved", states
        assert set(states[1:-1]) <= {"update"} and len(states) <= 3  # at most one severity update
        assert signals[-1]["severity"] == "info" and signals[-1]["explanation"]["reason"] == "back in range"
    resolved = {s[0]["metric"]: seconds_of(s[-1]["ts"]) for s in by_incident.values()}
    assert 360 + 30 <= resolved["error_rate"] <= 360 + 60 + 30 + 5  # 30 calm s, once the 60 s window is clear
    assert 900 + 30 <= resolved["p95_ms"] <= 900 + 60  # three calm 10 s windows after the slowdown
    assert len({s["id"] for s in incident_signals}) == len(incident_signals)


def test_an_incident_on_a_route_that_falls_silent_is_resolved_by_the_watermark(tmp_path) -> None:
    # route a bursts at 5:00 and stops taking traffic at 5:20 (say a breaker opened)
    records = generate(600, seed=3, error_p=burst("a", 300),
                       silent=lambda r, t: (r == "a") & (t >= 320))
    log = filled_log(tmp_path, records)
    run(log)
    states = [(s["route"], s["state"]) for s in signals_in(log)]
    assert states[0] == ("a", "open") and states[-1] == ("a", "resolved")
    assert seconds_of(signals_in(log)[-1]["ts"]) <= 320 + 60 + 30 + 1
    log.close()


def test_an_anomaly_seen_in_both_window_sizes_is_one_incident(tmp_path) -> None:
    log = filled_log(tmp_path, generate(1500, seed=5, slowdown=slow("b", 1200, 1500)))
    quick = AnomalyConfig(warmup=5, metrics=("p95_ms",))  # 1 min windows warm up within the stream
    alone = [e for e in rerun(log, [HistoryProcessor(), AnomalyProcessor(AnomalyConfig(
        warmup=5, metrics=("p95_ms",), sizes=("1m",)))], max_future_s=None) if e["kind"] == "signal"]
    assert [s["explanation"]["window_size"] for s in alone if s["state"] == "open"] == ["1m"]  # it sees it too
    both = [e for e in rerun(log, [HistoryProcessor(), AnomalyProcessor(quick)], max_future_s=None)
            if e["kind"] == "signal"]
    assert [s["state"] for s in both if s["state"] != "update"] == ["open"]  # (the slowdown lasts to the end)
    assert {(s["incident_id"], s["explanation"]["window_size"]) for s in both} == {(both[0]["incident_id"], "10s")}
    log.close()


def test_a_window_incident_whose_key_falls_silent_resolves_for_lack_of_data(tmp_path) -> None:
    # route b slows down at 5:00 and gets no traffic from 6:00 (route a goes on)
    records = generate(1200, seed=6, slowdown=slow("b", 300, 360), silent=lambda r, t: (r == "b") & (t >= 360))
    log = filled_log(tmp_path, records)
    run(log)
    p95 = [s for s in signals_in(log) if s["metric"] == "p95_ms"]
    assert [s["state"] for s in p95] == ["open", "resolved"]
    assert p95[1]["explanation"]["reason"] == "no data"
    assert seconds_of(p95[1]["ts"]) == 360 + 30 * 10  # 30 silent 10 s windows after the last one seen
    log.close()


# ---------------------------------------------------------------- determinism


def test_other_batch_sizes_give_identical_signals(incident_stream, incident_signals, tmp_path) -> None:
    log = filled_log(tmp_path, incident_stream)
    for batch in (97, 4_000):
        again = [e for e in rerun(log, processors(), max_future_s=None, batch=batch) if e["kind"] == "signal"]
        assert same_signals(again, incident_signals)
    log.close()


def test_the_fast_path_is_independent_of_batch_boundaries_down_to_single_events() -> None:
    records = generate(420, seed=4, error_p=burst("a", 300, 330))
    events = [orjson.loads(r) for r in records]

    def feed(cuts: list[int]) -> list[dict]:
        proc, high, out = ErrorBurstProcessor(), -(2**62), []
        state = proc.initial_state()
        for a, b in zip([0, *cuts], [*cuts, len(events)]):
            batch = EventBatch.from_events(events[a:b])
            batch.wm, high = watermarks(batch.ts, batch.append_ms, high, 5 * US, None)
            state, emitted = proc.process(state, batch, high - 5 * US)
            out += emitted
        return out

    whole = feed([])
    assert [s["state"] for s in whole] == ["open", "update", "resolved"]
    rng = np.random.default_rng(0)
    ragged = sorted(set(rng.integers(1, len(events), 400).tolist()))
    burst_events = [i for i, e in enumerate(events) if 295 <= seconds_of(e["ts"]) <= 310]
    single = list(range(burst_events[0], burst_events[-1]))  # one event per batch through the onset
    assert feed(ragged) == whole
    assert feed(single) == whole


def test_replay_with_a_fresh_runtime_reproduces_the_live_signals(incident_stream, tmp_path) -> None:
    """Live: records arrive in uneven chunks while the runtime steps with small batches."""
    log = FileLog(tmp_path / "log")
    live = ProcessorRuntime(log, processors(), snapshot_path=tmp_path / "snap.pkl", max_future_s=None, batch=613,
                            snapshot_every_records=5_000, snapshot_every_s=10**9, clock=lambda: 0.0)
    rng = np.random.default_rng(1)
    i = 0
    while i < len(incident_stream):
        n = int(rng.integers(1, 3_000))
        log.append(incident_stream[i:i + n])
        i += n
        live.step()
    live.drain()
    appended = signals_in(log)
    assert len(appended) >= 6
    again = [e for e in rerun(log, processors(), max_future_s=None) if e["kind"] == "signal"]
    assert same_signals(again, appended)
    log.close()


def test_a_restart_from_a_snapshot_taken_mid_incident_continues_identically(incident_stream, incident_signals,
                                                                           tmp_path) -> None:
    cut = next(i for i, r in enumerate(incident_stream) if seconds_of(orjson.loads(r)["ts"]) > 330)
    log = filled_log(tmp_path, incident_stream[:cut])
    first = run(log, snapshot=tmp_path / "snap.pkl")
    assert first.stats()["processors"]["error_burst"]["open_incidents"] == 1  # the burst is open
    processed = log.end_offset()  # the events and what the processors appended after them
    log.append(incident_stream[cut:])
    second = run(log, snapshot=tmp_path / "snap.pkl")
    assert second.resumed_at == processed  # resumed from the snapshot, not the log's start
    assert same_signals(signals_in(log), incident_signals)
    log.close()


def test_signals_parse_as_signal_events_and_their_ids_are_derived(incident_signals) -> None:
    for s in incident_signals:
        event = parse_event(s)
        assert event.kind == "signal" and event.signal_type == "anomaly"
        assert s["source"] in ("adaptd.error_burst", "adaptd.anomaly")
    opened = [s for s in incident_signals if s["state"] == "open"]
    assert len({s["incident_id"] for s in opened}) == len(opened)
