"""The simulated incident week (pure): 20 routes of one tenant, their load and latency
cycles, a planned traffic step, and 10 injected incidents, as canonical event records.

Everything is a function of the seed (``make_week``) and, per chunk of event time, of
``(seed, chunk number)`` (``events``), so any span can be generated alone and gives the
same events as a full run.

The week (event time, starting Monday 2026-11-02 00:00 UTC):

* 20 routes = 4 programs x 5 routes (one model each); per route a base rate (mean
  ``rate`` executions/s over the routes), a daily load cycle (peak 14:00 +- 2 h, 4x
  day/night ratio), weekends at 50 % load, and a slow traffic trend (0..+10 %/week);
* latency lognormal (median 150..2000 ms, spread 0.35..0.6) with a heavy tail (1 % of
  calls x a Pareto(1.5) factor), +-10 % with load over the day, a slow trend
  (-15..+25 % over the week);
* errors 0.5..2 %; tokens lognormal; cost from tokens and the model's price;
* feedback (a judge score, mean 0.75..0.88, sd 0.15) on 40 % of executions, 1..30 s later;
* a planned step: one route without incidents doubles its traffic (x2.5) for good at a
  drawn hour of day 3 (a launch: not an incident);
* 10 incidents, two of each kind, on 10 different routes, each on a different day
  (days 1..6, ten slots of hours 09..20), none on day 0 (the detectors' warm-up):

  ============== ================================================ =========
  kind           what changes                                      span
  ============== ================================================ =========
  latency_step   latency x2                                        60 min
  error_burst    error rate 20 %                                   15 min
  cost_jump      cost per call x2.5 (a pricier fallback model)     60 min
  quality_decay  judge score falls 0.2 over 20 min, stays down     90 min
  throughput     traffic x0.1 (an upstream outage)                 60 min
  ============== ================================================ =========
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

WEEK_START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # a Monday
DAY_S = 86_400
PROGRAMS, ROUTES_PER_PROGRAM = 4, 5
KINDS = ("latency_step", "error_burst", "cost_jump", "quality_decay", "throughput")
#: kind -> (duration s, magnitude): latency factor, error rate, cost factor, score drop, traffic factor.
INCIDENT = {"latency_step": (3600, 2.0), "error_burst": (900, 0.20), "cost_jump": (3600, 2.5),
            "quality_decay": (5400, 0.20), "throughput": (3600, 0.10)}
QUALITY_RAMP_S = 1200
FEEDBACK_SHARE = 0.4
DAY_NIGHT_RATIO = 4.0
_A = np.log(DAY_NIGHT_RATIO) / 2  # exp(a cos) spans a factor of e^(2a) = 4
_LOAD_NORM = float(np.i0(_A))  # mean of exp(a cos) over a day: base rates are daily means


@dataclass(frozen=True)
class Route:
    program: str
    route: str
    model: str
    rate: float  # mean executions/s over a weekday
    peak_h: float
    traffic_trend: float  # fractional traffic change over the week
    latency_ms: float  # median at mean load, start of the week
    sigma: float
    latency_trend: float  # fractional latency change over the week
    error_rate: float
    tokens_in: float
    tokens_out: float
    price_in: float  # USD per 1000 tokens
    price_out: float
    quality: float


@dataclass(frozen=True)
class Incident:
    kind: str
    route: int  # index into Week.routes
    start_s: float  # seconds since WEEK_START
    end_s: float
    magnitude: float


@dataclass(frozen=True)
class PlannedStep:
    route: int
    at_s: float
    factor: float


@dataclass(frozen=True)
class Week:
    seed: int
    days: int
    routes: tuple[Route, ...]
    incidents: tuple[Incident, ...]
    planned: PlannedStep

    @property
    def start_us(self) -> int:
        return int(WEEK_START.timestamp()) * 1_000_000


def make_week(seed: int, rate: float = 3.0, days: int = 7) -> Week:
    """The week of ``seed``: routes, incidents and the planned step (pure, deterministic).

    ``rate`` is the mean weekday executions/s per route; ``days`` must be at least 7 (the
    incidents are placed on days 1..6).

    Raises:
        ValueError: ``days`` < 7 or ``rate`` <= 0.
    """
    if days < 7 or not rate > 0:
        raise ValueError(f"make_week: days must be >= 7 and rate > 0 (got days={days}, rate={rate})")
    rng = np.random.default_rng([seed, 0])
    routes = []
    for i in range(PROGRAMS * ROUTES_PER_PROGRAM):
        program, r = f"prog{i // ROUTES_PER_PROGRAM}", i % ROUTES_PER_PROGRAM
        tin, tout = float(rng.uniform(200, 1500)), float(rng.uniform(50, 400))
        routes.append(Route(
            program=program, route=f"r{r}", model=f"model-{r}", rate=float(rate * rng.uniform(0.5, 1.5)),
            peak_h=float(14 + rng.uniform(-2, 2)), traffic_trend=float(rng.uniform(0, 0.1)),
            latency_ms=float(np.exp(rng.uniform(np.log(150), np.log(2000)))), sigma=float(rng.uniform(0.35, 0.6)),
            latency_trend=float(rng.uniform(-0.15, 0.25)), error_rate=float(rng.uniform(0.005, 0.02)),
            tokens_in=tin, tokens_out=tout, price_in=float(rng.uniform(0.0005, 0.003)),
            price_out=float(rng.uniform(0.0015, 0.012)), quality=float(rng.uniform(0.75, 0.88))))
    order = rng.permutation(len(routes))
    victims, planned_route = order[:10], int(order[10])
    kinds = [k for k in KINDS for _ in range(2)]
    rng.shuffle(kinds)
    # ten (day, hour) slots, at most two per day, on days 1..6, hours 9..20
    slots = rng.choice(6 * 2, size=10, replace=False)
    incidents = []
    for kind, route, slot in zip(kinds, victims, slots, strict=True):
        day, half = 1 + int(slot) // 2, int(slot) % 2
        hour = (9 + rng.uniform(0, 5)) if half == 0 else (15 + rng.uniform(0, 5))
        start = day * DAY_S + hour * 3600
        duration, magnitude = INCIDENT[kind]
        incidents.append(Incident(kind, int(route), float(start), float(start + duration), magnitude))
    incidents.sort(key=lambda inc: inc.start_s)
    planned = PlannedStep(planned_route, float(3 * DAY_S + rng.uniform(8, 12) * 3600), 2.5)
    return Week(seed, days, tuple(routes), tuple(incidents), planned)


def load(week: Week, route: int, t_s: np.ndarray) -> np.ndarray:
    """Load factor of ``route`` at ``t_s`` (s since the week start): daily cycle x weekend x
    trend x planned step (mean about 1 over a weekday)."""
    r = week.routes[route]
    hour = (t_s % DAY_S) / 3600
    daily = np.exp(_A * np.cos(2 * np.pi * (hour - r.peak_h) / 24)) / _LOAD_NORM
    weekday = (t_s // DAY_S) % 7
    weekend = np.where(weekday >= 5, 0.5, 1.0)
    trend = 1 + r.traffic_trend * t_s / (7 * DAY_S)
    step = np.where((route == week.planned.route) & (t_s >= week.planned.at_s), week.planned.factor, 1.0)
    return daily * weekend * trend * step


def _active(week: Week, route: int, kind: str, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask of ``t_s`` inside an incident of ``kind`` on ``route``, and the seconds since its start."""
    mask = np.zeros(len(t_s), bool)
    since = np.zeros(len(t_s))
    for inc in week.incidents:
        if inc.route == route and inc.kind == kind:
            inside = (t_s >= inc.start_s) & (t_s < inc.end_s)
            mask |= inside
            since = np.where(inside, t_s - inc.start_s, since)
    return mask, since


def _magnitude(kind: str) -> float:
    return INCIDENT[kind][1]


def rate(week: Week, route: int, t_s: np.ndarray) -> np.ndarray:
    """Expected executions/s of ``route`` at ``t_s``, incidents included."""
    base = week.routes[route].rate * load(week, route, t_s)
    down, _ = _active(week, route, "throughput", t_s)
    return np.where(down, base * _magnitude("throughput"), base)


@dataclass(slots=True)
class Calls:
    """Executions of one span (columns), in time order per route."""

    route: np.ndarray
    t_s: np.ndarray
    duration_ms: np.ndarray
    error: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    cost_usd: np.ndarray
    score: np.ndarray  # NaN: no feedback
    feedback_s: np.ndarray


def calls(week: Week, t0_s: int, t1_s: int, chunk: int) -> Calls:
    """The executions started in ``[t0_s, t1_s)`` (whole seconds), drawn from ``(seed, chunk)``."""
    rng = np.random.default_rng([week.seed, 1, chunk])
    secs = np.arange(t0_s, t1_s, dtype=np.float64)
    parts = []
    for i in range(len(week.routes)):
        counts = rng.poisson(rate(week, i, secs))
        t = np.repeat(secs, counts) + rng.random(int(counts.sum()))
        parts.append((np.full(len(t), i, np.int32), np.sort(t)))
    route = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    n = len(t)
    med = np.array([r.latency_ms for r in week.routes])[route]
    sigma = np.array([r.sigma for r in week.routes])[route]
    ltrend = np.array([r.latency_trend for r in week.routes])[route]
    lmult = np.ones(n)
    loadf = np.ones(n)
    err_p = np.array([r.error_rate for r in week.routes])[route]
    cost_mult = np.ones(n)
    q = np.array([r.quality for r in week.routes])[route]
    for i in range(len(week.routes)):
        rows = route == i
        if not rows.any():
            continue
        ti = t[rows]
        loadf[rows] = load(week, i, ti)
        slow, _ = _active(week, i, "latency_step", ti)
        lmult[rows] = np.where(slow, _magnitude("latency_step"), 1.0)
        burst, _ = _active(week, i, "error_burst", ti)
        err_p[rows] = np.where(burst, _magnitude("error_burst"), err_p[rows])
        dear, _ = _active(week, i, "cost_jump", ti)
        cost_mult[rows] = np.where(dear, _magnitude("cost_jump"), 1.0)
        decay, since = _active(week, i, "quality_decay", ti)
        q[rows] = q[rows] - np.where(decay, _magnitude("quality_decay") * np.minimum(1.0, since / QUALITY_RAMP_S), 0.0)
    # latency: +-10 % with load over the day (log of the load factor, bounded), slow trend
    cycle = 1 + 0.1 * np.tanh(np.log(np.maximum(loadf, 1e-6)))
    trend = 1 + ltrend * t / (7 * DAY_S)
    duration = med * cycle * trend * lmult * np.exp(sigma * rng.standard_normal(n))
    tail = rng.random(n) < 0.01
    duration[tail] *= 1 + rng.pareto(1.5, int(tail.sum()))
    error = rng.random(n) < err_p
    tin = np.round(np.array([r.tokens_in for r in week.routes])[route] * np.exp(0.3 * rng.standard_normal(n)))
    tout = np.round(np.array([r.tokens_out for r in week.routes])[route] * np.exp(0.5 * rng.standard_normal(n)))
    price_in = np.array([r.price_in for r in week.routes])[route]
    price_out = np.array([r.price_out for r in week.routes])[route]
    cost = (tin * price_in + tout * price_out) / 1000 * cost_mult
    judged = (rng.random(n) < FEEDBACK_SHARE) & ~error
    score = np.where(judged, np.clip(q + 0.15 * rng.standard_normal(n), 0.0, 1.0), np.nan)
    feedback_s = t + rng.uniform(1, 30, n)
    return Calls(route, t, duration, error, tin, tout, cost, score, feedback_s)


def _iso(start_us: int, t_s: np.ndarray) -> list[str]:
    us = (start_us + np.round(t_s * 1e6)).astype("datetime64[us]")
    return [s[:-1] + "+00:00" for s in np.datetime_as_string(us, unit="us", timezone="UTC").tolist()]


def events(week: Week, chunk_s: int = 600, end_s: int | None = None) -> Iterator[tuple[float, list[bytes]]]:
    """The week's ``execution`` and ``feedback`` records (canonical JSON bytes), in event-time
    order, as ``(chunk end s, records)`` per chunk of ``chunk_s`` seconds up to ``end_s``
    (default: the whole week).  Feedback later than its chunk is carried into the next."""
    end = week.days * DAY_S if end_s is None else end_s
    carry: list[tuple[float, bytes]] = []
    start_us = week.start_us
    seq = 0
    for chunk, t0 in enumerate(range(0, end, chunk_s)):
        t1 = min(end, t0 + chunk_s)
        c = calls(week, t0, t1, chunk)
        ts = _iso(start_us, c.t_s)
        fts = _iso(start_us, c.feedback_s)
        items: list[tuple[float, bytes]] = []
        for j in range(len(c.t_s)):
            r = week.routes[c.route[j]]
            eid = f"00000000-0000-4000-8000-{seq:012x}"
            seq += 1
            status = '"error","error_type":"Timeout"' if c.error[j] else '"ok"'
            items.append((float(c.t_s[j]), (
                f'{{"id":"{eid}","ts":"{ts[j]}","v":1,"kind":"execution","tenant":"default","source":"sim",'
                f'"program":"{r.program}","route":"{r.route}","model":"{r.model}","status":{status},'
                f'"duration_ms":{c.duration_ms[j]:.3f},"tokens_in":{c.tokens_in[j]:.0f},'
                f'"tokens_out":{c.tokens_out[j]:.0f},"cost_usd":{c.cost_usd[j]:.8f}}}').encode()))
            if c.score[j] == c.score[j]:  # not NaN: judged
                fid = f"00000000-0000-4000-9000-{seq:012x}"
                seq += 1
                carry.append((float(c.feedback_s[j]), (
                    f'{{"id":"{fid}","ts":"{fts[j]}","v":1,"kind":"feedback","tenant":"default","source":"sim",'
                    f'"execution_id":"{eid}","score":{c.score[j]:.4f}}}').encode()))
        carry.sort(key=lambda x: x[0])
        cut = next((k for k, (tf, _) in enumerate(carry) if tf >= t1), len(carry)) if t1 < end else len(carry)
        items += carry[:cut]
        carry = carry[cut:]
        items.sort(key=lambda x: x[0])
        yield float(t1), [b for _, b in items]
