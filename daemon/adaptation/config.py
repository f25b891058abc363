"""Route and routing configuration per program (the shapes the SDK and the API share).

A *route* is one way to serve a program's LM calls: an LM configuration (model,
provider, api base, parameters) and optionally a strategy or program version.  A
``ProgramRouting`` lists a program's routes, its fallback chains, its constraints and
the objective the policy maximises, plus the knobs that keep the policy calm.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

_OBJECTIVE_KEYS = frozenset({"quality", "cost", "latency"})
#: Key of ``fallbacks`` whose chain applies to every route without a chain of its own
#: (the SDK's ``routing_table.ANY_ROUTE``).
ANY_ROUTE = "*"


class RouteConfig(BaseModel):
    """One candidate route of a program."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=256)
    provider: str | None = None
    api_base: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    strategy: str | None = None
    program_version: str | None = None
    #: Price per 1000 tokens (USD), used to estimate a call's cost when events carry
    #: tokens but no ``cost_usd``.
    cost_per_1k_in: float | None = Field(default=None, ge=0)
    cost_per_1k_out: float | None = Field(default=None, ge=0)
    #: A fallback, not a bandit arm: weight 0 in the table while some other route may be
    #: chosen; clients reach it through the fallback chains (``fallbacks``) when the
    #: routes they chose failed or are open.  It gets a share only when every other
    #: route's breaker is open (or they are rolled back / over the cost ceiling).
    fallback_only: bool = False


class ProgramRouting(BaseModel):
    """A program's routes, constraints, objective and the policy's pacing.

    Raises (at construction): ``pydantic.ValidationError`` for no routes, duplicate
    route names, fallbacks naming unknown routes, an objective with unknown keys or
    negative weights, or out-of-range knobs.
    """

    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, max_length=256)
    routes: list[RouteConfig] = Field(min_length=1)
    #: route -> the routes to try, in order, when it fails; the key ``"*"`` is the chain
    #: of every route without one of its own (tried after the failed routes' chains).
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    #: Hard constraint: a route whose expected cost per call exceeds it gets no share.
    max_cost_per_call: float | None = Field(default=None, gt=0)
    #: Soft constraints (judged per Thompson sample): p95 latency and mean quality.
    latency_slo_ms: float | None = Field(default=None, gt=0)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    objective: dict[str, float] = Field(default_factory=lambda: {"quality": 1.0, "cost": 0.0, "latency": 0.0})
    #: Latency-aware by default, with no SLO to guess: a route whose mean latency is this
    #: many times its own baseline (how fast it was before its last slowdown; see
    #: ``posteriors``) loses to any route that is not slow and delivers quality within
    #: ``slowdown_quality_margin`` of the best.  0 (or None): off (only ``latency_slo_ms``
    #: and the objective's latency weight then see latency).
    slowdown_factor: float | None = Field(default=3.0, ge=0)
    #: How much less quality (success x quality, 0..1) a fast route may deliver and still
    #: take the traffic of a slowed-down one.
    slowdown_quality_margin: float = Field(default=0.1, ge=0, le=1)
    #: Every choosable route keeps at least this share (a route bad once is re-tried).
    exploration_floor: float = Field(default=0.02, ge=0, le=0.5)
    #: Outcomes (program-wide, since the last table) needed before a performance change.
    min_samples: int = Field(default=20, ge=1)
    #: Event-time seconds between performance-driven table changes (breaker, admin and
    #: signal-triggered changes are not held back by it).
    min_change_interval_s: float = Field(default=30, ge=0)
    #: A new table is published only when some weight moves by at least this much.
    hysteresis: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> ProgramRouting:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"program {self.program!r}: duplicate route names {sorted(names)}")
        for route, chain in self.fallbacks.items():
            unknown = sorted({route, *chain} - set(names) - {ANY_ROUTE})
            if unknown or ANY_ROUTE in chain:
                raise ValueError(f"program {self.program!r}: fallbacks name unknown routes {unknown or [ANY_ROUTE]}"
                                 f" (known: {names}; {ANY_ROUTE!r} is only a key)")
        reserve = [r.name for r in self.routes if r.fallback_only]
        if len(reserve) == len(names):
            raise ValueError(f"program {self.program!r}: every route is fallback_only; at least one must be a"
                             " primary choice")
        targets = {t for chain in self.fallbacks.values() for t in chain}
        unreachable = sorted(set(reserve) - targets)
        if unreachable:
            raise ValueError(f"program {self.program!r}: fallback_only routes {unreachable} are named in no"
                             " fallback chain, so no call would ever reach them; add them to [routing.fallbacks]")
        if self.slowdown_factor is not None and 0 < self.slowdown_factor <= 1:
            raise ValueError(f"slowdown_factor {self.slowdown_factor}: must be > 1 (times slower), or 0 for off")
        unknown_keys = sorted(set(self.objective) - _OBJECTIVE_KEYS)
        if unknown_keys:
            raise ValueError(f"objective: unknown keys {unknown_keys}; known: {sorted(_OBJECTIVE_KEYS)}")
        if any(w < 0 for w in self.objective.values()):
            raise ValueError("objective: weights must be >= 0")
        if self.exploration_floor * (len(names) - len(reserve)) > 1:
            raise ValueError(f"exploration_floor {self.exploration_floor} x {len(names) - len(reserve)} routes"
                             " exceeds 1")
        return self

    @property
    def reserve(self) -> frozenset[str]:
        """The fallback-only routes (no bandit share while another route may be chosen)."""
        return frozenset(r.name for r in self.routes if r.fallback_only)

    def route(self, name: str) -> RouteConfig | None:
        """The route called ``name``, or None."""
        return next((r for r in self.routes if r.name == name), None)
