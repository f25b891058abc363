"""A small local circuit breaker per route, so the client stops calling a dead route
before the daemon's policy (which sees the failures seconds later) reacts.

States:

- ``closed``: calls pass. It opens on ``failure_threshold`` consecutive failures, on
  ``window_errors`` failures among the route's last ``window`` attempts (a brownout that
  fails one call in three never gives many failures in a row), or at once on a failure
  that carries its own cool-down (a 429 with ``Retry-After``: the provider said when to
  come back).
- ``open``: calls refused until the cool-down has passed. The cool-down is ``cooldown_s``
  and doubles with each failed probe (``max_cooldown_s`` at most), so a long outage costs
  few probes; a ``Retry-After`` sets it to what the provider asked (at most
  ``MAX_RETRY_AFTER_S``).
- ``half_open``: one probe call at a time; ``probe_successes`` successes in a row close
  the breaker (each success lets the next probe go at once), a failure re-opens it.

A hang is a failure when the route's own timeout ends it: the caller records it then.
``retry_after_s`` reads a provider's ``Retry-After`` off a rate-limit exception. The
clock is injected; every method is thread-safe.
"""

from __future__ import annotations

import datetime
import email.utils
import threading
import time
from collections import deque
from collections.abc import Callable, Container
from typing import Any

#: Longest cool-down a ``Retry-After`` may impose (a provider asking for an hour is
#: probed again after this; the daemon's table still reflects its failures).
MAX_RETRY_AFTER_S = 60.0


def retry_after_s(exc: BaseException) -> float | None:
    """The ``Retry-After`` (seconds) of a rate-limit error (HTTP 429), else None.

    Read from DSPy's ``LMRateLimitError.retry_after``, or from the exception's
    ``response`` (an httpx/requests-like object, as LiteLLM's and OpenAI's errors carry)
    or ``headers``: a number of seconds or an HTTP date; the exceptions it was raised
    from are looked at too (at most 3 deep). None when the error is not a 429 or carries
    no readable ``Retry-After``.
    """
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            return None
        found = _retry_after_of(seen)
        if found is not None:
            return found
        seen = seen.__cause__ or seen.__context__
    return None


def _retry_after_of(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None) or getattr(response, "status_code", None)
    if status != 429:
        return None
    given = getattr(exc, "retry_after", None)
    if isinstance(given, (int, float)) and not isinstance(given, bool) and given == given:
        return max(float(given), 0.0)
    for headers in (getattr(response, "headers", None), getattr(exc, "headers", None),
                    getattr(exc, "litellm_response_headers", None)):
        try:
            value = headers.get("retry-after") if headers is not None else None
        except AttributeError:
            continue
        if value is None:
            continue
        try:
            return max(float(value), 0.0)
        except (TypeError, ValueError):
            pass
        try:
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            continue
        return max((when - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0)
    return None


class RouteBreaker:
    """The breaker of one route. See the module docstring for the state machine."""

    __slots__ = ("failure_threshold", "cooldown_s", "max_cooldown_s", "window", "window_errors", "probe_successes",
                 "_clock", "_lock", "state", "failures", "opened_at", "open_for", "_probe_out", "_probe_ok",
                 "_recent", "_recent_errors", "_streak", "trips")  # fmt: skip

    def __init__(self, failure_threshold: int = 2, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, *, max_cooldown_s: float | None = None,
                 window: int = 10, window_errors: int = 4, probe_successes: int = 2) -> None:  # fmt: skip
        """Raises:
            ValueError: ``failure_threshold`` < 1, ``cooldown_s`` < 0, ``max_cooldown_s`` <
                ``cooldown_s``, ``window`` < 1, ``window_errors`` not in [1, window], or
                ``probe_successes`` < 1.
        """
        max_cooldown_s = max(cooldown_s, 4.0 * cooldown_s) if max_cooldown_s is None else max_cooldown_s
        if failure_threshold < 1 or cooldown_s < 0 or max_cooldown_s < cooldown_s:
            raise ValueError("failure_threshold must be >= 1 and 0 <= cooldown_s <= max_cooldown_s")
        if window < 1 or not 1 <= window_errors <= window or probe_successes < 1:
            raise ValueError("need window >= 1, 1 <= window_errors <= window and probe_successes >= 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.window = window
        self.window_errors = window_errors
        self.probe_successes = probe_successes
        self._clock = clock
        self._lock = threading.Lock()
        self.state = "closed"
        self.failures = 0  # consecutive
        self.opened_at = 0.0
        self.open_for = 0.0  # the cool-down of the current opening
        self._probe_out = False
        self._probe_ok = 0
        self._recent: deque[bool] = deque(maxlen=window)  # True: a failure
        self._recent_errors = 0
        self._streak = 0  # openings since it last closed: drives the growing cool-down
        self.trips = 0  # times it opened

    def would_allow(self) -> bool:
        """Whether ``acquire()`` would succeed now (no state change)."""
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open":
                return self._clock() - self.opened_at >= self.open_for
            return not self._probe_out

    def acquire(self) -> bool:
        """Ask to make one call. Closed: yes. Open past its cool-down: becomes half-open
        and this call is the probe. Open within the cool-down, or half-open with the probe
        still out: no."""
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open":
                if self._clock() - self.opened_at < self.open_for:
                    return False
                self.state, self._probe_ok = "half_open", 0
            if self._probe_out:
                return False
            self._probe_out = True
            return True

    def record_success(self) -> str:
        """A call succeeded. Closed: counted. Half-open: one more probe success (closes at
        ``probe_successes``). Open (a late reply of a call made before it opened): no
        change. Returns the previous state."""
        with self._lock:
            prev = self.state
            self.failures = 0
            if prev == "half_open":
                self._probe_out = False
                self._probe_ok += 1
                if self._probe_ok >= self.probe_successes:
                    self.state, self._streak = "closed", 0
                    self._recent.clear()
                    self._recent_errors = 0
            elif prev == "closed":
                self._push(False)
            return prev

    def record_failure(self, cooldown_s: float | None = None) -> str:
        """A call failed; ``cooldown_s`` is the provider's own ``Retry-After`` when it gave
        one (the breaker then opens at once for that long). Returns the new state
        (``open`` when this failure tripped it)."""
        with self._lock:
            self.failures += 1
            if self.state == "closed":
                self._push(True)
            trip = (self.state == "half_open" or cooldown_s is not None
                    or (self.state == "closed" and (self.failures >= self.failure_threshold
                                                    or self._recent_errors >= self.window_errors)))
            if trip:
                if self.state == "open":  # a late failure while open: only a longer Retry-After extends it
                    if cooldown_s is not None:
                        self.open_for = max(self.open_for, self._clock() - self.opened_at
                                            + min(max(cooldown_s, 0.0), MAX_RETRY_AFTER_S))
                    return self.state
                self._streak += 1
                backoff = min(self.cooldown_s * 2 ** (self._streak - 1), self.max_cooldown_s)
                self.open_for = backoff if cooldown_s is None else min(max(cooldown_s, 0.0), MAX_RETRY_AFTER_S)
                self.state, self.opened_at, self._probe_out = "open", self._clock(), False
                self.trips += 1
            return self.state

    def release(self) -> None:
        """A granted call ended without a verdict (e.g. the caller's own bad request):
        give the probe slot back so the breaker is not stuck half-open."""
        with self._lock:
            self._probe_out = False

    def _push(self, failed: bool) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._recent_errors -= 1
        self._recent.append(failed)
        self._recent_errors += failed


class BreakerBoard:
    """The breakers of a set of routes, with a cheap "is anything not closed?" check.

    ``not_closed`` and ``counting`` are plain ints the hot path reads without a lock: a
    stale read only means one call takes the slower, exact path or sees a state one call
    late.
    """

    def __init__(self, failure_threshold: int = 2, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, **options: Any) -> None:  # fmt: skip
        """``options``: ``RouteBreaker``'s keyword options, for every route's breaker.

        Raises:
            ValueError: A bad threshold or timing (see ``RouteBreaker``).
        """
        RouteBreaker(failure_threshold, cooldown_s, clock, **options)  # validate once, here
        self._args = (failure_threshold, cooldown_s, clock)
        self._options = options
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
                b = self._breakers.setdefault(name, RouteBreaker(*self._args, **self._options))
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

    def failure(self, name: str, cooldown_s: float | None = None) -> str:
        """Record a failure (``cooldown_s``: the provider's ``Retry-After``); returns the
        new state."""
        state = self.get(name).record_failure(cooldown_s)
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
        # a closed breaker with failures in its window must see the successes that push them out
        self.counting = sum(1 for _, b in items if b.failures or b._recent_errors)
