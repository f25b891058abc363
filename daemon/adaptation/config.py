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


class ProgramRouting(BaseModel):
    """A program's routes, constraints, objective and the policy's pacing.

    Raises (at construction): ``pydantic.ValidationError`` for no routes, duplicate
    route names, fallbacks naming unknown routes, an objective with unknown keys or
    negative weights, or out-of-range knobs.
    """

    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, max_length=256)
    routes: list[RouteConfig] = Field(min_length=1)
    #: route -> the routes to try, in order, when it fails.
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    #: Hard constraint: a route whose expected cost per call exceeds it gets no share.
    max_cost_per_call: float | None = Field(default=None, gt=0)
    #: Soft constraints (judged per Thompson sample): p95 latency and mean quality.
    latency_slo_ms: float | None = Field(default=None, gt=0)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    objective: dict[str, float] = Field(default_factory=lambda: {"quality": 1.0, "cost": 0.0, "latency": 0.0})
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
            unknown = sorted({route, *chain} - set(names))
            if unknown:
                raise ValueError(f"program {self.program!r}: fallbacks name unknown routes {unknown}")
        unknown_keys = sorted(set(self.objective) - _OBJECTIVE_KEYS)
        if unknown_keys:
            raise ValueError(f"objective: unknown keys {unknown_keys}; known: {sorted(_OBJECTIVE_KEYS)}")
        if any(w < 0 for w in self.objective.values()):
            raise ValueError("objective: weights must be >= 0")
        if self.exploration_floor * len(self.routes) > 1:
            raise ValueError(f"exploration_floor {self.exploration_floor} x {len(self.routes)} routes exceeds 1")
        return self

    def route(self, name: str) -> RouteConfig | None:
        """The route called ``name``, or None."""
        return next((r for r in self.routes if r.name == name), None)
