"""The incident-week generator (bench/incident_week_sim.py) injects what it says it does:
each incident kind moves its metric on its route inside its span and not on the others,
the planned traffic step is there, and the week is the same for the same seed."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from adaptd.streams.log.base import Record
from adaptd.streams.processors.base import EXECUTION, FEEDBACK
from adaptd.streams.processors.parse import parse_records
from bench import incident_week_sim as sim

WEEK = sim.make_week(1, rate=2.0)
SPAN = 1800  # compare the 30 minutes before an onset with the 30 after it


def _incident(kind: str) -> sim.Incident:
    return next(inc for inc in WEEK.incidents if inc.kind == kind)


def _before_after(at_s: float) -> tuple[sim.Calls, sim.Calls]:
    t = int(at_s)
    return sim.calls(WEEK, t - SPAN, t, 0), sim.calls(WEEK, t + 60, t + 60 + SPAN, 1)


def _measure(kind: str, c: sim.Calls, route: int) -> float:
    rows = c.route == route
    if kind == "latency_step":
        return float(np.median(c.duration_ms[rows]))
    if kind == "error_burst":
        return float(c.error[rows].mean())
    if kind == "cost_jump":
        return float(c.cost_usd[rows].mean())
    if kind == "quality_decay":
        return float(np.nanmean(c.score[rows]))
    return float(rows.sum())  # throughput: executions in the span


#: kind -> (lowest, highest) after / before ratio on the incident's route (daily cycle and
#: noise allowed for), and the widest ratio any other route may show.
EFFECT = {"latency_step": (1.7, 2.4, 1.25), "error_burst": (4.0, 60.0, 3.0), "cost_jump": (2.1, 2.9, 1.2),
          "throughput": (0.05, 0.16, 1.6)}


@pytest.mark.parametrize("kind", sorted(EFFECT))
def test_each_incident_moves_its_metric_on_its_route_only(kind: str) -> None:
    inc = _incident(kind)
    before, after = _before_after(inc.start_s)
    lo, hi, others = EFFECT[kind]
    ratio = _measure(kind, after, inc.route) / _measure(kind, before, inc.route)
    assert lo <= ratio <= hi, f"{kind}: after/before = {ratio:.3f}"
    for other in range(len(WEEK.routes)):
        if other != inc.route and not any(i.route == other and i.start_s < inc.start_s + SPAN + 60 and
                                          i.end_s > inc.start_s - SPAN for i in WEEK.incidents):
            if kind == "error_burst":  # base rates are 0.5..2 %: a ratio of two small counts is noise
                assert _measure(kind, after, other) < 0.06, f"route {other} has errors too"
                continue
            o = _measure(kind, after, other) / _measure(kind, before, other)
            assert 1 / others <= o <= others, f"{kind}: route {other} moved {o:.3f}"


def test_quality_decay_lowers_the_judge_score_by_its_magnitude_after_the_ramp() -> None:
    inc = _incident("quality_decay")
    t = int(inc.start_s)
    before = sim.calls(WEEK, t - SPAN, t, 0)
    held = sim.calls(WEEK, t + sim.QUALITY_RAMP_S, int(inc.end_s), 1)
    drop = _measure("quality_decay", before, inc.route) - _measure("quality_decay", held, inc.route)
    assert 0.15 <= drop <= 0.25, drop


def test_incidents_end_when_their_span_ends() -> None:
    inc = _incident("latency_step")
    t = int(inc.end_s)
    during, after = sim.calls(WEEK, t - SPAN, t, 0), sim.calls(WEEK, t, t + SPAN, 1)
    ratio = _measure("latency_step", after, inc.route) / _measure("latency_step", during, inc.route)
    assert 0.4 <= ratio <= 0.6, ratio


def test_planned_step_raises_its_routes_traffic_for_good_against_the_other_routes() -> None:
    step = WEEK.planned
    before, after = _before_after(step.at_s)
    later = sim.calls(WEEK, int(step.at_s) + 6 * 3600, int(step.at_s) + 6 * 3600 + SPAN, 2)
    others = [i for i in range(len(WEEK.routes)) if i != step.route]

    def share(c: sim.Calls) -> float:  # the route's traffic relative to the others' (cycles cancel)
        return _measure("throughput", c, step.route) / sum(_measure("throughput", c, o) for o in others)

    assert 2.0 <= share(after) / share(before) <= 3.1
    assert 2.0 <= share(later) / share(before) <= 3.1
    assert all(inc.route != step.route for inc in WEEK.incidents)


def test_ten_incidents_two_per_kind_on_distinct_routes_and_days_after_the_first() -> None:
    kinds = sorted(inc.kind for inc in WEEK.incidents)
    assert kinds == sorted(sim.KINDS * 2)
    assert len({inc.route for inc in WEEK.incidents}) == 10
    days = [int(inc.start_s // sim.DAY_S) for inc in WEEK.incidents]
    assert min(days) >= 1 and max(days) <= 6 and max(days.count(d) for d in days) <= 2


def test_daily_cycle_gives_a_four_to_one_day_night_ratio_and_weekends_run_at_half() -> None:
    t = np.arange(0, sim.DAY_S, 60.0)
    day = sim.load(WEEK, 0, t)
    assert 3.9 <= day.max() / day.min() <= 4.1
    saturday = sim.load(WEEK, 0, t + 5 * sim.DAY_S)
    friday = sim.load(WEEK, 0, t + 4 * sim.DAY_S)
    assert 0.49 <= saturday.mean() / friday.mean() <= 0.51


def test_same_seed_gives_the_same_records_and_another_seed_others() -> None:
    first = list(sim.events(WEEK, 300, 900))
    again = list(sim.events(sim.make_week(1, rate=2.0), 300, 900))
    other = list(sim.events(sim.make_week(2, rate=2.0), 300, 900))
    assert first == again
    assert first != other
    assert sim.make_week(2).incidents != WEEK.incidents


def test_records_parse_as_executions_with_joinable_feedback_in_time_order() -> None:
    values = [v for _, chunk in sim.events(WEEK, 300, 900) for v in chunk]
    batch = parse_records([Record(i, v) for i, v in enumerate(values)]).batch
    assert len(batch) == len(values)
    executions = batch.kind == EXECUTION
    feedback = batch.kind == FEEDBACK
    assert executions.sum() > 1000 and feedback.sum() > 0.3 * executions.sum()
    assert np.all(np.diff(batch.ts) >= 0)
    ids = {batch.id[i] for i in np.flatnonzero(executions)}
    assert all(batch.execution_id[i] in ids for i in np.flatnonzero(feedback))
    assert orjson.loads(values[0])["tenant"] == "default"


def test_make_week_refuses_a_short_week_or_no_traffic() -> None:
    with pytest.raises(ValueError, match="days must be >= 7"):
        sim.make_week(1, days=3)
    with pytest.raises(ValueError, match="rate > 0"):
        sim.make_week(1, rate=0)


def _open_signal(source: str, route: sim.Route, metric: str, t_s: float, window_s: float,
                 program_level: bool = False) -> dict:
    from adaptd.streams.processors.base import iso_us

    end = WEEK.start_us + int(t_s * 1e6)
    return {"kind": "signal", "state": "open", "source": source, "program": route.program,
            "route": None if program_level else route.route, "metric": metric, "ts": iso_us(end),
            "window_end": iso_us(end), "window_start": iso_us(end - int(window_s * 1e6)), "explanation": {}}


def test_scoring_counts_the_right_metric_on_the_route_as_detection_and_the_rest_as_false() -> None:
    from bench import incident_week as bench

    inc = _incident("latency_step")
    route = WEEK.routes[inc.route]
    other = next(r for i, r in enumerate(WEEK.routes)
                 if r.program != route.program and all(x.route != i for x in WEEK.incidents))
    opens = [
        _open_signal("adaptd.anomaly", route, "throughput", inc.start_s + 10, 10),  # wrong metric: not detection
        _open_signal("adaptd.anomaly", route, "p95_ms", inc.start_s + 30, 10),  # detection, 3 windows
        _open_signal("adaptd.anomaly", route, "throughput", inc.end_s + 600, 60),  # aftermath: not false
        _open_signal("adaptd.anomaly", other, "p95_ms", inc.start_s + 30, 10),  # another route: false
        _open_signal("adaptd.drift", route, "duration_ms", inc.start_s - 3600, 300, program_level=True),  # before
    ]
    rows, summary = bench.score(WEEK, opens)
    row = next(r for r in rows if r["kind"] == "latency_step" and r["route"] == f"{route.program}/{route.route}")
    assert row["detected"] and row["delay_s"] == 30 and row["delay_windows"] == 3 and row["signal"] == "anomaly:p95_ms"
    assert summary["detected"] == 1 and summary["false_incidents"] == 2
    assert sorted(f["signal"] for f in summary["false_list"]) == ["anomaly:p95_ms", "drift:duration_ms"]
