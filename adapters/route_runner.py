"""The routing engine behind ``AdaptiveLM`` and ``AdaptiveModule``: the cached table,
local breakers, the per-call choice, the failover loop and the ``route_decision`` events.

Knows nothing of DSPy: a route is a name, and a call is ``call(route_name)``. See
``adaptd.adapters.adaptive_lm`` for the per-call behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from adaptd.adapters.observe import current_observation
from adaptd.adapters.route_breaker import BreakerBoard, retry_after_s
from adaptd.adapters.route_context import current_root_execution, current_route
from adaptd.adapters.routing_table import RouteEntry, RoutingTable, TableError, TablePoller, WeightedChoice

log = logging.getLogger("adaptd.sdk.routing")
T = TypeVar("T")


def _runner_after_fork(ref: weakref.ref[RouteRunner]) -> None:
    runner = ref()
    if runner is not None:
        try:
            runner._reinit_after_fork()
        except Exception as exc:  # never break the child process
            log.warning("adaptd: routing state not renewed after fork: %r", exc)


def _sdk_client(client: Any) -> Any:
    """``client``, else the SDK's configured default client (never created here), else None."""
    if client is not None:
        return client
    import adaptd.adapters as adapters  # lazy: the package imports this module lazily

    return adapters._default


def _sdk_url(client: Any) -> str:
    """The daemon URL the SDK sends events to: the client's (``client`` or the configured
    default), else ``$ADAPTD_URL``, else ``http://127.0.0.1:7710``."""
    url = getattr(_sdk_client(client), "url", None)
    return url if isinstance(url, str) and url else os.environ.get("ADAPTD_URL") or "http://127.0.0.1:7710"


def _sdk_token(client: Any) -> str | None:
    """The bearer token of the client (``client`` or the configured default) when it
    exposes one, else ``$ADAPTD_TOKEN``; None when neither is set."""
    token = getattr(_sdk_client(client), "token", None)
    return token if isinstance(token, str) and token else os.environ.get("ADAPTD_TOKEN") or None


class NoRouteError(LookupError):
    """No route may be tried: every one failed in this call or is refused by its local
    breaker. Raised at once, without calling any provider."""


def default_retryable(exc: BaseException) -> bool:
    """Whether another route may succeed where this one raised ``exc``.

    Programming and request errors (TypeError, ValueError, KeyError, AttributeError,
    NotImplementedError) are the caller's: another route would fail the same way, so
    they are raised at once and do not count against the route. Everything else
    (provider errors, timeouts, rate limits, connection resets) is retried elsewhere.
    """
    return not isinstance(exc, (TypeError, ValueError, KeyError, AttributeError, NotImplementedError))


class RouteRunner:
    """The routing engine: table, breakers, choice, failover loop and decision events.

    Attributes:
        program: The program name (key of the routing table and of the events).
        targets: Route name -> what a route calls (an LM, a module); shared, not copied.
        breakers: The local breakers (``breakers.states()``).
        stats: Counters: ``calls``, ``attempts``, ``failures``, ``retries``,
            ``fallbacks``, ``exhausted`` (calls that failed on every attempt).
    """

    def __init__(
        self,
        program: str,
        targets: dict[str, Any],
        *,
        build: Callable[[RouteEntry], Any | None] = lambda entry: None,
        table: RoutingTable | Mapping[str, Any] | None = None,
        client: Any = None,
        emit_decisions: bool = True,
        url: str | None = None,
        token: str | None = None,
        refresh: bool = True,
        poll_wait_s: float = 25.0,
        poll_min_interval_s: float = 1.0,
        max_attempts: int = 4,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        failure_threshold: int = 2,
        cooldown_s: float = 1.0,
        max_cooldown_s: float | None = None,
        window: int = 10,
        window_errors: int = 4,
        probe_successes: int = 2,
        retryable: Callable[[BaseException], bool] = default_retryable,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Install the initial table and start the refresh thread.

        Args:
            program: Program name; must match the tables it receives.
            targets: Route name -> callable target (at least one).
            build: Makes a target for a route a later table adds (None: not routable).
            table: Initial table (a ``RoutingTable`` or its JSON form); default equal
                shares over ``targets`` at version 0.
            client: The ``adaptd.adapters.Client`` that receives ``route_decision`` events;
                default the process-wide client (``adaptd.adapters.get_client()``), on first use.
            emit_decisions: False sends no events at all.
            url: Daemon base URL for table refresh; default the client's URL, else the
                URL of the SDK's configured default client (``adaptd.adapters.configure``,
                read at every poll, so configuring later works), else ``$ADAPTD_URL`` or
                ``http://127.0.0.1:7710``.
            token: Bearer token for the refresh; default the client's (when it exposes
                ``token``), else ``$ADAPTD_TOKEN``; read at every poll.
            refresh: False never contacts the daemon for tables (``set_table`` only).
            poll_wait_s: Long-poll ``wait`` sent to the daemon.
            poll_min_interval_s: Least time between two refresh requests.
            max_attempts: Route calls per call, the first one included (>= 1).
            backoff_base_s, backoff_max_s: Retry k sleeps ``uniform(0, min(max, base*2**(k-1)))``.
            failure_threshold, cooldown_s, max_cooldown_s, window, window_errors,
                probe_successes: Local breaker (``route_breaker.RouteBreaker``): it opens
                on ``failure_threshold`` failures in a row, on ``window_errors`` failures
                among the route's last ``window`` attempts, or at once for a 429's
                ``Retry-After``; the first probe goes after ``cooldown_s`` (doubling per
                failed probe up to ``max_cooldown_s``, default 4x ``cooldown_s``); ``probe_successes`` successes in
                a row close it. Defaults: see the module docstring of ``route_breaker``.
            retryable: Which exceptions fail over (see ``default_retryable``).
            rng, sleep, async_sleep, clock: Injected randomness, sleeping and time.

        Raises:
            ValueError: No targets, ``max_attempts`` < 1, or a bad initial table
                (``TableError`` is a ValueError).
        """
        if not targets:
            raise ValueError("routing needs at least one route")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.program = program
        self.targets = targets
        self.breakers = BreakerBoard(failure_threshold, cooldown_s, clock, max_cooldown_s=max_cooldown_s,
                                     window=window, window_errors=window_errors,
                                     probe_successes=probe_successes)  # fmt: skip
        self.max_attempts = max_attempts
        # Plain counters, approximate when threads race (no lock on the hot path).
        self.stats = {"calls": 0, "attempts": 0, "failures": 0, "retries": 0, "fallbacks": 0, "exhausted": 0}
        self._build = build
        self._backoff = (backoff_base_s, backoff_max_s)
        self._retryable = retryable
        self._rng = rng or random.Random()
        self._own_rng = rng is None
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._client = client
        self._emit_on = emit_decisions
        self._cuts: dict[Any, Any] = {}
        self._table: RoutingTable = RoutingTable.uniform(program, list(targets))
        if table is not None:
            self.set_table(table)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_runner_after_fork, weakref.ref(self)))
        self.poller: TablePoller | None = None
        if refresh:
            # Without an explicit url/client, both are read at every poll from the SDK's
            # default client: ``adaptd.adapters.configure(url=...)`` may come after this.
            where: str | Callable[[], str] = url or getattr(client, "url", None) or functools.partial(_sdk_url, client)
            auth: str | Callable[[], str | None] | None = token
            if token is None:
                auth = functools.partial(_sdk_token, client)
            self.poller = TablePoller(where, program, self._install_polled, token=auth, wait_s=poll_wait_s,
                                      min_interval_s=poll_min_interval_s).start()  # fmt: skip

    def _install_polled(self, table: RoutingTable) -> None:
        """The poller's callback: ``set_table`` (an older table is ignored; a bad one raises,
        so the poller fetches it again next time)."""
        self.set_table(table)

    def _reinit_after_fork(self) -> None:
        """In a forked child: fresh breaker locks, and a reseeded generator when it is our
        own (or parent and children would make the same choices in lockstep). The table
        poller restarts itself."""
        self.breakers.reset_locks_after_fork()
        if self._own_rng:
            self._rng.seed()

    def __deepcopy__(self, memo: dict[int, Any]) -> RouteRunner:
        # Runtime state (table, breakers, refresh thread), like a provider client: copies
        # of the owning LM or module (e.g. made by optimizers) share it.
        return self

    # -- the table -------------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        """The table in use now."""
        return self._table

    def set_table(self, table: RoutingTable | Mapping[str, Any], *, force: bool = False) -> bool:
        """Install a table (a ``RoutingTable`` or its JSON form).

        Routes the table names without a target get one from ``build``; when it gives
        None they get weight 0 here (logged).

        Returns:
            True when installed; False when older than the current version (unless
            ``force``), so a late answer never rolls the table back.

        Raises:
            TableError: Malformed, for another program, or none of its selectable routes
                can be called here.
        """
        if not isinstance(table, RoutingTable):
            table = RoutingTable.from_json(table)
        if table.program != self.program:
            raise TableError(f"table is for program {table.program!r}, this client routes {self.program!r}")
        if not force and table.version < self._table.version:
            return False
        dropped = []
        for entry in table.routes:
            if entry.name not in self.targets:
                target = self._build(entry)
                if target is None:
                    dropped.append(entry.name)
                else:
                    self.targets[entry.name] = target
        if dropped:
            log.warning("adaptd: routing table v%s names routes %s this client cannot call; not routing to them",
                        table.version, dropped)
            had_choice = len(table.choice) > 0
            table = dataclasses.replace(table, routes=tuple(
                dataclasses.replace(r, weight=0.0) if r.name in dropped else r for r in table.routes))
            if had_choice and not len(table.choice):
                raise TableError(f"no selectable route of table v{table.version} can be called here")
        self._table = table
        return True

    def close(self) -> None:
        """Stop refreshing the table (routing goes on with the last one)."""
        if self.poller is not None:
            self.poller.stop()

    # -- choosing ----------------------------------------------------------------------------

    def choose(self) -> tuple[str, float, str]:
        """The first route of a call: ``(name, probability, reason)``; the hot path.

        Raises:
            NoRouteError: Every route is refused by its local breaker (fail fast).
        """
        t = self._table
        if not self.breakers.not_closed and t.choice.names:
            name, p = t.choice.pick(self._rng.random())
            return name, p, "weighted"
        nxt = self._next(t, [])
        if nxt is None:
            raise NoRouteError(f"no route of {self.program!r} can take a call now; "
                               f"local breakers: {self.breakers.states()}")
        return nxt

    def _next(self, t: RoutingTable, failed: list[str]) -> tuple[str, float, str] | None:
        """The next route after ``failed`` (this call's failures, in order), or None.

        Order: weighted sampling over the selectable routes neither failed nor refused
        by their breaker; then the fallback chains; then any other callable route.
        """
        refused: set[str] = set()
        for _ in range(len(t.routes) + 2):  # re-pick when a breaker refuses the pick
            blocked = self.breakers.blocked(t.by_name) | refused
            out = set(failed) | blocked
            choice = self._choice_without(t, out) if out else t.choice
            if choice.names:
                name, p = choice.pick(self._rng.random())
                reason = "retry" if failed else "weighted"
            else:
                # Routes taken out by a breaker count as failed for the chains.
                gone = [*failed, *(n for n in t.choice.names if n in blocked and n not in failed)]
                # The daemon's open breakers are skipped in chains, tried only as a last resort.
                usable = [n for n in t.fallback_chain(gone) if n not in out and n in self.targets]
                chain = [n for n in usable if getattr(t.by_name.get(n), "breaker", None) != "open"]
                rest = [r.name for r in sorted(t.routes, key=lambda r: r.breaker == "open")
                        if r.name not in out and r.name in self.targets]
                if chain:
                    name, p, reason = chain[0], 1.0, "fallback"
                elif rest:
                    name, p, reason = rest[0], 1.0, "last_resort"
                else:
                    return None
            if self.breakers.get(name).acquire():
                return name, p, reason
            refused.add(name)
        return None

    def _choice_without(self, t: RoutingTable, out: set[str]) -> WeightedChoice:
        """``t.choice.without(out)``, memoised per table: while a breaker is open every
        call needs the same renormalised choice."""
        key = frozenset(out)
        cache = self._cuts
        if cache.get("table") is not t or len(cache) > 64:  # bounded: few distinct subsets
            cache.clear()
            cache["table"] = t
        choice = cache.get(key)
        if choice is None:
            choice = cache[key] = t.choice.without(out)
        return choice

    # -- running a call ------------------------------------------------------------------------

    def run(self, call: Callable[[str], T]) -> T:
        """Route one call: ``call(route_name)`` per attempt (see the module docstring).

        Raises:
            The route's exception when it is not retryable, else the last route's
            exception once every attempt failed; NoRouteError when no route could be
            tried at all.
        """
        self.stats["calls"] += 1
        t = self._table
        failed: list[str] = []
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            pick = self.choose() if attempt == 0 else self._next(t, failed)
            if pick is None:
                break
            name, p, reason = pick
            if attempt:
                self._sleep(self._backoff_s(attempt))
            token = current_route.set(name)
            try:
                out = call(name)
            except Exception as exc:
                if self._failed(t, name, p, reason, attempt, exc):
                    raise
                failed.append(name)
                last = exc
                continue
            finally:
                current_route.reset(token)
            self._succeeded(t, name, p, reason, attempt)
            return out
        return self._exhausted(failed, last)

    async def arun(self, call: Callable[[str], Awaitable[T]]) -> T:
        """Async ``run``: awaits ``call(route_name)`` and the injected async sleep."""
        self.stats["calls"] += 1
        t = self._table
        failed: list[str] = []
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            pick = self.choose() if attempt == 0 else self._next(t, failed)
            if pick is None:
                break
            name, p, reason = pick
            if attempt:
                await self._async_sleep(self._backoff_s(attempt))
            token = current_route.set(name)
            try:
                out = await call(name)
            except Exception as exc:
                if self._failed(t, name, p, reason, attempt, exc):
                    raise
                failed.append(name)
                last = exc
                continue
            finally:
                current_route.reset(token)
            self._succeeded(t, name, p, reason, attempt)
            return out
        return self._exhausted(failed, last)

    def _backoff_s(self, attempt: int) -> float:
        base, cap = self._backoff
        return self._rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))  # full jitter

    def _failed(self, t: RoutingTable, name: str, p: float, reason: str, attempt: int, exc: Exception) -> bool:
        """Book a failed attempt; True when the caller must re-raise it at once."""
        self.stats["attempts"] += 1
        if not self._retryable(exc):
            self.breakers.get(name).release()
            self._emit(t, name, p, reason, attempt, "error", type(exc).__name__)
            return True
        self.stats["failures"] += 1
        if self.breakers.failure(name, retry_after_s(exc)) == "open":
            log.info("adaptd: local breaker of route %s/%s is open", self.program, name)
        self._emit(t, name, p, reason, attempt, "error", type(exc).__name__)
        return False

    def _succeeded(self, t: RoutingTable, name: str, p: float, reason: str, attempt: int) -> None:
        self.stats["attempts"] += 1
        if attempt:
            self.stats["retries"] += 1
        if reason == "fallback":
            self.stats["fallbacks"] += 1
        if self.breakers.counting:  # some breaker has failures to forget
            self.breakers.success(name)
        self._emit(t, name, p, reason, attempt, "ok", None)

    def _exhausted(self, failed: list[str], last: BaseException | None) -> Any:
        self.stats["exhausted"] += 1
        if last is not None:
            raise last
        raise NoRouteError(f"no route of {self.program!r} can take a call now (tried {failed}); "
                           f"local breakers: {self.breakers.states()}")

    def _emit(self, t: RoutingTable, name: str, p: float, reason: str, attempt: int, status: str,
              error_type: str | None) -> None:  # fmt: skip
        if not self._emit_on:
            return
        client = self._client
        if client is None:
            import adaptd.adapters as adapters  # the package's default client; lazy: adapters imports us lazily

            client = self._client = adapters.get_client()
        entry = t.by_name.get(name)
        model = (entry.model if entry is not None else None) or getattr(self.targets.get(name), "model", None)
        obs = current_observation()
        client.emit("route_decision", program=self.program, route=name,
                    model=model if isinstance(model, str) else None, status=status, error_type=error_type,
                    execution_id=obs.id if obs is not None else current_root_execution.get(), policy_version=t.version,
                    probability=p, reason=reason, attempt=attempt)  # fmt: skip
