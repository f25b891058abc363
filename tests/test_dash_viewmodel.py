"""The dashboard's pure parts: JSON to rows and series, table update plans, backoff, SSE
parsing and the tail filter."""

from __future__ import annotations

import math

from adaptd.tui.client import Backoff, SSEParser
from adaptd.tui.keyed_table import Plan, plan_update
from adaptd.tui.viewmodel import (
    DashData,
    TailFilter,
    acked_signals,
    adaptation_rows,
    explain,
    merge_sketches,
    metric_vs_cost,
    open_incidents,
    optimizer_jobs,
    overview,
    points,
    route_history,
    route_rows,
    signal_rows,
    sketch_quantile,
    tail_line,
)

ALPHA = 0.0099
GAMMA = (1 + ALPHA) / (1 - ALPHA)


def bucket(value: float) -> int:
    return math.ceil(math.log(value) / math.log(GAMMA))


def window(start: str, program: str, route: str, count: int, errors: int, values: list[float], cost: float = 0.01,
           quality: float | None = None) -> dict:
    index: dict[int, int] = {}
    for v in values:
        index[bucket(v)] = index.get(bucket(v), 0) + 1
    return {"window_start": start, "program": program, "route": route, "model": "m", "count": count,
            "errors": errors, "cost_usd": cost, "latency_n": len(values), "quality_n": 0 if quality is None else 2,
            "quality_mean": quality,
            "sketch": {"alpha": ALPHA, "zero": 0, "index": list(index), "count": list(index.values())}}


T1, T2 = "2026-11-22T08:00:00+00:00", "2026-11-22T08:01:00+00:00"


def test_merged_sketches_read_quantiles_within_one_percent() -> None:
    a = window(T1, "qa", "p", 3, 0, [100.0, 200.0, 300.0])["sketch"]
    b = window(T1, "qa", "b", 2, 0, [400.0, 500.0])["sketch"]
    merged = merge_sketches([a, b])
    assert sum(merged[2].values()) == 5
    for q, exact in ((0.0, 100.0), (0.5, 300.0), (0.95, 400.0), (1.0, 500.0)):
        assert abs(sketch_quantile(*merged, q) - exact) / exact < 0.01
    assert sketch_quantile(*merge_sketches([]), 0.5) is None


def test_points_sum_windows_per_start_and_filter_by_route() -> None:
    ws = [window(T2, "qa", "p", 10, 5, [100.0] * 10, quality=0.5), window(T1, "qa", "p", 4, 0, [50.0] * 4),
          window(T1, "qa", "b", 6, 3, [70.0] * 6, quality=0.9)]
    pts = points(ws)
    assert [(p.start, p.count, p.errors) for p in pts] == [(T1, 10, 3), (T2, 10, 5)]
    assert pts[0].quality == 0.9 and abs(pts[0].p95_ms - 70) < 1
    assert [p.count for p in points(ws, route="b")] == [6]
    assert points([]) == []


def test_overview_cards_come_from_the_latest_window_and_count_open_incidents() -> None:
    data = DashData(window="1m", windows=[window(T1, "qa", "p", 60, 0, [100.0]), window(T2, "qa", "p", 120, 30, [200.0],
                                                                                            cost=0.5)],
                    signals=[{"id": "s3", "incident_id": "i1", "state": "resolved"},
                             {"id": "s2", "incident_id": "i1", "state": "open"},
                             {"id": "s1", "incident_id": "i2", "state": "update"}])
    model = overview(data)
    assert model.cards["events/s"] == "2.0" and model.cards["success"] == "75.0%"
    assert model.cards["cost/hour"] == "$30.00" and model.cards["open incidents"] == "1"
    assert model.cards["window"] == "1m @ 08:01:00" and model.events_per_s == [1.0, 2.0]
    empty = overview(DashData())
    assert empty.cards["events/s"] == "—" and empty.starts == []
    assert open_incidents([]) == 0


def test_route_rows_follow_the_tables_then_the_history() -> None:
    tables = [{"program": "qa", "routes": [
        {"name": "p", "model": "gpt", "weight": 0.0, "breaker": "open", "pinned": False, "canary": False},
        {"name": "b", "model": "nano", "weight": 1.0, "breaker": "closed", "pinned": True, "canary": False}]}]
    ws = [window(T2, "qa", "p", 10, 10, [100.0] * 10), window(T2, "qa", "b", 30, 0, [50.0] * 30),
          window(T1, "qa", "b", 99, 0, [50.0]), window(T2, "sum", "x", 5, 0, [10.0] * 5)]
    rows = route_rows(DashData(tables=tables, windows=ws))
    assert list(rows) == [("qa", "p"), ("qa", "b"), ("sum", "x")]
    p, b, x = rows.values()
    assert p[3:6] == ("0.0%", "25.0%", "0.0%") and p[10:] == ("open", "")
    assert b[3:6] == ("100.0%", "75.0%", "100.0%") and b[11] == "pinned"
    assert x[2:4] == ("m", "—") and x[10] == "—"
    starts, p95, errors = route_history(DashData(windows=ws), "qa", "b")
    assert starts == ["08:00:00", "08:01:00"] and errors == [0.0, 0.0] and len(p95) == 2


def test_signal_rows_show_acknowledgement_of_the_signal_or_its_incident() -> None:
    signals = [{"id": "s1", "ts": T2, "signal_type": "breaker", "state": "open", "severity": "critical",
                "program": "qa", "route": "p", "incident_id": "i1", "explanation": {"reason": "5 failures", "n": 5}},
               {"id": "s2", "ts": T1, "signal_type": "drift", "state": "open", "incident_id": "i2", "explanation": {}}]
    acks = [{"action": "signal_ack", "details": {"signal_id": "sX", "incident_id": "i1"}}]
    assert acked_signals(acks) == {"sX", "i1"}
    rows = signal_rows(DashData(signals=signals, adaptations=acks))
    assert rows["s1"][8] == "yes" and rows["s2"][8] == ""
    assert rows["s1"][9] == "5 failures; n=5" and rows["s1"][0] == "08:01:00"


def test_adaptation_rows_mark_reverted_and_can_hide_tables() -> None:
    adaptations = [{"id": "a2", "ts": T2, "source": "adaptd.api", "action": "unpin", "reverted_by": None},
                   {"id": "a1", "ts": T1, "source": "adaptd.policy", "action": "routing_table", "version": 3,
                    "reverted_by": None},
                   {"id": "a0", "ts": T1, "source": "adaptd.api", "action": "pin", "route": "b", "reverted_by": "a2"}]
    rows = adaptation_rows(DashData(adaptations=adaptations))
    assert list(rows) == ["a2", "a1", "a0"] and rows["a0"][6] == "reverted" and rows["a1"][1:3] == ("policy",
                                                                                                      "routing_table")
    assert list(adaptation_rows(DashData(adaptations=adaptations), hide_tables=True)) == ["a2", "a0"]


def test_optimizer_jobs_show_each_jobs_newest_state_and_finished_ones_plot() -> None:
    runs = [{"job_id": "j2", "status": "running", "score_after": None, "cost_usd": 0.1},
            {"job_id": "j1", "status": "succeeded", "score_after": 0.8, "cost_usd": 1.5, "program": "qa"},
            {"job_id": "j1", "status": "running", "score_after": None, "cost_usd": 0.2}]
    jobs = optimizer_jobs(runs)
    assert list(jobs) == ["j2", "j1"] and jobs["j1"][3] == "succeeded"
    assert metric_vs_cost(runs) == ([1.5], [0.8], ["j1"])
    assert optimizer_jobs(None) == {} and metric_vs_cost(None) == ([], [], [])


def test_plan_update_touches_only_changed_cells_and_rebuilds_on_reorder() -> None:
    shown = {"a": ("1", "x"), "b": ("2", "y")}
    assert plan_update(shown, dict(shown)) == Plan()
    plan = plan_update(shown, {"a": ("1", "x"), "b": ("3", "y"), "c": ("4", "z")})
    assert plan == Plan(rebuild=False, append=["c"], cells=[("b", 0, "3")])
    assert plan_update(shown, {"b": ("2", "y"), "a": ("1", "x")}).rebuild
    assert plan_update(shown, {"a": ("1", "x")}).rebuild


def test_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(base=0.5, factor=2, cap=3, jitter=0.5, rng=lambda: 1.0)
    assert [b.next_delay() for _ in range(4)] == [0.25, 0.5, 1.0, 1.5]
    b.reset()
    assert b.next_delay() == 0.25


def test_sse_parser_yields_events_and_skips_comments() -> None:
    parser = SSEParser()
    lines = [": hello", "", "id: 7", "event: lm_call", 'data: {"a":', "data: 1}", "", "retry: 5", ""]
    got = [e for e in map(parser.feed, lines) if e is not None]
    assert got == [("7", "lm_call", '{"a":\n1}')]


def test_tail_filter_matches_fields_and_words() -> None:
    event = {"kind": "lm_call", "program": "qa", "route": "primary", "ts": T1, "status": "error", "duration_ms": 12.0}
    line = tail_line(event)
    assert line.startswith("08:00:00 lm_call") and "qa/primary" in line and "status=error" in line
    assert TailFilter.parse("kind:lm_call ERROR").matches(event, line)
    assert not TailFilter.parse("program:other").matches(event, line)
    assert TailFilter.parse("").matches(event, line)


def test_explain_puts_the_reason_first_and_skips_long_structures() -> None:
    assert explain({"score": 0.123456, "reason": "drift", "features": list(range(50))}) == "drift; score=0.1235"
    assert explain(None) == ""


def test_route_rows_cache_recomputes_only_routes_whose_window_changed() -> None:
    from adaptd.tui.viewmodel import RouteRows

    ws = [window(T2, "qa", "p", 10, 0, [100.0] * 10), window(T2, "sum", "x", 5, 0, [10.0] * 5)]
    cached = RouteRows()
    first = cached(DashData(windows=ws))
    changed = [window(T2, "qa", "p", 12, 6, [100.0] * 12), window(T2, "sum", "x", 5, 0, [10.0] * 5)]
    second = cached(DashData(windows=changed))
    assert second[("sum", "x")] is first[("sum", "x")]
    assert second[("qa", "p")] != first[("qa", "p")] and second[("qa", "p")][5] == "50.0%"
    assert second == route_rows(DashData(windows=changed))
