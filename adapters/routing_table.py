"""The client's copy of a program's routing table, and the weighted choice over it.

The daemon serves one JSON table per program (``GET /v1/routing/{program}``)::

    {"program": "qa", "version": 7, "policy": "thompson",
     "routes": [{"name": "fast", "model": "openai/gpt-4o-mini", "weight": 0.8,
                 "breaker": "closed", "pinned": false, "canary": false,
                 "params": {}, "api_base": null}, ...],
     "fallbacks": {"fast": ["backup"]}, "reason": "...", "caused_by": [...], "ts": "..."}

``RoutingTable.from_json`` validates it; ``WeightedChoice`` turns the weights into
cumulative sums once per table so that a choice is one ``random()`` and one bisect
(well under a microsecond). ``TablePoller`` keeps the table fresh from the daemon with
an ETag long-poll and keeps the last good table whenever the daemon is unreachable.

Pure except ``TablePoller`` (HTTP + a thread; clock, sleep-by-event and randomness are
injected so the loop is testable).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
import weakref
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("adaptd.sdk.routing")

BREAKER_STATES = frozenset({"closed", "open", "half_open"})
#: Key of ``fallbacks`` that applies to every route without a chain of its own.
ANY_ROUTE = "*"


class TableError(ValueError):
    """A routing table that does not follow the documented JSON format (says why)."""


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of a table: its share of traffic and how the daemon sees it."""

    name: str
    model: str | None = None
    weight: float = 0.0
    breaker: str = "closed"
    pinned: bool = False
    canary: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    api_base: str | None = None

    @property
    def selectable(self) -> bool:
        """Whether weighted sampling may pick it: positive weight, breaker not open."""
        return self.weight > 0 and self.breaker != "open"


class WeightedChoice:
    """Sampling among names in proportion to fixed weights, in O(log n) per pick.

    Weights are normalised once here; ``pick(u)`` maps a uniform ``u`` in [0, 1) to a
    name and the probability that name had. An empty choice (no positive weight) has
    ``len() == 0`` and ``pick`` raises ``LookupError``.
    """

    __slots__ = ("names", "probs", "_cum", "_last")

    def __init__(self, weights: Iterable[tuple[str, float]]) -> None:
        pairs = [(n, float(w)) for n, w in weights if w > 0]
        total = sum(w for _, w in pairs)
        self.names: tuple[str, ...] = tuple(n for n, _ in pairs)
        self.probs: tuple[float, ...] = tuple(w / total for _, w in pairs) if total else ()
        cum, acc = [], 0.0
        for p in self.probs:
            acc += p
            cum.append(acc)
        if cum:
            cum[-1] = 1.0  # no float gap at the top: u < 1 always lands somewhere
        self._cum = cum
        self._last = len(cum) - 1

    def __len__(self) -> int:
        return len(self.names)

    def pick(self, u: float) -> tuple[str, float]:
        """The name that ``u`` (uniform in [0, 1)) selects, with its probability.

        Raises:
            LookupError: The choice is empty.
        """
        i = bisect_right(self._cum, u)
        if i > self._last:
            if self._last < 0:
                raise LookupError("no route has a positive weight")
            i = self._last
        return self.names[i], self.probs[i]

    def without(self, excluded: Iterable[str]) -> WeightedChoice:
        """The same choice with ``excluded`` names removed and the rest renormalised."""
        ex = set(excluded)
        return WeightedChoice((n, p) for n, p in zip(self.names, self.probs, strict=True) if n not in ex)


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """One version of a program's routing table, with its precomputed choice.

    Attributes:
        choice: Weighted sampling over the selectable routes (weight > 0, breaker not
            open in the daemon's view).
        etag: The HTTP ETag it came with, if any (sent back as ``If-None-Match``).
    """

    program: str
    version: int
    routes: tuple[RouteEntry, ...]
    fallbacks: Mapping[str, tuple[str, ...]]
    policy: str = "static"
    reason: str = ""
    caused_by: tuple[str, ...] = ()
    ts: str | None = None
    etag: str | None = None
    choice: WeightedChoice = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, RouteEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {r.name: r for r in self.routes})
        object.__setattr__(self, "choice", WeightedChoice((r.name, r.weight) for r in self.routes if r.selectable))

    @classmethod
    def uniform(cls, program: str, names: Sequence[str], *, reason: str = "initial: equal shares") -> RoutingTable:
        """Version 0: equal weights over ``names``, no fallbacks (used until the daemon answers)."""
        if not names:
            raise TableError("a routing table needs at least one route")
        w = 1.0 / len(names)
        return cls(program, 0, tuple(RouteEntry(n, weight=w) for n in names), {}, reason=reason)

    @classmethod
    def from_json(cls, data: Any, *, etag: str | None = None) -> RoutingTable:
        """Validate a decoded table (the daemon's JSON format, see the module docstring).

        Only ``program``, ``version`` and ``routes`` (each with ``name``) are required;
        unknown keys are ignored so the daemon can add fields.

        Raises:
            TableError: Wrong types, negative or non-finite weights, duplicate route
                names, an unknown breaker state, or fallbacks that are not lists of names.
        """
        if not isinstance(data, Mapping):
            raise TableError("routing table must be a JSON object")
        program, version, routes = data.get("program"), data.get("version"), data.get("routes")
        if not isinstance(program, str) or not program:
            raise TableError("routing table needs a non-empty string 'program'")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise TableError("routing table needs an integer 'version' >= 0")
        if not isinstance(routes, list):
            raise TableError("routing table needs a list 'routes'")
        entries: list[RouteEntry] = []
        for i, r in enumerate(routes):
            entries.append(_route_from_json(r, i))
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise TableError(f"duplicate route names in {names}")
        raw_fb = data.get("fallbacks") or {}
        if not isinstance(raw_fb, Mapping):
            raise TableError("'fallbacks' must be an object of route -> [route, ...]")
        fallbacks: dict[str, tuple[str, ...]] = {}
        for k, chain in raw_fb.items():
            if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
                raise TableError(f"fallbacks[{k!r}] must be a list of route names")
            fallbacks[str(k)] = tuple(chain)
        caused_by = data.get("caused_by") or ()
        return cls(
            program=program, version=version, routes=tuple(entries), fallbacks=fallbacks,
            policy=str(data.get("policy") or "static"), reason=str(data.get("reason") or ""),
            caused_by=tuple(str(c) for c in caused_by) if isinstance(caused_by, list) else (),
            ts=data.get("ts") if isinstance(data.get("ts"), str) else None, etag=etag,
        )  # fmt: skip

    def fallback_chain(self, failed: Sequence[str]) -> list[str]:
        """Routes to try after ``failed`` (in failure order) all failed: their chains in
        order, then the ``"*"`` chain, without duplicates or already-failed routes.
        Empty when the table names no fallback."""
        out: list[str] = []
        seen = set(failed)
        for name in (*failed, ANY_ROUTE):
            for fb in self.fallbacks.get(name, ()):
                if fb not in seen:
                    seen.add(fb)
                    out.append(fb)
        return out


def _route_from_json(r: Any, i: int) -> RouteEntry:
    if not isinstance(r, Mapping):
        raise TableError(f"routes[{i}] must be an object")
    name = r.get("name")
    if not isinstance(name, str) or not name:
        raise TableError(f"routes[{i}] needs a non-empty string 'name'")
    weight = r.get("weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 <= weight < float("inf")):
        raise TableError(f"routes[{i}] ({name}): 'weight' must be a finite number >= 0")
    breaker = r.get("breaker") or "closed"
    if breaker not in BREAKER_STATES:
        raise TableError(f"routes[{i}] ({name}): unknown breaker state {breaker!r}")
    params = r.get("params") or {}
    if not isinstance(params, Mapping):
        raise TableError(f"routes[{i}] ({name}): 'params' must be an object")
    model, api_base = r.get("model"), r.get("api_base")
    return RouteEntry(
        name=name, model=model if isinstance(model, str) else None, weight=float(weight),
        breaker=breaker, pinned=bool(r.get("pinned")), canary=bool(r.get("canary")),
        params=dict(params), api_base=api_base if isinstance(api_base, str) else None,
    )  # fmt: skip


# -- keeping the table fresh ------------------------------------------------------------


def _poller_after_fork(ref: weakref.ref[TablePoller]) -> None:
    poller = ref()
    if poller is not None:
        try:
            poller._reinit_after_fork()
        except Exception as exc:  # never break the child process
            log.warning("adaptd: routing table refresh not restarted after fork: %r", exc)


class TablePoller:
    """Background long-poll of ``GET {url}/v1/routing/{program}`` with ETags.

    Each request carries ``If-None-Match`` (the last ETag) and ``?wait=<s>``: a server
    that supports long-polling holds the request until the table changes or ``wait``
    passes; one that does not simply answers at once, and the poller then waits
    ``min_interval_s`` between requests. ``url`` and ``token`` may be callables, read
    at each request (the SDK's configured default client can change after the poller
    starts). 200 hands a validated table to ``on_table``;
    304 means unchanged. Connection errors, 5xx and invalid tables are logged (once per
    streak) and retried with exponential backoff and full jitter; the caller keeps its
    last table meanwhile. Never raises into the caller.

    Tested against a stand-in ``http.server`` and against the daemon.
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        program: str,
        on_table: Callable[[RoutingTable], None],
        *,
        token: str | Callable[[], str | None] | None = None,
        wait_s: float = 25.0,
        min_interval_s: float = 1.0,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._url = url
        self.program = program
        self._on_table = on_table
        self._token = token
        self._wait_s = wait_s
        self._min_interval_s = min_interval_s
        self._max_backoff_s = max_backoff_s
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.etag: str | None = None
        #: Counters: ``polls``, ``updates``, ``unchanged``, ``errors``.
        self.counts = {"polls": 0, "updates": 0, "unchanged": 0, "errors": 0}
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_poller_after_fork, weakref.ref(self)))

    @property
    def endpoint(self) -> str:
        """The table's URL now: ``url`` may be a callable, read at every request, so a
        later ``adaptd.adapters.configure(url=...)`` takes effect on the next poll."""
        url = self._url() if callable(self._url) else self._url
        return f"{url.rstrip('/')}/v1/routing/{urllib.parse.quote(self.program, safe='')}"

    def start(self) -> TablePoller:
        """Start the daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"adaptd-routing-{self.program}", daemon=True)
            self._thread.start()
        return self

    def _reinit_after_fork(self) -> None:
        """In a forked child: the thread did not survive the fork; start a new one unless
        the parent had stopped polling."""
        was_running = self._thread is not None and not self._stop.is_set()
        self._stop = threading.Event()
        self._thread = None
        if was_running:
            self.start()

    def stop(self, timeout: float | None = 2.0) -> None:
        """Ask the thread to stop; a request in flight ends at its own timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_once(self) -> RoutingTable | None:
        """One request. Returns the new table (also given to ``on_table``), or None when
        unchanged. Raises on transport errors, HTTP errors other than 304, bad tables."""
        self.counts["polls"] += 1
        query = urllib.parse.urlencode({"wait": self._wait_s}) if self._wait_s > 0 else ""
        req = urllib.request.Request(self.endpoint + (f"?{query}" if query else ""))
        req.add_header("Accept", "application/json")
        if self.etag:
            req.add_header("If-None-Match", self.etag)
        token = self._token() if callable(self._token) else self._token
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=self._wait_s + 10.0) as resp:
                body, etag = resp.read(), resp.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                self.counts["unchanged"] += 1
                return None
            raise
        table = RoutingTable.from_json(json.loads(body), etag=etag)
        if table.program != self.program:
            raise TableError(f"asked for {self.program!r}, got a table for {table.program!r}")
        self._on_table(table)  # first: a table the caller rejects is fetched again next time
        self.etag = etag
        self.counts["updates"] += 1
        return table

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.poll_once()
                if failures:
                    log.info("adaptd: routing table for %s reachable again", self.program)
                failures = 0
                # A server without long-poll answers at once: don't spin on it.
                self._stop.wait(self._min_interval_s)
            except Exception as exc:  # anything: the host program must not notice
                self.counts["errors"] += 1
                if failures == 0:
                    log.warning("adaptd: cannot refresh routing table for %s (%s: %s); keeping the last one",
                                self.program, type(exc).__name__, exc)
                failures += 1
                cap = min(self._max_backoff_s, self._min_interval_s * 2 ** min(failures, 16))
                self._stop.wait(self._rng.uniform(0, cap) + 0.05)
