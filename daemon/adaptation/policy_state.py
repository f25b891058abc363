"""The routing policy's configuration and state (plain data: pickled in snapshots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adaptd.daemon.adaptation import breaker as brk
from adaptd.daemon.adaptation.posteriors import RouteStats


@dataclass(frozen=True)
class PolicyConfig:
    """Global parameters of the routing policy (per-program ones are in ``ProgramRouting``)."""

    seed: int = 0
    #: Thompson samples per evaluation.
    samples: int = 2000
    #: Half-life of the posteriors' memory (event-time seconds).
    half_life_s: float = 30.0
    #: Evaluation slot: the policy evaluates when a program's clock enters a new one.
    tick_s: float = 1.0
    #: Share of a half-open route (the traffic that probes it), doubled per probe success.
    probe_share: float = 0.1
    #: A performance change this large (some weight moves by at least this much) is
    #: published without waiting for ``min_change_interval_s``: the posterior is sure
    #: enough (a silent quality drop moves the best route's share from ~0.9 to the floor
    #: once ~20 scores show it), while small moves stay rate-limited against flapping.
    strong_move: float = 0.3
    outcome_kinds: tuple[str, ...] = ("lm_call",)
    #: Bound on the execution id -> route joins kept for feedback, per tenant (oldest dropped).
    max_joins: int = 100_000
    #: Bound on the causes kept for the next table.
    max_causes: int = 32
    #: Automatic canary rollback: posterior probability that the canary is worse.
    rollback_confidence: float = 0.95
    #: ... that it delivers at least this much less (success x quality): not merely "fewer samples".
    rollback_margin: float = 0.02
    breaker: brk.BreakerConfig = field(default_factory=brk.BreakerConfig)

    def __post_init__(self) -> None:
        if self.samples < 10 or self.tick_s <= 0 or self.half_life_s <= 0 or not 0 < self.probe_share < 1:
            raise ValueError("PolicyConfig: need samples >= 10, tick_s > 0, half_life_s > 0, 0 < probe_share < 1")
        if not 0 < self.strong_move <= 1:
            raise ValueError("PolicyConfig: need 0 < strong_move <= 1")
        bad = set(self.outcome_kinds) - {"execution", "lm_call"}
        if bad:
            raise ValueError(f"PolicyConfig: outcome_kinds must be execution / lm_call, not {sorted(bad)}")


@dataclass(slots=True)
class ProgramState:
    """One (tenant, program): posteriors, breakers, overrides, the current table."""

    tenant: str
    program: str
    rng_key: int
    clock_us: int | None = None
    tick: int = 0
    version: int = 0
    seq: int = 0
    evals: int = 0
    stats: dict[str, RouteStats] = field(default_factory=dict)
    breakers: dict[str, brk.Breaker] = field(default_factory=dict)
    #: route -> id of the breaker's last signal (while not closed).
    breaker_signal: dict[str, str] = field(default_factory=dict)
    breaker_incident: dict[str, str] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    last_change_us: int | None = None
    since_eval: int = 0
    pinned: str | None = None
    canaries: dict[str, float] = field(default_factory=dict)
    #: route -> its outcome count (``RouteStats.total``) when it became a canary.
    canary_base: dict[str, int] = field(default_factory=dict)
    #: Rolled-back routes (a dict used as an ordered set: sets iterate in hash order).
    disabled: dict[str, None] = field(default_factory=dict)
    causes: list[str] = field(default_factory=list)
    urgent: bool = False
    table: dict[str, Any] | None = None


@dataclass(slots=True)
class PolicyState:
    """The policy's state (plain data, pickled in snapshots)."""

    seed: int
    programs: dict[tuple[str, str], ProgramState] = field(default_factory=dict)
    #: tenant -> (execution id -> (tenant, program, route)), for that tenant's feedback.
    joins: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)
    #: tenant -> joins dropped to stay within ``PolicyConfig.max_joins``.
    joins_dropped: dict[str, int] = field(default_factory=dict)
    wm_tick: int = 0
    outcomes: int = 0
    feedback: int = 0
    ignored: int = 0
