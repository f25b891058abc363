"""A small local circuit breaker per route, so the client stops calling a dead route
before the daemon's policy (which sees the failures seconds later) reacts.

States: ``closed`` (calls pass; ``failure_threshold`` consecutive failures open it),
``open`` (calls refused until ``cooldown_s`` has passed), ``half_open`` (exactly one probe
call is let through; its success closes the breaker, its failure re-opens it for another
cool-down). The clock is injected; every method is thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container


class RouteBreaker:
    """The breaker of one route. See the module docstring for the state machine."""

    __slots__ = ("failure_threshold", "cooldown_s", "_clock", "_lock", "state", "failures", "opened_at",
                 "_probe_out", "trips")  # fmt: skip

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if failure_threshold < 1 or cooldown_s < 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self.state = "closed"
        self.failures = 0  # consecutive
        self.opened_at = 0.0
        self._probe_out = False
        self.trips = 0  # times it opened

    def would_allow(self) -> bool:
        """Whether ``acquire()`` would succeed now (no state change)."""
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open":
                return self._clock() - self.opened_at >= self.cooldown_s
            return not self._probe_out

    def acquire(self) -> bool:
        """Ask to make one call. Closed: yes. Open past its cool-down: becomes half-open
        and this call is the probe. Open within the cool-down, or half-open with the probe
        still out: no."""
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open":
                if self._clock() - self.opened_at < self.cooldown_s:
                    return False
                self.state = "half_open"
            if self._probe_out:
                return False
            self._probe_out = True
            return True

    def record_success(self) -> str:
        """A call succeeded: close (from any state). Returns the previous state."""
        with self._lock:
            prev, self.state, self.failures, self._probe_out = self.state, "closed", 0, False
            return prev

    def record_failure(self) -> str:
        """A call failed. Returns the new state (``open`` when this failure tripped it)."""
        with self._lock:
            self.failures += 1
            if self.state == "half_open" or (self.state == "closed" and self.failures >= self.failure_threshold):
                self.state, self.opened_at, self._probe_out = "open", self._clock(), False
                self.trips += 1
            return self.state

    def release(self) -> None:
        """A granted call ended without a verdict (e.g. the caller's own bad request):
        give the probe slot back so the breaker is not stuck half-open."""
        with self._lock:
            self._probe_out = False


class BreakerBoard:
    """The breakers of a set of routes, with a cheap "is anything not closed?" check.

    ``not_closed`` and ``counting`` are plain ints the hot path reads without a lock: a
    stale read only means one call takes the slower, exact path or sees a state one call
    late.
    """

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        RouteBreaker(failure_threshold, cooldown_s, clock)  # validate once, here
        self._args = (failure_threshold, cooldown_s, clock)
        self._breakers: dict[str, RouteBreaker] = {}
        self._lock = threading.Lock()
        self._suspect: tuple[tuple[str, RouteBreaker], ...] = ()
        self.not_closed = 0
        #: Breakers with a failure count to reset: a success must be recorded then.
        self.counting = 0

    def get(self, name: str) -> RouteBreaker:
        """The breaker of ``name``, created closed on first use."""
        b = self._breakers.get(name)
        if b is None:
            with self._lock:
                b = self._breakers.setdefault(name, RouteBreaker(*self._args))
        return b

    def blocked(self, names: Container[str]) -> set[str]:
        """Those of ``names`` whose breaker refuses a call right now. Empty when all
        are closed (then without touching any breaker)."""
        if not self.not_closed:
            return set()
        out = set()
        for n, b in self._suspect:  # only the breakers not closed at the last change
            if n in names and not b.would_allow():
                out.add(n)
        return out

    def success(self, name: str) -> str:
        """Record a success; returns the previous state."""
        prev = self.get(name).record_success()
        self._recount()
        return prev

    def failure(self, name: str) -> str:
        """Record a failure; returns the new state."""
        state = self.get(name).record_failure()
        self._recount()
        return state

    def reset_locks_after_fork(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held one at the fork);
        the states are kept."""
        self._lock = threading.Lock()
        for b in list(self._breakers.values()):
            b._lock = threading.Lock()

    def states(self) -> dict[str, str]:
        """Each known route's breaker state."""
        return {n: b.state for n, b in list(self._breakers.items())}

    def _recount(self) -> None:
        items = list(self._breakers.items())
        suspect = tuple((n, b) for n, b in items if b.state != "closed")
        self._suspect, self.not_closed = suspect, len(suspect)
        self.counting = sum(1 for _, b in items if b.failures)
