"""Pure view-model: the daemon's JSON answers turned into table rows and plot series.

Nothing here does I/O, reads a clock or imports Textual, so every function is tested on
plain dicts.  Times shown are the events' own times (UTC ``HH:MM:SS``), never the wall
clock, which keeps the screens reproducible.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Seconds in each history window size the dashboard may ask for.
WINDOW_SECONDS = {"10s": 10.0, "1m": 60.0, "1h": 3600.0}
NA = "—"


@dataclass(slots=True)
class DashData:
    """The last answers of the daemon (raw JSON); ``None`` where an endpoint is absent."""

    health: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    programs: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    window: str = "1m"
    signals: list[dict[str, Any]] = field(default_factory=list)
    adaptations: list[dict[str, Any]] = field(default_factory=list)
    optimizer_runs: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------- formatting


def clock(ts: str | None) -> str:
    """``HH:MM:SS`` of an ISO time (its own offset), or ``—``."""
    if not ts or len(ts) < 19:
        return NA
    return ts[11:19]


def pct(x: float | None) -> str:
    return NA if x is None else f"{100 * x:.1f}%"


def ms(x: float | None) -> str:
    return NA if x is None else (f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms")


def usd(x: float | None) -> str:
    return NA if x is None else f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def num(x: float | None, digits: int = 3) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def explain(explanation: Mapping[str, Any] | None) -> str:
    """One line: the ``reason`` first, then the other figures as ``key=value``."""
    if not explanation:
        return ""
    parts = [str(explanation["reason"])] if explanation.get("reason") else []
    for key, value in explanation.items():
        if key == "reason" or isinstance(value, (dict, list)) and len(str(value)) > 40:
            continue
        parts.append(f"{key}={round(value, 4) if isinstance(value, float) else value}")
    return "; ".join(parts)


# ---------------------------------------------------------------- latency sketches


def merge_sketches(sketches: Iterable[Mapping[str, Any]]) -> tuple[float, int, dict[int, int]]:
    """Merge history-window sketches (same ``alpha``): ``(alpha, zero count, index -> count)``.

    Sketches missing ``index`` / ``count`` are skipped; no sketch gives ``(0.0, 0, {})``.
    """
    alpha, zero = 0.0, 0
    buckets: defaultdict[int, int] = defaultdict(int)
    for s in sketches:
        if not s or "index" not in s:
            continue
        alpha = float(s.get("alpha", alpha))
        zero += int(s.get("zero", 0))
        for i, c in zip(s["index"], s["count"]):
            buckets[int(i)] += int(c)
    return alpha, zero, dict(buckets)


def sketch_quantile(alpha: float, zero: int, buckets: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile of a merged sketch (the rank ``floor(q (n-1))`` value, as the
    daemon reads it); None when the sketch is empty."""
    n = zero + sum(buckets.values())
    if n == 0 or alpha <= 0:
        return None
    rank = math.floor(q * (n - 1))
    if rank < zero:
        return 0.0
    seen, gamma = zero, (1 + alpha) / (1 - alpha)
    for index in sorted(buckets):
        seen += buckets[index]
        if seen > rank:
            return 2 * gamma**index / (gamma + 1)
    return None  # unreachable: the ranks are covered


# ---------------------------------------------------------------- overview


@dataclass(frozen=True, slots=True)
class Point:
    """The whole workload over one history window."""

    start: str
    count: int
    errors: int
    cost_usd: float
    p50_ms: float | None
    p95_ms: float | None
    quality: float | None


def points(windows: Sequence[Mapping[str, Any]], *, program: str | None = None,
           route: str | None = None) -> list[Point]:
    """Windows summed per ``window_start`` (oldest first), optionally for one program /
    route; quantiles from the merged sketches, else the count-weighted mean of the
    windows' own.  [] when there are no windows."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for w in windows:
        if program is not None and w.get("program") != program:
            continue
        if route is not None and w.get("route") != route:
            continue
        groups[w["window_start"]].append(w)
    out = []
    for start in sorted(groups):
        ws = groups[start]
        count = sum(int(w.get("count") or 0) for w in ws)
        errors = sum(int(w.get("errors") or 0) for w in ws)
        quality_n = sum(int(w.get("quality_n") or 0) for w in ws)
        quality = (sum((w.get("quality_mean") or 0) * (w.get("quality_n") or 0) for w in ws) / quality_n
                   if quality_n else None)
        merged = merge_sketches(w.get("sketch") or {} for w in ws)
        if merged[2] or merged[1]:
            p50, p95 = (sketch_quantile(*merged, q) for q in (0.5, 0.95))
        else:
            p50, p95 = (_weighted(ws, name) for name in ("p50_ms", "p95_ms"))
        out.append(Point(start, count, errors, sum(float(w.get("cost_usd") or 0) for w in ws), p50, p95, quality))
    return out


def _weighted(ws: Sequence[Mapping[str, Any]], name: str) -> float | None:
    pairs = [(w[name], w.get("latency_n") or 0) for w in ws if w.get(name) is not None]
    n = sum(c for _, c in pairs)
    return sum(v * c for v, c in pairs) / n if n else None


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview cards (latest closed window) and their series (oldest first)."""

    cards: dict[str, str]
    events_per_s: list[float]
    success: list[float]
    p95_ms: list[float]
    cost_per_hour: list[float]
    starts: list[str]


def open_incidents(signals: Sequence[Mapping[str, Any]]) -> int:
    """Incidents (signals grouped by ``incident_id``, else by id) whose newest signal is
    not ``resolved``.  ``signals`` come newest first."""
    latest: dict[str, str] = {}
    for s in signals:
        latest.setdefault(str(s.get("incident_id") or s["id"]), s.get("state", "open"))
    return sum(state != "resolved" for state in latest.values())


def overview(data: DashData, last: int = 60) -> Overview:
    """Cards and series over the last ``last`` windows; cards show ``—`` with no window."""
    seconds = WINDOW_SECONDS.get(data.window, 60.0)
    pts = points(data.windows)[-last:]
    eps = [p.count / seconds for p in pts]
    success = [1 - p.errors / p.count if p.count else 1.0 for p in pts]
    p95 = [p.p95_ms or 0.0 for p in pts]
    cost = [p.cost_usd * 3600 / seconds for p in pts]
    tail = pts[-1] if pts else None
    cards = {
        "events/s": NA if tail is None else f"{eps[-1]:.1f}",
        "success": NA if tail is None else pct(success[-1]),
        "p50": ms(tail.p50_ms) if tail else NA,
        "p95": ms(tail.p95_ms) if tail else NA,
        "cost/hour": usd(cost[-1]) if tail else NA,
        "open incidents": str(open_incidents(data.signals)),
        "window": f"{data.window} @ {clock(tail.start)}" if tail else NA,
    }
    return Overview(cards, eps, success, p95, cost, [clock(p.start) for p in pts])


# ---------------------------------------------------------------- routes

ROUTE_COLUMNS = ("program", "route", "model", "weight", "traffic", "success", "p50", "p95", "cost", "quality",
                 "breaker", "pinned")


def route_rows(data: DashData) -> dict[tuple[str, str], tuple[str, ...]]:
    """One row per (program, route), keyed so a table can update only what changed.

    Routes come from the routing tables (configured order) and then any other
    (program, route) seen in the history; figures are those of each route's newest
    window; ``traffic`` is the route's share of its program's count in that window.
    (Uncached: see ``RouteRows`` for the cached form the screen uses.)
    """
    return RouteRows()(data)


class RouteRows:
    """``route_rows`` with a per-route cache.

    A closed window never changes, so a route whose newest window (start and counts),
    program total and table entry are what they were last time keeps its row without
    re-merging its latency sketches: with 1,000 routes and a few changing per refresh,
    this is most of the cost of a refresh.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[tuple, tuple[str, ...]]] = {}

    def __call__(self, data: DashData) -> dict[tuple[str, str], tuple[str, ...]]:
        latest: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        newest: dict[tuple[str, str], str] = {}
        for w in data.windows:
            if w.get("route") is None or w.get("program") is None:
                continue
            key = (w["program"], w["route"])
            if w["window_start"] > newest.get(key, ""):
                newest[key], latest[key] = w["window_start"], [w]
            elif w["window_start"] == newest[key]:
                latest[key].append(w)
        program_count: dict[tuple[str, str], int] = defaultdict(int)
        for (program, _), ws in latest.items():
            program_count[(program, ws[0]["window_start"])] += sum(int(w.get("count") or 0) for w in ws)
        rows: dict[tuple[str, str], tuple[str, ...]] = {}
        configured = [(t["program"], r) for t in data.tables for r in t.get("routes", [])]
        for program, route in configured:
            key = (program, route["name"])
            rows[key] = self._row(key, route, latest.get(key), program_count)
        for key in sorted(latest):
            if key not in rows:
                rows[key] = self._row(key, None, latest[key], program_count)
        self._cache = {k: self._cache[k] for k in rows if k in self._cache}
        return rows

    def _row(self, key: tuple[str, str], route: Mapping[str, Any] | None, ws: list[Mapping[str, Any]] | None,
             program_count: Mapping[tuple[str, str], int]) -> tuple[str, ...]:
        total = program_count.get((key[0], ws[0]["window_start"]), 0) if ws else 0
        stamp = (
            None if route is None else (route.get("model"), route.get("weight"), route.get("breaker"),
                                        route.get("pinned"), route.get("canary")),
            total,
            tuple((w["window_start"], w.get("model"), w.get("count"), w.get("errors"), w.get("cost_usd"),
                   w.get("latency_n"), w.get("quality_n"), w.get("quality_mean")) for w in ws or ()),
        )
        cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        row = _route_row(key[0], key[1], route, ws, total)
        self._cache[key] = (stamp, row)
        return row


def _route_row(program: str, name: str, route: Mapping[str, Any] | None, ws: list[Mapping[str, Any]] | None,
               total: int) -> tuple[str, ...]:
    p = points(ws)[0] if ws else None
    model = (route or {}).get("model") or (ws[0].get("model") if ws else None) or NA
    return (
        program, name, str(model),
        pct(route["weight"]) if route else NA,
        pct(p.count / total) if p and total else NA,
        pct(1 - p.errors / p.count) if p and p.count else NA,
        ms(p.p50_ms) if p else NA, ms(p.p95_ms) if p else NA,
        usd(p.cost_usd) if p else NA, num(p.quality, 2) if p else NA,
        (route or {}).get("breaker", NA), "pinned" if route and route.get("pinned") else
        ("canary" if route and route.get("canary") else ""),
    )


def route_history(data: DashData, program: str, route: str) -> tuple[list[str], list[float], list[float]]:
    """A route's windows, oldest first: ``(HH:MM:SS starts, p95 ms, error rate %)``."""
    pts = points(data.windows, program=program, route=route)
    return ([clock(p.start) for p in pts], [p.p95_ms or 0.0 for p in pts],
            [100 * p.errors / p.count if p.count else 0.0 for p in pts])


# ---------------------------------------------------------------- signals, adaptations, optimizer

SIGNAL_COLUMNS = ("time", "type", "state", "severity", "program", "route", "metric", "score", "ack", "explanation")


def acked_signals(adaptations: Sequence[Mapping[str, Any]]) -> set[str]:
    """Ids of acknowledged signals and incidents (from ``signal_ack`` adaptations)."""
    out: set[str] = set()
    for a in adaptations:
        if a.get("action") == "signal_ack":
            details = a.get("details") or {}
            out.update(str(v) for v in (details.get("signal_id"), details.get("incident_id")) if v)
    return out


def signal_rows(data: DashData) -> dict[str, tuple[str, ...]]:
    """Signal id -> row, newest first; ``ack`` is ``yes`` when the signal or its incident
    was acknowledged."""
    acked = acked_signals(data.adaptations)
    return {s["id"]: (clock(s.get("ts")), s.get("signal_type", ""), s.get("state", ""), s.get("severity", ""),
                      s.get("program") or NA, s.get("route") or NA, s.get("metric") or NA, num(s.get("score"), 2),
                      "yes" if s["id"] in acked or str(s.get("incident_id")) in acked else "",
                      explain(s.get("explanation")))
            for s in data.signals}


ADAPTATION_COLUMNS = ("time", "source", "action", "program", "route", "version", "reverted", "reason")


def adaptation_rows(data: DashData, hide_tables: bool = False) -> dict[str, tuple[str, ...]]:
    """Adaptation id -> row, newest first; ``hide_tables`` drops routing-table versions."""
    return {a["id"]: (clock(a.get("ts")), (a.get("source") or "").removeprefix("adaptd."), a.get("action", ""),
                      a.get("program") or NA, a.get("route") or NA,
                      NA if a.get("version") is None else str(a["version"]),
                      "reverted" if a.get("reverted_by") else "", a.get("reason") or "")
            for a in data.adaptations if not (hide_tables and a.get("action") == "routing_table")}


OPTIMIZER_COLUMNS = ("job", "program", "optimizer", "status", "before", "after", "cost", "lm calls", "time")


def optimizer_jobs(runs: Sequence[Mapping[str, Any]] | None) -> dict[str, tuple[str, ...]]:
    """Job id -> row of its newest run event (runs come newest first); {} without runs."""
    out: dict[str, tuple[str, ...]] = {}
    for r in runs or ():
        if r["job_id"] in out:
            continue
        out[r["job_id"]] = (r["job_id"], r.get("program", ""), r.get("optimizer", ""), r.get("status", ""),
                            num(r.get("score_before")), num(r.get("score_after")), usd(r.get("cost_usd")),
                            NA if r.get("lm_calls") is None else str(r["lm_calls"]), clock(r.get("ts")))
    return out


def metric_vs_cost(runs: Sequence[Mapping[str, Any]] | None) -> tuple[list[float], list[float], list[str]]:
    """Finished jobs' ``(cost, score after, job ids)``, for the metric-against-cost plot."""
    costs, scores, jobs = [], [], []
    seen = set()
    for r in runs or ():
        if r["job_id"] in seen:
            continue
        seen.add(r["job_id"])
        if r.get("score_after") is not None and r.get("cost_usd") is not None:
            costs.append(float(r["cost_usd"]))
            scores.append(float(r["score_after"]))
            jobs.append(r["job_id"])
    return costs, scores, jobs


# ---------------------------------------------------------------- live tail


@dataclass(frozen=True, slots=True)
class TailFilter:
    """``kind:K program:P route:R`` terms plus free words (all must match, case-insensitive)."""

    fields: tuple[tuple[str, str], ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TailFilter:
        """Parse the filter box; an empty text matches everything."""
        fields, words = [], []
        for term in text.split():
            name, sep, value = term.partition(":")
            if sep and name and value:
                fields.append((name.lower(), value.lower()))
            else:
                words.append(term.lower())
        return cls(tuple(fields), tuple(words))

    def matches(self, event: Mapping[str, Any], line: str) -> bool:
        """True when every field term equals the event's field and every word is in ``line``."""
        low = line.lower()
        return (all(str(event.get(k, "")).lower() == v for k, v in self.fields)
                and all(w in low for w in self.words))


def tail_line(event: Mapping[str, Any]) -> str:
    """One line for the live tail: time, kind, program/route, and the kind's key figures."""
    kind = event.get("kind", "?")
    where = "/".join(str(event[k]) for k in ("program", "route") if event.get(k))
    extra = []
    for key in ("status", "model", "action", "signal_type", "state", "job_id", "metric", "score", "reason"):
        value = event.get(key)
        if value is not None and value != "":
            extra.append(f"{key}={round(value, 3) if isinstance(value, float) else value}")
    if event.get("duration_ms") is not None:
        extra.append(ms(float(event["duration_ms"])))
    return f"{clock(event.get('ts'))} {kind:<14} {where:<24} {' '.join(extra)}"[:240]
