"""Rolling out an optimized version: the gate, the slot state and the canary verdict (pure).

**Slots.**  Routes are fixed in ``[[routing]]``, so a program registered for rollout names
two of its routes (``routes = ["blue", "green"]``), each serving one saved program
version (``AdaptiveModule`` variants, loaded from ``GET /v1/optimization/programs/{p}``).
One is *live*, the other the *candidate* slot; they swap roles at each promotion
(blue/green).  This is the documented equivalent of "a canary for the route whose
``program_version`` is the new version": the binding slot -> version is an event
(``program_version``), so it replays like the rest.

**Steps** (each an ``adaptation`` event of source ``adaptd.optimize``):

1. ``reserve`` (once): the candidate slot gets no traffic until there is a version
   (a policy ``rollback`` of that route);
2. after a successful job, ``gate``: devset score after - before >= ``margin``, else
   ``rollout_rejected``;
3. ``program_version`` binds the candidate slot to the new version, ``canary`` gives it
   ``canary_share`` of the traffic (the policy obeys it);
4. ``canary_verdict`` on the live feedback since the canary: the policy's own automatic
   rollback, or ``min_live_samples`` scores with the canary's mean quality at least the
   live slot's minus ``live_tolerance`` -> ``promote`` (the policy lets it compete)
   followed by ``rollback`` of the old live slot (retired: the new version takes the
   traffic) and ``rollout_promoted``; worse -> ``rollback`` of the canary and
   ``rollout_rolled_back``; no verdict within ``canary_timeout_s`` -> rolled back too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptd.daemon.optimize.records import SOURCE

BASE_VERSION = "base"  # the factory's program, before any optimization


def gate(score_before: float | None, score_after: float | None, margin: float) -> tuple[bool, str]:
    """Whether the new version beats the current one on the devset by ``margin``, and why."""
    if score_before is None or score_after is None:
        return False, "no devset scores"
    gain = score_after - score_before
    if gain >= margin - 1e-12:
        return True, f"devset {score_before:.3f} -> {score_after:.3f} (+{gain:.3f} >= margin {margin:.3f})"
    return False, f"devset {score_before:.3f} -> {score_after:.3f} ({gain:+.3f} < margin {margin:.3f})"


@dataclass
class SlotState:
    """Where a program's rollout stands (folded from its events)."""

    routes: tuple[str, str]
    live: str
    bindings: dict[str, dict[str, Any]] = field(default_factory=dict)  # route -> {version, path, job_id}
    reserved: bool = False
    phase: str = "idle"  # idle | canary
    canary_route: str | None = None
    canary_version: str | None = None
    canary_offset: int = -1
    canary_ts: str | None = None
    canary_job: str | None = None
    policy_rolled_back: bool = False  # the policy's automatic rollback, not yet recorded by us

    @property
    def candidate(self) -> str:
        """The slot a new version goes to."""
        return self.routes[1] if self.live == self.routes[0] else self.routes[0]

    def to_dict(self) -> dict[str, Any]:
        return {"routes": list(self.routes), "live_route": self.live, "candidate_route": self.candidate,
                "phase": self.phase, "reserved": self.reserved,
                "live_version": self.bindings.get(self.live, {}).get("version", BASE_VERSION),
                "bindings": {r: self.bindings.get(r, {"version": BASE_VERSION if r == self.live else None})
                             for r in self.routes},
                "canary": None if self.phase != "canary" else {
                    "route": self.canary_route, "version": self.canary_version, "since": self.canary_ts,
                    "job_id": self.canary_job}}


def fold(routes: Sequence[str], events: Iterable[Mapping[str, Any]]) -> SlotState:
    """The slot state after ``events`` (``queries.rollout_events`` rows, log order):
    this package's adaptations and the policy's rollbacks.  No events: slot 0 live,
    nothing bound, idle."""
    st = SlotState(routes=(routes[0], routes[1]), live=routes[0])
    for e in events:
        action, route, details = e.get("action"), e.get("route"), e.get("details") or {}
        ours = e.get("source") == SOURCE
        if ours and action == "reserve":
            st.reserved = True
        elif ours and action == "program_version" and route in st.routes:
            st.bindings[route] = {k: details.get(k) for k in ("version", "path", "job_id")}
        elif ours and action == "canary" and route in st.routes:
            st.phase, st.canary_route, st.canary_offset, st.canary_ts = "canary", route, int(e["log_offset"]), e["ts"]
            st.canary_version = details.get("version")
            st.canary_job = details.get("job_id")
            st.policy_rolled_back = False
        elif not ours and action == "rollback" and st.phase == "canary" and route == st.canary_route:
            st.policy_rolled_back = True  # over; ``rollout_rolled_back`` records it
        elif ours and action in ("rollback", "rollout_rolled_back") and st.phase == "canary" \
                and route == st.canary_route:
            st.phase = "idle"
        elif ours and action == "rollout_promoted" and route in st.routes:
            st.live, st.phase = route, "idle"
    return st


def canary_verdict(canary: tuple[int, float] | None, live: tuple[int, float] | None, *, policy_rolled_back: bool,
                   min_samples: int, tolerance: float, waited_s: float, timeout_s: float) -> tuple[str, str]:
    """``("wait" | "promote" | "rollback" | "rolled_back", reason)`` for a running canary.

    ``canary`` and ``live`` are ``(n, mean quality)`` of the feedback since the canary
    started (None: none yet).  ``rolled_back``: the policy already rolled it back.
    """
    if policy_rolled_back:
        return "rolled_back", "the routing policy rolled the canary back (worse than the incumbent)"
    n_c, q_c = canary or (0, 0.0)
    if n_c >= min_samples:
        if live is None or live[0] == 0:
            return "promote", f"canary quality {q_c:.3f} over {n_c} scores; the live slot had no scores"
        n_l, q_l = live
        if q_c + tolerance >= q_l:
            return "promote", f"canary quality {q_c:.3f} (n={n_c}) >= live {q_l:.3f} (n={n_l}) - {tolerance:g}"
        return "rollback", f"canary quality {q_c:.3f} (n={n_c}) < live {q_l:.3f} (n={n_l}) - {tolerance:g}"
    if waited_s >= timeout_s:
        return "rollback", f"only {n_c} of {min_samples} canary scores within {timeout_s:g} s"
    return "wait", f"{n_c} of {min_samples} canary scores"


def is_quality_drift(signal: Mapping[str, Any]) -> bool:
    """True for a drift signal that names quality (its metric or among the drifted features)."""
    explanation = signal.get("explanation") or {}
    drifted = explanation.get("drifted") or []
    return signal.get("signal_type") == "drift" and (signal.get("metric") == "quality" or "quality" in drifted)


def reoptimize_decision(incident: str, handled: set[str], job_statuses: Sequence[str], canary_version: str | None,
                        last_auto_s: float | None, now_s: float, min_interval_s: float) -> tuple[bool, str | None]:
    """Whether a quality-drift incident starts a re-optimization: ``(go, why_not)``.

    ``why_not`` is None when the incident was already handled (nothing to record), else
    the reason to record in a ``reoptimize_skipped`` event when ``go`` is False.
    ``last_auto_s`` is the time of the last drift-triggered job's latest event (None: never).
    """
    if incident in handled:
        return False, None
    if any(s in ("queued", "running") for s in job_statuses):
        return False, "a job of the program is unfinished"
    if canary_version is not None:
        return False, f"canary {canary_version} is still being judged"
    if last_auto_s is not None and now_s - last_auto_s < min_interval_s:
        return False, f"last automatic run {now_s - last_auto_s:.0f} s ago (min_interval_s {min_interval_s:g})"
    return True, None
