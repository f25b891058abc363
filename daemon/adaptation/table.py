"""Turning probabilities of being best into a routing table's weights (pure).

Order of precedence, per program:

1. A pinned route takes the whole share (operator's word; its breaker state is still
   shown, and clients still fall back along ``fallbacks`` when it fails).
2. Canary routes whose breaker is not open get their fixed share; half-open routes get
   ``probe_share`` (doubled per probe success) so clients send them the probes that can
   close their breaker.
3. The rest goes to the *candidates* (breaker closed, not rolled back, not a canary,
   expected cost within the ceiling, not fallback-only): each gets ``exploration_floor``,
   and what remains is split by probability of being best.  Fallback-only routes get
   weight 0 (clients reach them through the fallback chains) unless no other route is a
   candidate, when they are the candidates.
4. When nothing may be chosen (every route open or excluded), the routes that are not
   rolled back share equally, so clients still have somewhere to go; the reason says so.

Weights are rounded to 4 decimals with the rounding residue put on the largest one, so
they sum to exactly 1 over the routes that may be chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
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


def candidates(routes: Sequence[str], *, breakers: Mapping[str, str], canaries: Mapping[str, float],
               disabled: Set[str], excluded: Set[str], reserve: Set[str] = frozenset()) -> list[str]:
    """The routes that compete for the shares (in ``routes`` order): breaker closed, not
    rolled back, not a canary, within the cost ceiling, and not fallback-only
    (``reserve``) unless no other route qualifies, when the fallback-only ones that
    qualify compete instead.  May be empty."""
    able = [r for r in routes if breakers.get(r, CLOSED) == CLOSED and r not in disabled
            and r not in canaries and r not in excluded]
    return [r for r in able if r not in reserve] or able


def weights(routes: Sequence[str], *, prob_best: Mapping[str, float], breakers: Mapping[str, str],
            pinned: str | None, canaries: Mapping[str, float], disabled: set[str], excluded: set[str],
            floor: float, probe_share: float, reserve: Set[str] = frozenset(),
            probe_ok: Mapping[str, int] | None = None) -> tuple[dict[str, float], str]:
    """The weight of every route in ``routes`` and a short note on how they were set.

    ``prob_best`` holds the candidates' probabilities of being best (a missing
    candidate counts as 0); ``excluded`` are routes over the cost ceiling; ``reserve``
    the fallback-only routes (see ``candidates``; no probe share either while a primary
    route may be chosen: clients probe them through the fallback chains).  A half-open
    route's probe share doubles with each probe success so far (``probe_ok``), up to 0.5:
    the route comes back on a rising share while the evidence that it recovered grows.
    """
    w = {r: 0.0 for r in routes}
    if pinned is not None and pinned in w:
        w[pinned] = 1.0
        return w, f"pinned to {pinned}"
    cands = candidates(routes, breakers=breakers, canaries=canaries, disabled=disabled, excluded=excluded,
                       reserve=reserve)
    primary_left = any(r not in reserve for r in cands)
    fixed = {r: s for r, s in canaries.items() if r in w and r not in disabled and breakers.get(r) != OPEN}
    probes = {r: min(probe_share * 2 ** (probe_ok or {}).get(r, 0), 0.5) for r in routes
              if breakers.get(r) == HALF_OPEN and r not in fixed and r not in disabled and r not in excluded
              and not (r in reserve and primary_left)}
    reserved = sum(fixed.values()) + sum(probes.values())
    if not cands:
        if reserved > 0:
            return round_shares({**w, **fixed, **probes}), "no healthy candidate: canaries and probes only"
        fallback = [r for r in routes if r not in disabled] or list(routes)
        return round_shares({**w, **{r: 1.0 for r in fallback}}), "no healthy route: all share equally"
    rest = max(1.0 - reserved, 0.0)
    f = min(floor, rest / len(cands))
    spread = rest - f * len(cands)
    raw = {r: max(prob_best.get(r, 0.0), 0.0) for r in cands}
    total = sum(raw.values())
    for r in cands:
        w[r] = f + spread * (raw[r] / total if total > 0 else 1.0 / len(cands))
    w.update(fixed)
    w.update(probes)
    return round_shares(w), "thompson" if primary_left else "thompson over fallback-only routes (no primary available)"


def table(*, program: str, version: int, routes: Sequence[Any], shares: Mapping[str, float],
          breakers: Mapping[str, str], pinned: str | None, canaries: Mapping[str, float],
          fallbacks: Mapping[str, list[str]], reason: str, caused_by: list[str], ts: str) -> dict[str, Any]:
    """The routing table in the shape the API serves and the SDK caches (routes in
    config order)."""
    return {
        "program": program, "version": version, "policy": "thompson",
        "routes": [{"name": r.name, "model": r.model, "weight": shares.get(r.name, 0.0),
                    "fallback_only": bool(getattr(r, "fallback_only", False)),
                    "breaker": breakers.get(r.name, CLOSED), "pinned": r.name == pinned,
                    "canary": r.name in canaries, "params": dict(r.params), "api_base": r.api_base}
                   for r in routes],
        "fallbacks": {k: list(v) for k, v in fallbacks.items()},
        "reason": reason, "caused_by": list(caused_by), "ts": ts,
    }


def default_table(routing: Any, ts: str) -> dict[str, Any]:
    """Version 0 of ``routing``'s table (a ``ProgramRouting``), served before the policy
    saw any event of the program: equal shares, breakers closed."""
    names = [r.name for r in routing.routes if not r.fallback_only]
    return table(program=routing.program, version=0, routes=routing.routes,
                 shares=round_shares({n: 1.0 for n in names}), breakers={}, pinned=None, canaries={},
                 fallbacks=routing.fallbacks, reason="configured routes; no events yet", caused_by=[], ts=ts)
