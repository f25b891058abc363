"""The drift processor on a real file log: controlled shifts are signalled within 2 drift
windows, a steady stream raises nothing, one incident per episode, and the signals do not
depend on batch sizes, replay or restarts.

Streams are generated with explicit event times in the past (so the log's append time
never bounds the watermark): 240 root executions per minute of program ``qa``, each with
a text input described by ``adaptd.streams.features`` as the SDK does and a graded feedback
score one second later.  Drift windows are 1 min with >= 200 executions; the reference
is the first 3 windows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import uuid
from pathlib import Path

import orjson
import pytest

from adaptd.streams.events import parse_event
from adaptd.streams.features import features as describe
from adaptd.streams.log.base import Record
from adaptd.streams.log.file import FileLog
from adaptd.streams.processors.drift.detector import DriftConfig
from adaptd.streams.processors.drift.processor import DriftProcessor, DriftProcessorConfig
from adaptd.streams.processors.parse import parse_records
from adaptd.streams.processors.runtime import ProcessorRuntime, rerun

PER_WINDOW = 240
T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
CONFIG = DriftProcessorConfig(window="1m", min_executions=200, detector=DriftConfig(reference_windows=3, seed=7))
# The same with a reference in event time: the clean windows of the last day, by hour.
ROLLING = dataclasses.replace(CONFIG, detector=DriftConfig(reference_windows=3, seed=7, reference="1d"))
CONFIGS = {"frozen": CONFIG, "rolling": ROLLING}
COMMON = "the a my your please help with is it this that for on and to of can you how".split()
TOPICS = [t.split() for t in (
    "refund invoice charge billing payment card credit subscription plan price discount receipt",
    "shipping delivery package tracking courier parcel address delayed arrived warehouse dispatch",
    "password login account email verify reset locked username security code profile settings",
    "error crash bug install update version app screen freeze slow battery sync download",
)]
BASE = {"mix": (0.5, 0.3, 0.2, 0.0), "latency": 800.0, "quality": 0.8}
SHIFTS = {
    "topic_mix": ({"mix": (0.1, 0.2, 0.3, 0.4)}, "inputs.question.text"),
    "latency": ({"latency": 1200.0}, "duration_ms"),
    "quality_drop_10_points": ({"quality": 0.7}, "quality"),
}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def new_id(rnd: random.Random) -> str:
    return str(uuid.UUID(int=rnd.getrandbits(128), version=4))


def execution(rnd: random.Random, t: dt.datetime, p: dict, **fields) -> dict:
    """A root execution of ``qa``; its text length does not depend on the topic."""
    topic = rnd.choices(range(len(TOPICS)), weights=p["mix"])[0]
    n = rnd.randint(8, 30)
    text = " ".join(rnd.choice(TOPICS[topic]) if rnd.random() < 0.6 else rnd.choice(COMMON) for _ in range(n))
    route = "fast" if rnd.random() < 0.7 else "strong"
    return {"id": new_id(rnd), "ts": t, "v": 1, "kind": "execution", "tenant": "default", "source": "test",
            "program": "qa", "route": route, "model": f"m-{route}", "status": "error" if rnd.random() < 0.01 else "ok",
            "duration_ms": p["latency"] * math.exp(rnd.gauss(0, 0.6)), "tokens_in": 40 + n + rnd.randint(0, 20),
            "tokens_out": max(1, int(rnd.gauss(120, 30))), "inputs": {"question": describe(text)}, **fields}


def stream(seed: int, windows: list[dict]) -> list[dict]:
    """Executions + feedback for each 1 min window (``windows[i]`` overrides BASE), by time."""
    rnd, events = random.Random(seed), []
    for w, change in enumerate(windows):
        p = {**BASE, **change}
        for j in range(PER_WINDOW):
            e = execution(rnd, at(w * 60 + j * 60 / PER_WINDOW), p)
            score = sum(rnd.random() < p["quality"] for _ in range(4)) / 4  # a graded judge score
            events += [e, {"id": new_id(rnd), "ts": e["ts"] + dt.timedelta(seconds=1), "v": 1, "kind": "feedback",
                           "tenant": "default", "source": "test", "execution_id": e["id"], "score": score}]
    events.sort(key=lambda e: e["ts"])
    return events


def encode(events: list[dict]) -> list[bytes]:
    return [orjson.dumps({**e, "ts": e["ts"].isoformat()}) for e in events]


def signals(outputs: list[dict]) -> list[dict]:
    return [o for o in outputs if o["kind"] == "signal"]


def in_log(log: FileLog) -> list[dict]:
    """The drift signals appended to ``log``, in log order."""
    out, offset = [], 0
    while records := log.read(offset, 10_000):
        offset = records[-1].offset + 1
        out += [e for e in map(lambda r: orjson.loads(r.value), records) if e.get("source") == "adaptd.drift"]
    return out


@pytest.fixture
def log(tmp_path: Path):
    file_log = FileLog(tmp_path / "log")
    yield file_log
    file_log.close()


# A drift episode: reference (3), quiet (2), topic shift (3), back to normal (4).
EPISODE = [{}] * 5 + [SHIFTS["topic_mix"][0]] * 3 + [{}] * 4


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def episode(request, tmp_path_factory):
    """A log holding the episode, the signals one uninterrupted run gives, and the config
    (a frozen or a rolling reference)."""
    config = CONFIGS[request.param]
    file_log = FileLog(tmp_path_factory.mktemp("episode") / "log")
    file_log.append(encode(stream(11, EPISODE)))
    yield file_log, signals(rerun(file_log, [DriftProcessor(config)], batch=100_000)), config
    file_log.close()


@pytest.mark.parametrize("reference", sorted(CONFIGS))
@pytest.mark.parametrize("scenario", sorted(SHIFTS))
def test_each_controlled_shift_is_signalled_within_2_drift_windows(log, scenario, reference):
    change, feature = SHIFTS[scenario]
    log.append(encode(stream(3, [{}] * 5 + [change] * 3)))  # the shift starts at minute 5
    out = signals(rerun(log, [DriftProcessor(CONFIGS[reference])]))
    assert out, "no drift signal"
    first = out[0]
    assert first["state"] == "open" and first["signal_type"] == "drift"
    assert first["window_end"] <= at(7 * 60).isoformat()  # the 1st or 2nd window of the shift
    assert first["metric"] == feature and feature in first["explanation"]["drifted"]
    why = first["explanation"]
    assert why["p_value"] <= why["threshold"] and why["effect"] >= why["min_effect"]
    assert why["top"][0]["feature"] == feature and why["test"] in {"mmd", "ks", "welch_t"}
    assert why["executions"] >= CONFIG.min_executions
    parse_event(first)  # a valid Signal event


@pytest.mark.parametrize("reference", sorted(CONFIGS))
def test_no_shift_stream_raises_nothing_over_20_drift_windows(log, reference):
    log.append(encode(stream(5, [{}] * 24)))
    processor = DriftProcessor(CONFIGS[reference])
    runtime = ProcessorRuntime(log, [processor], batch=5000)
    runtime.drain()
    assert runtime.outputs == 0
    metrics = processor.metrics(runtime.states["drift"])
    assert metrics["windows_closed"] == 23 and metrics["feedback_unmatched"] == 0
    assert metrics["late"] == {"1m": 0} and metrics["scores"] == metrics["executions"] == 24 * PER_WINDOW


def test_a_golden_quality_baseline_flags_quality_below_it_from_the_first_window(log):
    log.append(encode(stream(5, [{}] * 4)))  # production quality ~0.8, steady
    golden = dataclasses.replace(CONFIG, golden_quality=(("qa", (1.0,) * 95 + (0.0,) * 5),))  # mean 0.95
    out = signals(rerun(log, [DriftProcessor(golden)]))
    assert out and out[0]["state"] == "open" and out[0]["metric"] == "quality"
    assert out[0]["window_end"] == at(60).isoformat()  # before the 3-window reference is formed
    why = out[0]["explanation"]
    assert why["feature"] == "quality" and why["details"]["baseline"] == "golden"
    assert why["details"]["ref_mean"] == pytest.approx(0.95) and why["n_reference"] == 100
    other = dataclasses.replace(CONFIG, golden_quality=(("another_program", (1.0,) * 100),))
    assert signals(rerun(log, [DriftProcessor(other)])) == []  # only the program named


def test_one_drift_episode_is_one_incident_opened_once_and_resolved_after_3_clean_windows(episode):
    _, out, _ = episode
    assert [s["state"] for s in out] == ["open", "resolved"], [(s["state"], s["metric"]) for s in out]
    opened, resolved = out
    # Windows are whole minutes from the first event: [0, 1) ... [5, 6) is the 6th.
    assert opened["window_start"] == at(5 * 60).isoformat() and opened["explanation"]["window_index"] == 6
    assert resolved["incident_id"] == opened["incident_id"] != resolved["id"]
    # The shift ends at minute 8; the windows ending at 9, 10 and 11 are clean.
    assert resolved["window_end"] == at(11 * 60).isoformat() and resolved["severity"] == "info"
    assert resolved["explanation"]["reason"] == "no drift in 3 windows in a row"


def test_a_feature_drifting_during_an_open_incident_is_one_update_not_a_new_incident(log):
    topic, latency = SHIFTS["topic_mix"][0], SHIFTS["latency"][0]
    log.append(encode(stream(23, [{}] * 5 + [topic] * 2 + [{**topic, **latency}] * 3)))
    out = signals(rerun(log, [DriftProcessor(CONFIG)]))
    assert [s["state"] for s in out] == ["open", "update"], [(s["state"], s["metric"]) for s in out]
    opened, update = out
    assert opened["metric"] == "inputs.question.text" and update["incident_id"] == opened["incident_id"]
    assert update["explanation"]["reason"] == "new drifted features: duration_ms"
    assert update["window_end"] <= at(9 * 60).isoformat()  # within 2 windows of the latency shift


def test_a_lasting_drift_is_accepted_as_the_new_normal_when_configured(log):
    config = DriftProcessorConfig(window="1m", min_executions=200, accept_after_windows=2,
                                  detector=DriftConfig(reference_windows=3, seed=7))
    log.append(encode(stream(29, [{}] * 5 + [SHIFTS["latency"][0]] * 9)))
    out = signals(rerun(log, [DriftProcessor(config)]))
    assert [s["state"] for s in out] == ["open", "resolved"]  # the new reference raises nothing
    assert out[1]["explanation"]["reason"] == "accepted as the new normal (rebaselined)"
    assert out[1]["window_end"] == at(7 * 60).isoformat()


@pytest.mark.parametrize("batch", [37, 1000])
def test_batch_sizes_do_not_change_the_signals(episode, batch):
    file_log, expected, config = episode
    assert signals(rerun(file_log, [DriftProcessor(config)], batch=batch)) == expected


@pytest.mark.parametrize("reference", sorted(CONFIGS))
def test_replay_by_a_fresh_runtime_reproduces_the_live_signal_ids_and_values(log, tmp_path, reference):
    config = CONFIGS[reference]
    log.append(encode(stream(13, [{}] * 5 + [SHIFTS["latency"][0]] * 2 + [{}] * 4)))
    live = ProcessorRuntime(log, [DriftProcessor(config)], snapshot_path=tmp_path / "snap.pkl", batch=700)
    live.drain()
    appended = in_log(log)
    assert [s["state"] for s in appended] == ["open", "resolved"]
    assert signals(rerun(log, [DriftProcessor(config)])) == appended


def test_restart_from_a_snapshot_continues_identically(episode, tmp_path):
    file_log, expected, config = episode
    emitted: list[bytes] = []
    snapshot = tmp_path / "snap.pkl"
    first = ProcessorRuntime(file_log, [DriftProcessor(config)], snapshot_path=snapshot, batch=613,
                             emit=emitted.extend)
    while first.position < file_log.end_offset() * 0.55:  # stop mid-shift, with a window open
        first.step()
    first.snapshot()
    assert first.states["drift"].per_key[0].n > 0
    second = ProcessorRuntime(file_log, [DriftProcessor(config)], snapshot_path=snapshot, batch=613,
                              emit=emitted.extend)
    assert second.resumed_at == first.position
    second.drain()
    assert [orjson.loads(v) for v in emitted] == expected


def test_roots_joins_lateness_and_thinning_are_counted(log):
    rnd = random.Random(17)
    config = DriftProcessorConfig(window="1m", min_executions=200, sample_target=100,
                                  detector=DriftConfig(reference_windows=3, seed=7))
    events = stream(19, [{}] * 3)
    root = events[0]["id"]
    events += [execution(rnd, at(30), BASE, parent_id=root, module="generate") for _ in range(50)]  # not roots
    events += [{"id": new_id(rnd), "ts": at(31), "kind": "feedback", "execution_id": new_id(rnd), "score": 1.0}
               for _ in range(8)]  # on executions never seen
    events += [{"id": new_id(rnd), "ts": at(31), "kind": "feedback", "tenant": "other", "execution_id": root,
                "score": 0.0} for _ in range(2)]  # on another tenant's execution
    events.sort(key=lambda e: e["ts"])
    events += [execution(rnd, at(10), BASE) for _ in range(5)]  # minute 0 closed long ago: late
    events += [execution(rnd, at(600), BASE) for _ in range(4)]  # ahead of the watermark: held
    events.append(events[1])  # a re-sent event
    log.append(encode(events))
    processor = DriftProcessor(config)
    runtime = ProcessorRuntime(log, [processor], batch=400)
    runtime.drain()
    m = processor.metrics(runtime.states["drift"])
    assert m["executions"] == 3 * PER_WINDOW + 5 + 4 and m["feedback_unmatched"] == 10 and m["duplicates"] == 1
    assert m["late"] == {"1m": 5} and m["pending"] == 4 and m["windows_closed"] == 3
    # Windows 0 and 1 held 240 > 100 executions, so windows 1 and 2 observe those with 2
    # low zero hash bits (~1 in 4); every execution is still counted.
    assert 1.2 * PER_WINDOW < m["thinned"] < 1.8 * PER_WINDOW


def test_requested_columns_are_parsed_on_the_fast_and_the_slow_path():
    events = [{"id": "a", "ts": "2026-01-05T00:00:00+00:00", "kind": "execution", "program": "qa",
               "inputs": {"q": {"type": "str", "len": 3}}},
              {"id": "b", "ts": "2026-01-05T00:00:01+00:00", "kind": "execution", "program": "qa", "parent_id": "a"},
              {"id": "c", "ts": "2026-01-05T00:00:02+00:00", "kind": "feedback", "execution_id": "a", "score": 1}]
    records = [Record(i, orjson.dumps(e), 0, 0) for i, e in enumerate(events)]
    wanted = {"inputs": [{"q": {"type": "str", "len": 3}}, None, None], "parent_id": [None, "a", None]}
    fast = parse_records(records, frozenset({"execution", "feedback"}), frozenset(wanted)).batch
    assert fast.extra == wanted and fast.take(fast.kind == 0).extra == {k: v[:2] for k, v in wanted.items()}
    slow = parse_records(records + [Record(3, b"{not json", 0, 0)], frozenset({"execution", "feedback"}),
                         frozenset(wanted))
    assert slow.unreadable == 1 and slow.batch.extra == wanted
    assert parse_records(records).batch.extra == {}  # nothing asked, nothing decoded


def test_golden_quality_scores_come_from_the_toml_and_too_few_say_what_to_fix(tmp_path, monkeypatch):
    from adaptd.daemon.config import ConfigError, load_settings
    from adaptd.daemon.runtime import build_processors

    path = tmp_path / "adaptd.toml"
    # load_settings() points ADAPTD_CONFIG at the file; setenv makes the test undo that.
    monkeypatch.setenv("ADAPTD_CONFIG", str(path))
    path.write_text("[processors]\ndrift_golden_quality = { qa = [1.0, 0.5, 1.0] }\n")
    settings = load_settings(path)
    (drift,) = [p for p in build_processors(settings.processors) if isinstance(p, DriftProcessor)]
    assert drift.cfg.golden_quality == (("qa", (1.0, 0.5, 1.0)),)
    path.write_text("[processors]\ndrift_golden_quality = { qa = [1.0] }\n")
    with pytest.raises(ConfigError, match="drift_golden_quality.qa: needs at least 2 finite scores"):
        load_settings(path)


def test_drift_reference_season_and_thresholds_come_from_the_toml_and_misfits_say_what_to_fix(tmp_path, monkeypatch):
    from adaptd.daemon.config import ConfigError, load_settings

    path = tmp_path / "adaptd.toml"
    monkeypatch.setenv("ADAPTD_CONFIG", str(path))
    path.write_text("[processors]\n")
    assert load_settings(path).processors.drift_detector_config().reference == "7d"  # the shipped default
    path.write_text('[processors]\ndrift_reference = "28d"\ndrift_season = "7d"\ndrift_season_buckets = 168\n'
                    "drift_alpha = 1e-5\ndrift_numeric_min_effect = 0.2\ndrift_text_min_auc = 0.6\n")
    detector = load_settings(path).processors.drift_detector_config()
    assert (detector.reference, detector.season, detector.season_buckets) == ("28d", "7d", 168)
    assert (detector.alpha, detector.numeric_min_effect, detector.text_min_auc) == (1e-5, 0.2, 0.6)
    path.write_text('[processors]\ndrift_reference = "12h"\n')
    with pytest.raises(ConfigError, match="reference '12h' must span at least one season"):
        load_settings(path)
    path.write_text('[processors]\ndrift_season_buckets = 7\n')
    with pytest.raises(ConfigError, match="season_buckets=7"):
        load_settings(path)
