"""Turning probabilities of being best into a routing table's weights (pure).

Order of precedence, per program:

1. A pinned route takes the whole share (operator's word; its breaker state is still
   shown, and clients still fall back along ``fallbacks`` when it fails).
2. Canary routes whose breaker is not open get their fixed share; half-open routes get
   ``probe_share`` so clients send them the probes that can close their breaker.
3. The rest goes to the *candidates* (breaker closed, not rolled back, not a canary,
   expected cost within the ceiling): each gets ``exploration_floor``, and what remains
   is split by probability of being best.
4. When nothing may be chosen (every route open or excluded), the routes that are not
   rolled back share equally, so clients still have somewhere to go; the reason says so.

Weights are rounded to 4 decimals with the rounding residue put on the largest one, so
they sum to exactly 1 over the routes that may be chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adaptd.daemon.adaptation.breaker import CLOSED, HALF_OPEN, OPEN


def round_shares(weights: dict[str, float]) -> dict[str, float]:
    """``weights`` normalised to sum 1, rounded to 4 decimals (residue on the largest).
    All zero (or empty): returned as zeros."""
    total = sum(weights.values())
    if total <= 0:
        return {k: 0.0 for k in weights}
    out = {k: round(v / total, 4) for k, v in weights.items()}
    top = max(out, key=lambda k: (out[k], k))
    out[top] = round(out[top] + 1.0 - sum(out.values()), 4)
    return out


def weights(routes: Sequence[str], *, prob_best: Mapping[str, float], breakers: Mapping[str, str],
            pinned: str | None, canaries: Mapping[str, float], disabled: set[str], excluded: set[str],
            floor: float, probe_share: float) -> tuple[dict[str, float], str]:
    """The weight of every route in ``routes`` and a short note on how they were set.

    ``prob_best`` holds the candidates' probabilities of being best (a missing
    candidate counts as 0); ``excluded`` are routes over the cost ceiling.
    """
    w = {r: 0.0 for r in routes}
    if pinned is not None and pinned in w:
        w[pinned] = 1.0
        return w, f"pinned to {pinned}"
    fixed = {r: s for r, s in canaries.items() if r in w and r not in disabled and breakers.get(r) != OPEN}
    probes = {r: probe_share for r in routes
              if breakers.get(r) == HALF_OPEN and r not in fixed and r not in disabled and r not in excluded}
    candidates = [r for r in routes if breakers.get(r, CLOSED) == CLOSED and r not in disabled
                  and r not in canaries and r not in excluded]
    reserved = sum(fixed.values()) + sum(probes.values())
    if not candidates:
        if reserved > 0:
            return round_shares({**w, **fixed, **probes}), "no healthy candidate: canaries and probes only"
        fallback = [r for r in routes if r not in disabled] or list(routes)
        return round_shares({**w, **{r: 1.0 for r in fallback}}), "no healthy route: all share equally"
    rest = max(1.0 - reserved, 0.0)
    f = min(floor, rest / len(candidates))
    spread = rest - f * len(candidates)
    raw = {r: max(prob_best.get(r, 0.0), 0.0) for r in candidates}
    total = sum(raw.values())
    for r in candidates:
        w[r] = f + spread * (raw[r] / total if total > 0 else 1.0 / len(candidates))
    w.update(fixed)
    w.update(probes)
    return round_shares(w), "thompson"


def table(*, program: str, version: int, routes: Sequence[Any], shares: Mapping[str, float],
          breakers: Mapping[str, str], pinned: str | None, canaries: Mapping[str, float],
          fallbacks: Mapping[str, list[str]], reason: str, caused_by: list[str], ts: str) -> dict[str, Any]:
    """The routing table in the shape the API serves and the SDK caches (routes in
    config order)."""
    return {
        "program": program, "version": version, "policy": "thompson",
        "routes": [{"name": r.name, "model": r.model, "weight": shares.get(r.name, 0.0),
                    "breaker": breakers.get(r.name, CLOSED), "pinned": r.name == pinned,
                    "canary": r.name in canaries, "params": dict(r.params), "api_base": r.api_base}
                   for r in routes],
        "fallbacks": {k: list(v) for k, v in fallbacks.items()},
        "reason": reason, "caused_by": list(caused_by), "ts": ts,
    }


def default_table(routing: Any, ts: str) -> dict[str, Any]:
    """Version 0 of ``routing``'s table (a ``ProgramRouting``), served before the policy
    saw any event of the program: equal shares, breakers closed."""
    names = [r.name for r in routing.routes]
    return table(program=routing.program, version=0, routes=routing.routes,
                 shares=round_shares({n: 1.0 for n in names}), breakers={}, pinned=None, canaries={},
                 fallbacks=routing.fallbacks, reason="configured routes; no events yet", caused_by=[], ts=ts)
