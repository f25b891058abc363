"""The routing policy: a deterministic processor that publishes versioned routing tables.

Per ``(tenant, program)`` of the configured programs it keeps per-route posteriors
(``posteriors.RouteStats``), a circuit breaker per route (``breaker``) and the operator's
overrides (pin, canary shares, rolled-back routes), and emits:

- ``adaptation`` events with action ``routing_table`` (``details`` = the table, see
  ``table.table``; ``version`` counts up from 1 per program), with a ``reason`` (the
  trigger and per-route numbers) and ``caused_by`` (signal / admin / breaker event ids);
- breaker transitions as ``signal`` events (``signal_type`` "breaker": ``open`` when it
  trips, ``update`` when a probe fails, ``resolved`` when it closes) and ``adaptation``
  events ``breaker_open`` / ``breaker_half_open`` / ``breaker_close``;
- an ``adaptation`` ``rollback`` (its own) when a canary is worse than the best
  incumbent with ``PolicyConfig.rollback_confidence`` (``canary.prob_worse``).

Inputs, in log order: outcomes (``lm_call`` events by default, ``PolicyConfig.
outcome_kinds``) of a configured program and route; ``feedback`` joined to a route by
``execution_id`` (through an execution carrying ``route``, an ``lm_call`` or a
``route_decision`` with that ``execution_id``, of the feedback's own tenant: joins are
kept per tenant, at most ``PolicyConfig.max_joins`` each, oldest in log order dropped
first and counted, so one tenant's volume never pushes out another's joins); ``signal`` events of other processors
(an open / update / resolved anomaly, drift or breaker signal on the program makes the
next evaluation skip the rate limit and is cited in ``caused_by``); admin ``adaptation``
events (``ADMIN_ACTIONS``; see ``_admin`` for the expected fields).

When tables change (event time of the program: the highest event time seen for it, or
the watermark, whichever is later; evaluations happen when that clock enters a new
``tick_s`` slot):

- immediately, on a breaker transition or an admin action (``force``);
- initially, at the program's first event (version 1);
- on performance, when ``min_samples`` outcomes arrived since the last evaluation, at
  least ``min_change_interval_s`` passed since the last table (or a signal arrived) and
  some weight moved by ``hysteresis`` or more; before ``min_change_interval_s`` when
  some weight moved by ``PolicyConfig.strong_move`` or more (strong evidence);
- on each successful probe of a half-open route (its probe share doubles).

Wiring (not done here).  The runtime feeds source processors only the source kinds;
the policy also needs ``signal`` and admin ``adaptation`` records.  The smallest change:
a source processor may declare ``raw_kinds`` (a frozenset of non-source kinds); the
runtime's parse step (``parse_records``, after the Arrow parse, which already reads
``kind``) decodes with ``orjson`` just the records of those kinds (few: signals and admin
actions) and puts ``(offset, dict)`` pairs in ``batch.extra["_raw"]`` of the processors that declared them.
``process`` merges them with the batch's rows by offset.  There is no loop: the policy
ignores its own outputs (``source``), and other processors' signals are read back from
the log at their offsets, so a re-run over the same log sees them at the same places.

Determinism: each event is folded on its own, in log order; the random draws of an
evaluation come from a generator seeded by ``(seed, tenant, program, evaluation
number)``; so the same events give the same tables, ids and values under any batching
and any partitioning by program.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from adaptd.daemon.adaptation import breaker as brk
from adaptd.daemon.adaptation import canary
from adaptd.daemon.adaptation.bandit import prob_best
from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.policy_state import PolicyConfig, PolicyState, ProgramState
from adaptd.daemon.adaptation.posteriors import US, RouteStats
from adaptd.daemon.adaptation.table import candidates, table, weights
from adaptd.streams.events import SCHEMA_VERSION, derived_id
from adaptd.streams.processors.base import SOURCE_KINDS, EventBatch, iso_us, to_us

POLICY_NS = uuid.UUID("5a1f3e77-2c9b-4d61-8e0a-7b3c9d4f2e18")
#: Admin actions the policy obeys (``adaptation`` events from the admin API).
ADMIN_ACTIONS = ("pin", "unpin", "canary", "promote", "rollback")
_TABLE = "routing_table"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class RoutingPolicy:
    """The routing policy as a source processor (see ``adaptd.streams.processors.base``).

    ``fold`` is the pure core over plain event dicts; ``process`` adapts the runtime's
    ``EventBatch`` (plus, once the runtime provides them, ``signal`` / ``adaptation``
    records as dicts with their offsets in ``batch.extra["_raw"]``).
    """

    kinds = frozenset({"execution", "lm_call", "feedback", "route_decision"})
    #: Derived kinds it also needs (not yet fed by the runtime; see the module docstring).
    raw_kinds = frozenset({"signal", "adaptation"})

    def __init__(self, programs: Sequence[ProgramRouting], config: PolicyConfig | None = None, *,
                 name: str = "policy") -> None:
        self.cfg = config or PolicyConfig()
        self.name, self.source = name, f"adaptd.{name}"
        self.programs = {p.program: p for p in programs}
        if len(self.programs) != len(programs):
            raise ValueError("RoutingPolicy: a program is configured twice")
        self.route_names = {p.program: [r.name for r in p.routes] for p in programs}
        self.tick_us = int(self.cfg.tick_s * US)

    # ------------------------------------------------------------------ contract

    def initial_state(self) -> PolicyState:
        return PolicyState(seed=self.cfg.seed)

    def config(self) -> dict[str, Any]:
        return {"version": 5, "policy": asdict(self.cfg),
                "programs": [p.model_dump() for p in self.programs.values()]}

    def metrics(self, state: PolicyState) -> dict[str, Any]:
        return {"programs": len(state.programs), "outcomes": state.outcomes, "feedback": state.feedback,
                "ignored": state.ignored, "tables": sum(p.version for p in state.programs.values()),
                "joins": sum(len(j) for j in state.joins.values()),
                "joins_dropped": dict(sorted(state.joins_dropped.items())),
                # keys are (tenant, configured program): at most len(programs) per tenant
                "keys_per_tenant_cap": len(self.programs)}

    def process(self, state: PolicyState, batch: EventBatch, watermark: int) -> tuple[PolicyState, list[dict]]:
        """Fold a runtime batch: its rows as dicts merged by log offset with
        ``batch.extra["_raw"]`` (``(offset, event dict)`` pairs), each with its watermark."""
        rows: list[tuple[int, dict[str, Any], int | None]] = []
        for i in range(len(batch)):
            rows.append((int(batch.offset[i]), {
                "kind": SOURCE_KINDS[int(batch.kind[i])], "id": batch.id[i], "ts": int(batch.ts[i]),
                "tenant": batch.tenant.get(i), "program": batch.program.get(i), "route": batch.route.get(i),
                "model": batch.model.get(i), "status": "error" if batch.status_error[i] else "ok",
                "duration_ms": _num(batch.duration_ms[i]), "cost_usd": _num(batch.cost_usd[i]),
                "tokens_in": _num(batch.tokens_in[i]), "tokens_out": _num(batch.tokens_out[i]),
                "score": _num(batch.score[i]), "execution_id": batch.execution_id[i],
            }, int(batch.wm[i]) if len(batch.wm) == len(batch) else None))
        for offset, event in batch.extra.get("_raw", []) or []:
            rows.append((int(offset), event, None))
        rows.sort(key=lambda r: r[0])  # stable: log order
        return self.fold(state, [r[1] for r in rows], [r[2] for r in rows])

    # ------------------------------------------------------------------ pure core

    def fold(self, state: PolicyState, events: Sequence[Mapping[str, Any]],
             watermarks: Sequence[int | None] | None = None) -> tuple[PolicyState, list[dict[str, Any]]]:
        """Fold ``events`` (event dicts, log order; ``ts`` ISO text, datetime or µs int)
        into ``state``; ``watermarks[i]`` (µs, optional) is the watermark after event i.

        Returns:
            ``(state, outputs)``: state updated in place; JSON-ready ``adaptation`` and
            ``signal`` dicts in the order they happened.  Events of other programs,
            unknown routes or kinds, and the policy's own outputs are ignored (counted
            in ``ignored``); no events, no outputs.
        """
        out: list[dict[str, Any]] = []
        for i, e in enumerate(events):
            self._event(state, e, out)
            wm = watermarks[i] if watermarks is not None else None
            if wm is not None and wm // self.tick_us > state.wm_tick:
                state.wm_tick = wm // self.tick_us
                for key in sorted(state.programs):
                    self._advance(state.programs[key], wm, out)
        return state, out

    def _program(self, state: PolicyState, tenant: str, program: str) -> ProgramState:
        key = (tenant, program)
        ps = state.programs.get(key)
        if ps is None:
            rng_key = derived_id(POLICY_NS, "rng", tenant, program).int & (2**64 - 1)
            ps = state.programs[key] = ProgramState(tenant=tenant, program=program, rng_key=rng_key)
            for r in self.route_names[program]:
                ps.stats[r], ps.breakers[r] = RouteStats(), brk.Breaker()
        return ps

    def _event(self, state: PolicyState, e: Mapping[str, Any], out: list[dict]) -> None:
        kind = e.get("kind")
        if e.get("source") == self.source:
            return
        ts = e["ts"] if isinstance(e["ts"], int) else to_us(e["ts"])
        tenant: str = e.get("tenant") or "default"
        route = e.get("route")
        if kind == "feedback":
            # joins are per tenant: a feedback can only score its own tenant's executions
            join = state.joins.get(tenant, {}).get(str(e.get("execution_id")))
            score = _num(e.get("score"))
            if join is None or score is None:
                state.ignored += 1
                return
            ps = self._program(state, join[0], join[1])
            now = self._advance(ps, ts, out)
            stats = ps.stats[join[2]]
            stats.decay_to(now, self.cfg.half_life_s)
            stats.quality(score)
            state.feedback += 1
            return
        # the event's program if it is configured, else None; ``configured``: that program
        # again if the event's route is one of its routes or absent, else None
        program: str | None = e.get("program") if e.get("program") in self.programs else None
        configured = program if program is not None and (route is None or route in self.route_names[program]) else None
        if kind in ("execution", "lm_call", "route_decision") and configured is not None and route is not None:
            join_id = e.get("id") if kind == "execution" else e.get("execution_id")
            if join_id is not None:
                self._join(state, tenant, str(join_id), (tenant, configured, route))
        if kind in self.cfg.outcome_kinds and configured is not None and route is not None:
            ps = self._program(state, tenant, configured)
            now = self._advance(ps, ts, out)
            self._outcome(ps, now, route, e, out)
            state.outcomes += 1
        elif kind == "signal" and program is not None and e.get("state") in ("open", "update", "resolved"):
            ps = self._program(state, tenant, program)
            self._advance(ps, ts, out)
            self._cause(ps, str(e["id"]))
            ps.urgent = True
        elif kind == "adaptation" and e.get("action") in ADMIN_ACTIONS and configured is not None:
            ps = self._program(state, tenant, configured)
            now = self._advance(ps, ts, out)
            self._admin(ps, now, e, out)
        elif kind != "route_decision" or configured is None:
            state.ignored += 1

    def _join(self, state: PolicyState, tenant: str, execution_id: str, value: tuple[str, str, str]) -> None:
        joins = state.joins.get(tenant)
        if joins is None:
            joins = state.joins[tenant] = {}
        joins[execution_id] = value
        if len(joins) > self.cfg.max_joins:  # oldest first: dicts keep insertion order
            del joins[next(iter(joins))]
            state.joins_dropped[tenant] = state.joins_dropped.get(tenant, 0) + 1

    def _cause(self, ps: ProgramState, event_id: str) -> None:
        if event_id not in ps.causes:
            ps.causes.append(event_id)
            del ps.causes[:-self.cfg.max_causes]

    # ------------------------------------------------------------------ time

    def _advance(self, ps: ProgramState, t_us: int, out: list[dict]) -> int:
        """Move the program's clock to ``t_us`` (never back); the first time, publish the
        initial table; on entering a new tick slot, evaluate at the slot's start.

        Returns:
            The program's clock (``ps.clock_us``) afterwards.
        """
        if ps.clock_us is None:
            ps.clock_us, ps.tick = t_us, t_us // self.tick_us
            self._publish(ps, t_us, "initial table", out, force=True)
            return t_us
        if t_us <= ps.clock_us:
            return ps.clock_us
        slot = t_us // self.tick_us
        if slot > ps.tick:
            ps.tick = slot
            ps.clock_us = max(ps.clock_us, slot * self.tick_us)
            self._evaluate(ps, ps.clock_us, out)
        ps.clock_us = t_us
        return t_us

    def _evaluate(self, ps: ProgramState, t_us: int, out: list[dict]) -> None:
        routing = self.programs[ps.program]
        for r in self.route_names[ps.program]:
            for tr in brk.tick(ps.breakers[r], self.cfg.breaker, t_us):
                self._transition(ps, r, tr, out)
        self._judge_canaries(ps, routing, t_us, out)
        # An urgent change (a signal, a latency change point) does not wait for more
        # outcomes: when a route slows down, outcomes are exactly what stops arriving.
        if ps.since_eval < routing.min_samples and not ps.urgent:
            return
        if max(s.total for s in ps.stats.values()) < routing.min_samples:
            return
        waited = ps.last_change_us is None or t_us - ps.last_change_us >= routing.min_change_interval_s * US
        if waited or ps.urgent:
            self._publish(ps, t_us, "signal" if ps.urgent and not waited else "performance", out)
        else:  # within the rate limit: only a large move (strong evidence) is published
            self._publish(ps, t_us, "strong evidence", out, min_move=self.cfg.strong_move)

    # ------------------------------------------------------------------ inputs

    def _outcome(self, ps: ProgramState, now: int, route: str, e: Mapping[str, Any], out: list[dict]) -> None:
        """Record an outcome of ``route``; ``now`` is the program's clock (``_advance``)."""
        stats = ps.stats[route]
        stats.decay_to(now, self.cfg.half_life_s)
        ok = e.get("status") != "error"
        if stats.outcome(ok, _num(e.get("duration_ms")), _num(e.get("cost_usd")), _num(e.get("tokens_in")),
                         _num(e.get("tokens_out"))):
            # the route's latency changed (either way): re-judge now, citing the call that showed it
            self._cause(ps, str(e["id"]))
            ps.urgent = True
        ps.since_eval += 1
        b = ps.breakers[route]
        transitions = brk.record(b, self.cfg.breaker, now, ok)
        for tr in transitions:
            self._transition(ps, route, tr, out)
        if ok and not transitions and b.state == brk.HALF_OPEN:
            # a probe succeeded: a larger probe share at once (the rising return)
            self._publish(ps, now, f"probe of {route} succeeded ({b.probe_ok} of {self.cfg.breaker.probe_successes})",
                          out, force=True)

    def _admin(self, ps: ProgramState, now: int, e: Mapping[str, Any], out: list[dict]) -> None:
        """Apply an admin action.  Expected: ``program`` and (except ``unpin``) ``route``
        as top-level fields; ``canary`` takes ``details["share"]`` in (0, 0.5] (default
        0.05).  ``pin``: the route takes all traffic; ``unpin``: back to the policy;
        ``canary``: the route gets the fixed share (and is re-enabled); ``promote``: the
        canary competes normally; ``rollback``: the canary (or any route) gets no share
        until a later ``canary`` / ``promote``.  An action missing its route, or a bad
        share, is ignored (the admin API validates before appending).  ``now`` is the
        program's clock (``_advance``)."""
        action, route = e.get("action"), e.get("route")
        details = e.get("details") or {}
        if action == "unpin":
            ps.pinned = None
        elif route is None:
            return
        elif action == "pin":
            ps.pinned = route
        elif action == "canary":
            share = _num(details.get("share", 0.05))
            if share is None or not 0 < share <= 0.5:
                return
            ps.canaries[route] = share
            ps.canary_base[route] = ps.stats[route].total
            ps.disabled.pop(route, None)
        elif action == "promote":
            ps.canaries.pop(route, None)
            ps.canary_base.pop(route, None)
            ps.disabled.pop(route, None)
        elif action == "rollback":
            ps.canaries.pop(route, None)
            ps.canary_base.pop(route, None)
            ps.disabled[route] = None
        self._cause(ps, str(e["id"]))
        why = f"admin {action}" + (f" {route}" if route else "") + (f": {e['reason']}" if e.get("reason") else "")
        self._publish(ps, now, why, out, force=True)

    def _judge_canaries(self, ps: ProgramState, routing: ProgramRouting, t_us: int, out: list[dict]) -> None:
        """Roll back (by itself) each canary with ``min_samples`` outcomes of its own that
        is worse than the best closed incumbent with ``rollback_confidence``."""
        incumbents = [r for r in self.route_names[ps.program] if r not in ps.canaries and r not in ps.disabled
                      and ps.breakers[r].state == brk.CLOSED and r not in routing.reserve]
        for route in list(ps.canaries):
            if ps.stats[route].total - ps.canary_base.get(route, 0) < routing.min_samples:
                continue
            for r in (route, *incumbents):
                ps.stats[r].decay_to(t_us, self.cfg.half_life_s)
            rng = np.random.default_rng([self.cfg.seed, ps.rng_key, ps.evals])
            ps.evals += 1
            p, best = canary.prob_worse(ps.stats[route], [ps.stats[r] for r in incumbents], rng, self.cfg.samples,
                                        self.cfg.rollback_margin)
            if best < 0 or p < self.cfg.rollback_confidence:
                continue
            c, b = ps.stats[route], ps.stats[incumbents[best]]
            n = c.total - ps.canary_base.pop(route, 0)
            ps.canaries.pop(route)
            ps.disabled[route] = None
            why = (f"automatic rollback of canary {route}: worse than {incumbents[best]} with probability "
                   f"{p:.3f} (success {c.success_mean():.3f} vs {b.success_mean():.3f}, quality "
                   f"{_fmt(c.quality_mean())} vs {_fmt(b.quality_mean())}, {n} canary outcomes)")
            event = self._adaptation(ps, t_us, "rollback", why, list(ps.causes), {"probability_worse": round(p, 4),
                                     "incumbent": incumbents[best]}, route=route)
            out.append(event)
            self._cause(ps, event["id"])
            self._publish(ps, t_us, why, out, force=True)

    # ------------------------------------------------------------------ outputs

    def _transition(self, ps: ProgramState, route: str, tr: brk.Transition, out: list[dict]) -> None:
        b = ps.breakers[route]
        signal_state = {brk.OPEN: "open" if tr.frm == brk.CLOSED else "update", brk.CLOSED: "resolved"}.get(tr.to)
        caused: list[str] = []
        if signal_state is not None:
            if signal_state == "open":
                ps.breaker_incident[route] = str(derived_id(POLICY_NS, "breaker", ps.tenant, ps.program, route,
                                                            tr.t_us))
            sid = self._id(ps)
            model = next(r.model for r in self.programs[ps.program].routes if r.name == route)
            out.append({
                "id": sid, "ts": iso_us(tr.t_us), "v": SCHEMA_VERSION, "kind": "signal", "tenant": ps.tenant,
                "source": self.source, "attrs": {}, "signal_type": "breaker", "state": signal_state,
                "program": ps.program, "module": None, "route": route, "model": model, "metric": "error_rate",
                "score": None, "severity": "info" if signal_state == "resolved" else "critical",
                "window_start": None, "window_end": iso_us(tr.t_us),
                "incident_id": ps.breaker_incident.get(route),
                "explanation": {"reason": tr.reason, "from": tr.frm, "to": tr.to, **tr.numbers},
            })
            ps.breaker_signal[route] = sid
            caused = [sid]
            if tr.to == brk.CLOSED:
                ps.breaker_incident.pop(route, None)
                if not b.partial:
                    # the probes showed the outage is over: judge the route on them
                    ps.stats[route].forget_failures()
                else:
                    # after a brownout (it opened with successes in between) two good probes
                    # prove little: the success rate restarts from the window that opened
                    # the breaker plus the probes (a change point), not from the long
                    # history that hid the brownout
                    n, errors = b.at_open
                    ps.stats[route].restart_success(n - errors + b.probe_ok, n + b.probe_ok + b.probe_failed)
        elif route in ps.breaker_signal:
            caused = [ps.breaker_signal[route]]
        action = {brk.OPEN: "breaker_open", brk.HALF_OPEN: "breaker_half_open", brk.CLOSED: "breaker_close"}[tr.to]
        out.append(self._adaptation(ps, tr.t_us, action, f"{route}: {tr.reason}", caused, b.to_dict(), route=route))
        for c in caused:
            self._cause(ps, c)
        self._publish(ps, tr.t_us, f"breaker {route} {tr.frm} -> {tr.to} ({tr.reason})", out, force=True)

    def _publish(self, ps: ProgramState, t_us: int, why: str, out: list[dict], *, force: bool = False,
                 min_move: float = 0.0) -> None:
        """Compute the table at ``t_us``; emit it when forced or when a weight moved by
        the hysteresis and by ``min_move`` (otherwise only the evaluation counters move on)."""
        routing = self.programs[ps.program]
        names = self.route_names[ps.program]
        costs = {r.name: ps.stats[r.name].cost_per_call(r.cost_per_1k_in, r.cost_per_1k_out) for r in routing.routes}
        excluded = {r for r, c in costs.items() if routing.max_cost_per_call is not None and c is not None
                    and c > routing.max_cost_per_call}
        if excluded and len(excluded) == len(names):  # all too dear: keep the cheapest
            excluded.discard(min(names, key=lambda r: (costs[r], r)))
        states = {r: ps.breakers[r].state for r in names}
        cands = candidates(names, breakers=states, canaries=ps.canaries, disabled=set(ps.disabled),
                           excluded=excluded, reserve=routing.reserve)
        rng = np.random.default_rng([self.cfg.seed, ps.rng_key, ps.evals])
        ps.evals += 1
        for r in names:
            ps.stats[r].decay_to(t_us, self.cfg.half_life_s)
        evidence = prob_best(cands, [ps.stats[r] for r in cands], [costs[r] for r in cands],
                             routing, rng, self.cfg.samples)
        shares, note = weights(names, prob_best={r: ev.prob_best for r, ev in evidence.items()}, breakers=states,
                               pinned=ps.pinned, canaries=ps.canaries, disabled=set(ps.disabled), excluded=excluded,
                               floor=routing.exploration_floor, probe_share=self.cfg.probe_share,
                               reserve=routing.reserve, probe_ok={r: ps.breakers[r].probe_ok for r in names})
        ps.since_eval = 0
        moved = max((abs(shares[r] - ps.shares.get(r, 0.0)) for r in names), default=0.0)
        if not force and moved < max(routing.hysteresis, min_move):
            return
        ps.version += 1
        ps.shares = shares
        ps.last_change_us = t_us
        parts = [f"{r}={shares[r]:.3g}" + (f" (n={evidence[r].n:.0f}, ok={evidence[r].success:.3f}, "
                                           f"best={evidence[r].prob_best:.3f})" if r in evidence else "")
                 for r in names]
        over = [f"{r} cost {costs[r]:.4g} > {routing.max_cost_per_call:g}" for r in sorted(excluded)]
        reason = f"{why}; {note}; " + ", ".join(parts) + ("; excluded: " + ", ".join(over) if over else "")
        ps.table = table(program=ps.program, version=ps.version, routes=routing.routes, shares=shares,
                         breakers=states, pinned=ps.pinned, canaries=ps.canaries, fallbacks=routing.fallbacks,
                         reason=reason, caused_by=list(ps.causes), ts=iso_us(t_us))
        event = self._adaptation(ps, t_us, _TABLE, reason, list(ps.causes), ps.table, version=ps.version)
        event["attrs"] = {"evidence": {r: ev.to_dict() for r, ev in evidence.items()}, "moved": round(moved, 4)}
        out.append(event)
        ps.causes, ps.urgent = [], False

    def _id(self, ps: ProgramState) -> str:
        ps.seq += 1
        return str(derived_id(POLICY_NS, self.name, ps.tenant, ps.program, ps.seq))

    def _adaptation(self, ps: ProgramState, t_us: int, action: str, reason: str, caused_by: list[str],
                    details: dict[str, Any], *, route: str | None = None, version: int | None = None) -> dict:
        return {"id": self._id(ps), "ts": iso_us(t_us), "v": SCHEMA_VERSION, "kind": "adaptation",
                "tenant": ps.tenant, "source": self.source, "attrs": {}, "action": action, "program": ps.program,
                "route": route, "version": version, "reason": reason, "caused_by": caused_by, "details": details}


def current_tables(state: PolicyState) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest table per (tenant, program) (what ``GET /v1/routing/{program}`` serves)."""
    return {k: ps.table for k, ps in sorted(state.programs.items()) if ps.table is not None}


def breaker_states(state: PolicyState) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """Every breaker's state per (tenant, program) and route (JSON-ready)."""
    return {k: {r: b.to_dict() for r, b in ps.breakers.items()} for k, ps in sorted(state.programs.items())}
