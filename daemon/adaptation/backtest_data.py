"""The recorded traffic of a backtest: logged decisions, their outcomes, and the target
policy's probabilities, from the stream log (``adaptd.daemon.adaptation.backtest`` does
the estimation).

- ``read_log`` reads the event dicts a backtest needs from a data dir's file log (the
  only I/O here, with ``load_policy``, which reads the target's TOML file).
- ``build_units`` is pure: it joins each logged first-attempt ``route_decision`` of the
  program to its outcomes, and re-runs the *real* routing policy processor
  (``RoutingPolicy.fold``) with the target's config over the same events, in log order,
  with the watermark at the latest event time seen.  The target's probability of a
  decision is the weight of the logged route in the table that re-run had when the
  decision was logged (after every earlier event of the log), renormalised over the
  routes a client may pick (weight > 0, breaker not open), as ``adaptd.adapters``'
  weighted choice does.

Which decisions count (units): the program's ``route_decision`` events of the tenant in
``[since, until)`` whose ``attempt`` (kept in ``attrs``) is 0 or absent and whose
``reason`` is ``weighted`` or absent.  Retries and fallbacks are choices conditioned
on a failure, not draws from the table: they are counted and left out.

Outcomes of a decision: the ``lm_call`` of the same ``execution_id`` and route, matched
in log order (the k-th decision with that pair takes the k-th call); else the
``execution`` with that id and route; ``success`` also from the decision's own ``status``
(the SDK records it).  ``quality``: the mean ``feedback`` score on the execution id.
``cost_usd``: the call's cost, or its tokens at the target route's configured prices.
A metric missing on some decisions is estimated on those that have it: sound when it
is missing at random (sampled feedback), biased when whether it is observed depends on
the outcome or the route (say, feedback given only on successes).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from adaptd.daemon.adaptation.backtest import Unit
from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.policy import RoutingPolicy
from adaptd.daemon.adaptation.policy_state import PolicyConfig
from adaptd.daemon.adaptation.table import default_table
from adaptd.streams.processors.base import iso_us, to_us

#: The kinds the policy reads (``RoutingPolicy.kinds | raw_kinds``): the rest of the log is skipped.
KINDS = frozenset({"execution", "lm_call", "feedback", "route_decision", "signal", "adaptation"})
#: Fields ``read_log`` drops (text and payloads: memory, not evidence).
DROPPED = frozenset({"inputs", "outputs", "error_message", "comment", "explanation"})


@dataclass(slots=True)
class Traffic:
    """What ``build_units`` found, besides the units (counts, for the report)."""

    decisions: int = 0
    retries: int = 0
    outside_period: int = 0
    with_outcome: dict[str, int] = field(default_factory=dict)
    target_tables: int = 0
    first_ts: str | None = None
    last_ts: str | None = None


def load_policy(path: Path, program: str) -> tuple[ProgramRouting, PolicyConfig]:
    """The target policy in ``path``: the ``[[routing]]`` entry of ``program`` and the
    ``[routing_policy]`` table (defaults when absent), as in the daemon's config file
    (a whole daemon config is accepted; its other settings are ignored).

    Raises:
        ValueError: the file is missing or not TOML, has no ``[[routing]]`` entry for
            ``program``, or a setting is invalid (the message names it).
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the policy file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"policy file {path} is not valid TOML: {exc}") from None
    entries = [r for r in data.get("routing", []) if isinstance(r, dict) and r.get("program") == program]
    if len(entries) != 1:
        found = sorted(str(r.get("program")) for r in data.get("routing", []) if isinstance(r, dict))
        raise ValueError(f"policy file {path} needs exactly one [[routing]] entry with program = {program!r}"
                         f" (found: {found or 'none'})")
    try:
        routing = ProgramRouting.model_validate(entries[0])
        policy = TypeAdapter(PolicyConfig).validate_python(data.get("routing_policy", {}))
    except (ValidationError, ValueError, TypeError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
        raise ValueError(f"policy file {path}: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'setting'}: {e['msg']}" for e in errors)) from None
    return routing, policy


def read_log(log_dir: Path, *, program: str | None = None, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """The events of the kinds a backtest needs (``KINDS``), in log order, from the file
    log in ``log_dir`` opened read-only (a running daemon may keep appending).  With
    ``program``: only that program's events and every ``feedback`` (which may not name
    its program).  Bulky fields a backtest never reads (``DROPPED``) are left out.

    Raises:
        adaptd.streams.log.LogError: no log there, or a damaged record.
    """
    from adaptd.streams.log.file import FileLog

    skip = (b'"kind":"window"', b'"kind":"optimizer_run"', b'"kind":"dead_letter"')
    log = FileLog(log_dir, read_only=True)
    try:
        offset = log.start_offset()
        while records := log.read(offset, batch):
            offset = records[-1].offset + 1
            for record in records:
                if any(s in record.value for s in skip):  # cheap pre-filter; the kind check below decides
                    continue
                event = orjson.loads(record.value)
                if not isinstance(event, dict) or event.get("kind") not in KINDS:
                    continue
                if program is not None and event.get("program") != program and event["kind"] != "feedback":
                    continue
                for key in DROPPED.intersection(event):
                    del event[key]
                yield event
    finally:
        log.close()


def target_distribution(tbl: Mapping[str, Any]) -> dict[str, float]:
    """Route -> probability of a client's first pick from routing table ``tbl``: weights
    over the routes with weight > 0 and breaker not open, renormalised; when none, the
    positive weights; when none either, all routes equally."""
    routes = tbl.get("routes", [])
    for keep in (lambda r: r["weight"] > 0 and r.get("breaker") != "open", lambda r: r["weight"] > 0,
                 lambda r: True):
        chosen = {r["name"]: (float(r["weight"]) if r["weight"] > 0 else 1.0) for r in routes if keep(r)}
        total = sum(chosen.values())
        if total > 0:
            return {k: v / total for k, v in chosen.items()}
    return {}


def _first_attempt(e: Mapping[str, Any]) -> bool:
    attrs = e.get("attrs") or {}
    return attrs.get("attempt") in (None, 0) and e.get("reason") in (None, "weighted")


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _outcomes(call: Mapping[str, Any] | None, decision: Mapping[str, Any], scores: list[float] | None,
              routing: ProgramRouting) -> dict[str, float]:
    """A decision's observed metrics from its matched call (or execution), its own
    recorded status and its execution's feedback scores."""
    out: dict[str, float] = {}
    status = (decision.get("attrs") or {}).get("status") or (call or {}).get("status")
    if status in ("ok", "error"):
        out["success"] = 1.0 if status == "ok" else 0.0
    if call is not None:
        if (ms := _finite(call.get("duration_ms"))) is not None:
            out["latency_ms"] = ms
        cost = _finite(call.get("cost_usd"))
        route = routing.route(decision["route"])
        if cost is None and route is not None and (route.cost_per_1k_in is not None or route.cost_per_1k_out is not None):
            t_in, t_out = _finite(call.get("tokens_in")), _finite(call.get("tokens_out"))
            if t_in is not None or t_out is not None:
                cost = ((t_in or 0) * (route.cost_per_1k_in or 0) + (t_out or 0) * (route.cost_per_1k_out or 0)) / 1000
        if cost is not None:
            out["cost_usd"] = cost
    if scores:
        out["quality"] = sum(scores) / len(scores)
    return out


def build_units(events: Sequence[Mapping[str, Any]], *, program: str, tenant: str, routing: ProgramRouting,
                policy: PolicyConfig, since_us: int | None = None,
                until_us: int | None = None) -> tuple[list[Unit], Traffic]:
    """The units of ``program`` / ``tenant`` in ``[since_us, until_us)`` (µs; None: open)
    from ``events`` (event dicts in log order), with the target's probabilities from
    re-running ``RoutingPolicy([routing], policy)`` over the whole of ``events``.

    Returns:
        ``(units, traffic)``; no decisions: ``([], traffic)`` (the estimator refuses).

    Raises:
        ValueError: ``routing.program`` is not ``program``.
    """
    if routing.program != program:
        raise ValueError(f"the target routing is for {routing.program!r}, not {program!r}")
    mine = [e for e in events if (e.get("tenant") or "default") == tenant]
    # outcomes first (they may come after the decision in the log: feedback is late)
    calls: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    executions: dict[str, Mapping[str, Any]] = {}
    scores: dict[str, list[float]] = {}
    for e in mine:
        kind = e.get("kind")
        if kind == "lm_call" and e.get("execution_id") and e.get("route"):
            calls.setdefault((str(e["execution_id"]), e["route"]), []).append(e)
        elif kind == "execution" and e.get("route"):
            executions[str(e["id"])] = e
        elif kind == "feedback" and (s := _finite(e.get("score"))) is not None:
            scores.setdefault(str(e.get("execution_id")), []).append(s)
    proc = RoutingPolicy([routing], policy)
    state = proc.initial_state()
    traffic = Traffic()
    taken: dict[tuple[str, str], int] = {}
    units: list[Unit] = []
    wm: int | None = None
    pending: list[Mapping[str, Any]] = []  # folded in one call before the next decision: same result, faster
    marks: list[int | None] = []
    for e in mine:
        ts = e["ts"] if isinstance(e["ts"], int) else to_us(e["ts"])
        wm = ts if wm is None else max(wm, ts)
        pending.append(e)
        marks.append(wm)
        if e.get("kind") != "route_decision" or e.get("program") != program:
            continue
        state, _ = proc.fold(state, pending[:-1], marks[:-1])
        # the table as the decision was logged: after every earlier event, before this one
        ps = state.programs.get((tenant, program))
        tbl = ps.table if ps is not None and ps.table is not None else default_table(routing, iso_us(ts))
        state, _ = proc.fold(state, [e], [wm])
        pending, marks = [], []
        exec_id = str(e["execution_id"]) if e.get("execution_id") else None
        call = None
        if exec_id is not None:  # the k-th decision of (execution, route) takes its k-th call, retries included
            key = (exec_id, e["route"])
            k = taken.get(key, 0)
            taken[key] = k + 1
            matched = calls.get(key, [])
            call = matched[k] if k < len(matched) else None
            if call is None and (x := executions.get(exec_id)) is not None and x.get("route") == e["route"]:
                call = x
        traffic.decisions += 1
        if not _first_attempt(e):
            traffic.retries += 1
            continue
        if (since_us is not None and ts < since_us) or (until_us is not None and ts >= until_us):
            traffic.outside_period += 1
            continue
        outcomes = _outcomes(call, e, scores.get(exec_id) if exec_id else None, routing)
        for m in outcomes:
            traffic.with_outcome[m] = traffic.with_outcome.get(m, 0) + 1
        units.append(Unit(route=e["route"], propensity=_finite(e.get("probability")),
                          target=target_distribution(tbl), outcomes=outcomes))
        traffic.first_ts = traffic.first_ts or iso_us(ts)
        traffic.last_ts = iso_us(ts)
    state, _ = proc.fold(state, pending, marks)
    ps = state.programs.get((tenant, program))
    traffic.target_tables = ps.version if ps is not None else 0
    return units, traffic
