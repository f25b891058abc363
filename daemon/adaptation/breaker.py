"""A per-route circuit breaker as a pure state machine over injected event time.

States and transitions (``t`` is event time in microseconds, given by the caller)::

    closed    --(error rate over the window >= error_rate with >= min_requests,
                 or recent_errors failures among the last ``recent`` outcomes,
                 or consecutive_failures failures in a row)-->            open
    open      --(cool-down elapsed, judged by ``tick``)-->                half_open
    half_open --(probe_successes successes among the first ``probes``)--> closed
    half_open --(more than probes - probe_successes probe failures)-->    open
                 (cool-down multiplied by ``backoff``, capped at ``max_cooldown_s``)

Nothing here reads a clock or does I/O: ``record`` and ``tick`` mutate a ``Breaker``
(plain data, picklable) and return the transitions they caused as values; the caller
turns them into events.  Time never runs backwards inside a breaker: an outcome older
than the breaker's last time counts at that last time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

US = 1_000_000
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds and timings of every breaker (global, not per route)."""

    window_s: int = 30
    error_rate: float = 0.5
    min_requests: int = 10
    #: Errors are evidence at once: three failures in a row of a route that normally
    #: fails less than 1% of calls happen by chance less than once in a million calls.
    consecutive_failures: int = 3
    #: Count-based window: ``recent_errors`` failures among the route's last ``recent``
    #: outcomes open it (a brownout failing one call in three trips it within about ten
    #: calls; a route failing 2% of calls at random trips it about once in 30 000 calls).
    recent: int = 10
    recent_errors: int = 4
    #: Short: a failed probe is retried elsewhere, and a provider back within seconds
    #: should get its traffic back within seconds; the doubling keeps a long outage to a
    #: probe every ``max_cooldown_s``.
    cooldown_s: float = 1.0
    max_cooldown_s: float = 4.0
    backoff: float = 2.0
    #: K: outcomes counted as probes while half-open.
    probes: int = 3
    #: M: probe successes that close the breaker (M <= K).
    probe_successes: int = 2

    def __post_init__(self) -> None:
        if self.window_s < 1 or self.min_requests < 1 or self.consecutive_failures < 1:
            raise ValueError("BreakerConfig: window_s, min_requests, consecutive_failures must be >= 1")
        if self.recent < 1 or not 1 <= self.recent_errors <= self.recent:
            raise ValueError("BreakerConfig: need recent >= 1 and 1 <= recent_errors <= recent")
        if not 0 < self.error_rate <= 1:
            raise ValueError("BreakerConfig: error_rate must be in (0, 1]")
        if not 1 <= self.probe_successes <= self.probes:
            raise ValueError("BreakerConfig: need 1 <= probe_successes <= probes")
        if self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s or self.backoff < 1:
            raise ValueError("BreakerConfig: need 0 < cooldown_s <= max_cooldown_s and backoff >= 1")


@dataclass(slots=True)
class Breaker:
    """One route's breaker (plain data: pickled in snapshots, ``to_dict`` for tables)."""

    state: str = CLOSED
    #: The breaker's clock: the latest time it was given (µs).
    now_us: int = 0
    #: Per-second buckets of the sliding window: ``[second, requests, errors]``.
    buckets: list[list[int]] = field(default_factory=list)
    consecutive: int = 0
    opened_us: int | None = None
    cooldown_us: int = 0
    #: Times it opened since it last closed (drives the growing cool-down).
    trips: int = 0
    probe_ok: int = 0
    probe_failed: int = 0
    #: The last ``BreakerConfig.recent`` outcomes while closed, oldest first (1: an error).
    last: list[int] = field(default_factory=list)
    #: Whether it last opened on a partial failure (error count or rate, successes in
    #: between: a brownout) rather than on failures in a row (an outage).
    partial: bool = False
    #: ``[outcomes, errors]`` of the count window when it last opened (the brownout's
    #: evidence, which the policy restarts the route's success posterior from).
    at_open: list[int] = field(default_factory=lambda: [0, 0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (the window folded into totals)."""
        d = asdict(self)
        d.pop("buckets")
        d["recent_errors"] = sum(d.pop("last"))
        d["window_requests"] = sum(b[1] for b in self.buckets)
        d["window_errors"] = sum(b[2] for b in self.buckets)
        return d


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change: from, to, when (µs), why (text) and the numbers behind it."""

    frm: str
    to: str
    t_us: int
    reason: str
    numbers: dict[str, Any]


def _advance(b: Breaker, t_us: int) -> int:
    b.now_us = max(b.now_us, int(t_us))
    return b.now_us


def _trim(b: Breaker, cfg: BreakerConfig) -> None:
    oldest = b.now_us // US - cfg.window_s + 1
    while b.buckets and b.buckets[0][0] < oldest:
        b.buckets.pop(0)


def _open(b: Breaker, cfg: BreakerConfig, reason: str, numbers: dict[str, Any]) -> Transition:
    frm = b.state
    b.trips += 1
    base = cfg.cooldown_s * cfg.backoff ** (b.trips - 1)
    b.cooldown_us = int(min(base, cfg.max_cooldown_s) * US)
    b.state, b.opened_us, b.probe_ok, b.probe_failed = OPEN, b.now_us, 0, 0
    return Transition(frm, OPEN, b.now_us, reason, {**numbers, "trips": b.trips, "cooldown_s": b.cooldown_us / US})


def record(b: Breaker, cfg: BreakerConfig, t_us: int, ok: bool) -> list[Transition]:
    """Count one outcome (success when ``ok``) at time ``t_us``.

    Returns:
        The transitions it caused (none, or one: closed -> open, half_open -> open /
        closed).  An outcome while open is counted in the window only (late replies of
        calls made before the breaker opened); it never closes the breaker.
    """
    out = tick(b, cfg, t_us)
    t = b.now_us
    _trim(b, cfg)
    second = t // US
    if b.buckets and b.buckets[-1][0] == second:
        b.buckets[-1][1] += 1
        b.buckets[-1][2] += 0 if ok else 1
    else:
        b.buckets.append([second, 1, 0 if ok else 1])
    b.consecutive = 0 if ok else b.consecutive + 1
    if b.state == CLOSED:
        b.last.append(0 if ok else 1)
        del b.last[:-cfg.recent]
        n = sum(x[1] for x in b.buckets)
        errors = sum(x[2] for x in b.buckets)
        recent_errors = sum(b.last)
        b.partial = not ok and b.consecutive < cfg.consecutive_failures
        b.at_open = [len(b.last), sum(b.last)]
        if not ok and b.consecutive >= cfg.consecutive_failures:
            out.append(_open(b, cfg, f"{b.consecutive} consecutive failures",
                             {"consecutive": b.consecutive, "window_requests": n, "window_errors": errors}))
        elif not ok and recent_errors >= cfg.recent_errors:
            out.append(_open(b, cfg, f"{recent_errors} failures in the last {len(b.last)} calls",
                             {"recent": len(b.last), "recent_errors": recent_errors, "window_requests": n,
                              "window_errors": errors}))
        elif not ok and n >= cfg.min_requests and errors / n >= cfg.error_rate:
            out.append(_open(b, cfg, f"error rate {errors}/{n} over {cfg.window_s}s >= {cfg.error_rate}",
                             {"window_requests": n, "window_errors": errors, "error_rate": errors / n}))
    elif b.state == HALF_OPEN:
        if ok:
            b.probe_ok += 1
        else:
            b.probe_failed += 1
        numbers = {"probe_ok": b.probe_ok, "probe_failed": b.probe_failed}
        if b.probe_failed > cfg.probes - cfg.probe_successes:
            out.append(_open(b, cfg, f"probe failed ({b.probe_failed} of {cfg.probes} probes)", numbers))
        elif b.probe_ok >= cfg.probe_successes:
            b.state, b.trips, b.consecutive, b.opened_us = CLOSED, 0, 0, None
            b.buckets.clear()  # the errors that opened it must not re-open it now
            b.last.clear()
            out.append(Transition(HALF_OPEN, CLOSED, t, f"{b.probe_ok} probe successes", numbers))
    return out


def tick(b: Breaker, cfg: BreakerConfig, t_us: int) -> list[Transition]:
    """Let time pass to ``t_us`` (never backwards): open -> half_open once the cool-down
    has elapsed.  Returns that transition, or nothing."""
    t = _advance(b, t_us)
    if b.state == OPEN and b.opened_us is not None and t >= b.opened_us + b.cooldown_us:
        b.state, b.probe_ok, b.probe_failed = HALF_OPEN, 0, 0
        return [Transition(OPEN, HALF_OPEN, t, f"cool-down of {b.cooldown_us / US:g}s elapsed",
                           {"opened_us": b.opened_us, "trips": b.trips})]
    return []


def due_us(b: Breaker) -> int | None:
    """When ``tick`` will next change the state (µs), or None when only outcomes can."""
    if b.state == OPEN and b.opened_us is not None:
        return b.opened_us + b.cooldown_us
    return None
