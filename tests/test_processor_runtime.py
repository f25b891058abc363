"""The embedded processor runtime on a real file log: output, snapshots, restarts, replay.

Event times are explicit (``conftest.BASE`` onwards); the runtime's time-based
snapshot cadence runs on an injected clock that never moves unless a test moves it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adaptd.daemon.readmodel.projector import Projector
from adaptd.daemon.readmodel.replay import check_derived, replay, tables_equal
from adaptd.daemon.readmodel.store import Store
from adaptd.streams.events import derived_id, parse_event
from adaptd.streams.log.file import FileLog
from adaptd.streams.processors.history.processor import HistoryProcessor
from adaptd.streams.processors.runtime import ProcessorRuntime, rerun

try:
    from conftest import ev, messy_events, past_minute, post_events, run_cli, wait_until
except ImportError:  # tests/ imported as a package
    from tests.conftest import ev, messy_events, past_minute, post_events, run_cli, wait_until


class FrozenClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def encode(events: list[dict]) -> list[bytes]:
    return [orjson.dumps({**e, "ts": e["ts"].isoformat()}) for e in events]


def make_runtime(log: FileLog, tmp_path: Path, processors: list | None = None, **options: Any) -> ProcessorRuntime:
    settings = {"snapshot_path": tmp_path / "snapshot.pkl", "max_future_s": None, "batch": 500,
                "snapshot_every_records": 10**9, "snapshot_every_s": 10**9, "clock": FrozenClock(), **options}
    return ProcessorRuntime(log, processors or [HistoryProcessor()], **settings)


def derived(log: FileLog, kind: str = "window") -> list[tuple[int, dict]]:
    """(offset, event) of every ``kind`` record in the log."""
    out, offset = [], 0
    while records := log.read(offset, 10_000):
        offset = records[-1].offset + 1
        for r in records:
            try:
                event = orjson.loads(r.value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("kind") == kind:
                out.append((r.offset, event))
    return out


@pytest.fixture
def log(tmp_path: Path):
    file_log = FileLog(tmp_path / "log")
    yield file_log
    file_log.close()


def test_closed_windows_are_appended_and_the_position_committed_only_after_a_snapshot(log, tmp_path) -> None:
    log.append(encode([ev("execution", t, duration_ms=5.0) for t in range(0, 31)]))  # 31 records
    clock = FrozenClock()
    rt = make_runtime(log, tmp_path, batch=100, snapshot_every_s=30, clock=clock)
    assert rt.step()
    windows = derived(log)
    # watermark 30 - 5 = 25 s: [0, 10) and [10, 20) closed, right after the source events
    assert [(off, w["window_start"][11:19], w["count"]) for off, w in windows] == [
        (31, "10:00:00", 10), (32, "10:00:10", 10)]
    assert all(parse_event(w).kind == "window" for _, w in windows)
    assert log.committed("processors") is None and not (tmp_path / "snapshot.pkl").exists()
    clock.now = 30.0  # the time-based cadence is due at the next step
    assert rt.step()  # reads back its own two windows (skipped: never a source kind)
    assert rt.events == 31 and rt.records_read == 33 and rt.outputs == 2
    assert (tmp_path / "snapshot.pkl").exists() and log.committed("processors") == 33 == rt.snapshot_position
    assert not rt.step() and rt.lag() == 0


def test_restart_resumes_from_the_snapshot_without_rereading_the_log(log, tmp_path) -> None:
    events = messy_events(4000, seed=1)
    log.append(encode(events[:3000]))
    first = make_runtime(log, tmp_path)
    first.drain()
    end = log.end_offset()
    assert first.position == end and first.snapshot_position == end
    log.append(encode(events[3000:]))
    second = make_runtime(log, tmp_path)
    assert second.resumed_at == end
    second.drain()
    assert second.records_read == len(events) - 3000 + second.outputs  # what came after, and its own outputs
    assert second.states["history"].seq == len(events)  # the state came back with the snapshot
    # Together they emitted exactly what one uninterrupted run emits.
    live = [w for _, w in derived(log)]
    assert live == rerun(log, [HistoryProcessor()], max_future_s=None) and len(live) > 50


def test_a_crash_between_output_and_snapshot_re_emits_identical_windows(log, tmp_path) -> None:
    log.append(encode(messy_events(3000, seed=2)))
    crashed = make_runtime(log, tmp_path)
    while crashed.step():  # outputs appended, never snapshotted: then the process "dies"
        pass
    emitted = [w for _, w in derived(log)]
    assert emitted and crashed.snapshot_position is None
    again = make_runtime(log, tmp_path)
    assert again.resumed_at == 0
    again.drain()
    windows = [w for _, w in derived(log)]
    assert len(windows) == 2 * len(emitted)
    by_id: dict[str, list[dict]] = {}
    for w in windows:
        by_id.setdefault(w["id"], []).append(w)
    assert all(len(ws) == 2 and ws[0] == ws[1] for ws in by_id.values())
    # Projection keeps one row per id.
    store = Store(tmp_path / "db.duckdb")
    try:
        store.project(log.read(0, 100_000))
        assert store.counts()["perf_windows"] == len(emitted)
    finally:
        store.close()
    assert check_derived(log, [HistoryProcessor()], lateness_s=5.0, max_future_s=None).equal


def test_replay_reproduces_the_live_derived_events_and_tables(log, tmp_path) -> None:
    """Live: the runtime and the projector as threads, events arriving in uneven chunks, one restart."""
    events = messy_events(5000, seed=4)
    store = Store(tmp_path / "live.duckdb")
    projector = Projector(log, store, batch=300, poll_s=0.02)
    projector.start()
    rt = make_runtime(log, tmp_path, batch=97, poll_s=0.02, snapshot_every_records=700)
    rt.start()
    rnd = random.Random(8)
    cuts = sorted(rnd.sample(range(1, len(events)), 30))
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(events)])):
        log.append(encode(events[a:b]))
        if i == 15:  # restart in the middle: stop (drain + snapshot) and start a new runtime
            assert rt.stop(timeout=30)
            rt = make_runtime(log, tmp_path, batch=211, poll_s=0.02, snapshot_every_records=500)
            assert rt.resumed_at > 0
            rt.start()
    assert rt.stop(timeout=30) and rt.errors == 0
    assert projector.wait_for(log.end_offset() - 1, timeout=30) and projector.stop(timeout=10)
    store.close()
    check = check_derived(log, [HistoryProcessor()], lateness_s=5.0, max_future_s=None, batch=1000)
    assert check.equal and check.live > 100, check
    replay(log, tmp_path / "replayed.duckdb")
    assert tables_equal(tmp_path / "live.duckdb", tmp_path / "replayed.duckdb") == []
    # A window the log did not hold would be found: tamper with one value.
    (_, window), *_ = derived(log)
    log.append([orjson.dumps({**window, "count": window["count"] + 1})])
    tampered = check_derived(log, [HistoryProcessor()], lateness_s=5.0, max_future_s=None)
    assert tampered.different == 1 and not tampered.consistent


def test_late_events_are_counted_in_the_runtime_stats(log, tmp_path) -> None:
    log.append(encode([ev("execution", 1), ev("execution", 20), ev("execution", 2), ev("execution", 3)]))
    rt = make_runtime(log, tmp_path)
    rt.drain()
    stats = rt.stats()
    assert stats["late_events"] == 2 and stats["processors"]["history"]["late"] == {"10s": 2, "1m": 0, "1h": 0}
    assert stats["watermark"] == "2026-11-22T10:00:15+00:00" and stats["lag"] == 0
    (w,) = [w for _, w in derived(log)]
    assert w["count"] == 1  # the late pair is not in the closed window


def test_unreadable_records_are_skipped_and_counted(log, tmp_path) -> None:
    good = [ev("execution", 1), ev("execution", 30)]
    no_id = {**ev("execution", 2)}
    no_id.pop("id")
    log.append([b"\xff\xfe", b"{not json", encode([good[0]])[0], orjson.dumps({**no_id, "ts": "2026-11-22T10:00:02Z"}),
                b'{"kind": "dead_letter", "reason": "x"}', encode([good[1]])[0]])
    rt = make_runtime(log, tmp_path)
    rt.drain()
    assert rt.unreadable == 3 and rt.events == 2 and rt.errors == 0
    assert [w["count"] for _, w in derived(log) if w["window_size"] == "10s"] == [1]


def test_a_failing_step_reloads_the_snapshot_so_nothing_counts_twice(log, tmp_path) -> None:
    class Flaky(HistoryProcessor):
        fail = False

        def process(self, state, batch, watermark):
            state, out = super().process(state, batch, watermark)
            if self.fail:  # after updating the state in place, like a crash half-way
                raise RuntimeError("boom")
            return state, out

    flaky = Flaky()
    log.append(encode([ev("execution", t) for t in range(5)]))
    rt = make_runtime(log, tmp_path, processors=[flaky])
    rt.drain()
    log.append(encode([ev("execution", t) for t in range(5, 40)]))
    flaky.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        rt.step()
    assert rt.position == 5 and rt.states["history"].seq == 5  # back at the snapshot
    flaky.fail = False
    rt.drain()
    assert [w["count"] for _, w in derived(log) if w["window_size"] == "10s"] == [10, 10, 10]


def test_a_changed_configuration_rebuilds_from_the_log(log, tmp_path) -> None:
    log.append(encode([ev("execution", t) for t in range(0, 30, 3)]))
    make_runtime(log, tmp_path).drain()
    same = make_runtime(log, tmp_path)
    assert same.resumed_at == log.end_offset()
    other = make_runtime(log, tmp_path, processors=[HistoryProcessor(["10s", "1m"])])
    assert other.resumed_at == 0
    (tmp_path / "snapshot.pkl").write_bytes(b"damaged")
    assert make_runtime(log, tmp_path).resumed_at == 0


ALARM_NS = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


class ErrorAlarm:
    """A toy derived processor: a signal per 10 s window with an error rate >= 50 %."""

    name, upstream = "alarm", "history"

    def initial_state(self) -> dict:
        return {"seen": 0}

    def config(self) -> dict:
        return {"threshold": 0.5}

    def metrics(self, state: dict) -> dict:
        return dict(state)

    def process(self, state: dict, windows: list[dict], watermark: int) -> tuple[dict, list[dict]]:
        out = []
        for w in windows:
            if w["window_size"] != "10s":
                continue
            state["seen"] += 1
            if w["error_rate"] is not None and w["error_rate"] >= 0.5:
                out.append({"id": str(derived_id(ALARM_NS, "alarm", w["id"])), "ts": w["ts"],
                            "kind": "signal", "tenant": w["tenant"], "source": "adaptd.alarm", "signal_type": "anomaly",
                            "program": w["program"], "metric": "error_rate", "score": w["error_rate"],
                            "window_start": w["window_start"], "window_end": w["window_end"]})
        return state, out


def test_a_derived_processor_reads_the_closed_windows_and_its_state_is_snapshotted(log, tmp_path) -> None:
    events = [ev("execution", t, status="error" if 10 <= t < 20 else "ok") for t in range(0, 26)]
    log.append(encode(events))
    processors = [HistoryProcessor(), ErrorAlarm()]
    make_runtime(log, tmp_path, processors=processors).drain()
    (signal,) = [s for _, s in derived(log, "signal")]
    assert signal["window_start"][11:19] == "10:00:10" and signal["score"] == 1.0 and parse_event(signal)
    log.append(encode([ev("execution", 40)]))
    again = make_runtime(log, tmp_path, processors=processors)
    again.drain()
    assert again.stats()["processors"]["alarm"] == {"seen": 3}  # 2 before the restart + 1 after
    assert check_derived(log, processors, lateness_s=5.0, max_future_s=None).equal
    with pytest.raises(ValueError, match="must come before"):
        ProcessorRuntime(log, [ErrorAlarm(), HistoryProcessor()])


def test_the_daemon_resumes_its_processors_and_replay_reproduces_their_windows(daemon_factory, tmp_path) -> None:
    daemon = daemon_factory().start()
    base = past_minute()

    def at(t: float, **fields: Any) -> dict:
        return {**ev("execution", 0, **fields), "ts": base + dt.timedelta(seconds=t)}

    post_events(daemon.url, [at(t, duration_ms=float(t)) for t in range(0, 90, 3)])
    wait_until(lambda: httpx.get(f"{daemon.url}/v1/stats").json()["processors"]["lag"] == 0)
    assert daemon.stop() == 0
    daemon.start()
    stats = httpx.get(f"{daemon.url}/v1/stats").json()["processors"]
    assert stats["resumed_at"] > 30 and stats["records_read"] == 0  # nothing re-read at start
    post_events(daemon.url, [at(t) for t in range(90, 200, 5)])
    wait_until(lambda: (s := httpx.get(f"{daemon.url}/v1/stats").json())["processors"]["lag"] == 0
               and s["projector_lag"] == 0)
    rows = httpx.get(f"{daemon.url}/v1/history", params={"program": "qa", "window": "1m"}).json()["items"]
    assert [r["count"] for r in rows] == [12, 10 + 6, 20]  # minutes 2, 1 (both runs), 0
    assert daemon.stop() == 0
    copy = tmp_path / "copy.duckdb"
    result = run_cli("replay", "--data-dir", str(daemon.data_dir), "--into", str(copy))
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)["derived"]
    assert check["equal"] and check["live"] == check["rerun"] > 10, check
    assert tables_equal(daemon.data_dir / "adaptd.duckdb", copy) == []
