"""What the demo prints: the daemon's signals and adaptations as story lines, and a verdict
per episode (detected? adapted? when?).

``Observations`` accumulates what the daemon served (signals, routing tables, the
optimizer's timeline), de-duplicated by id / version; ``lines`` turns each new item into
one line; ``judge`` decides, per scripted episode, the first evidence that adaptd saw it
and the first that it acted on it. ``Poller`` is the only part that does I/O (HTTP).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from adaptd.daemon.demo.story import Episode

#: Drifted-feature name fragments that mean "the inputs changed" (not latency or quality).
INPUT_FEATURES = ("question", "input")


def _ts(value: Any) -> float:
    """An ISO timestamp (or datetime) as epoch seconds."""
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass
class Observations:
    """Everything seen so far, keyed for de-duplication; times are epoch seconds."""

    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    steps: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    def add_signals(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add signal rows; return the new ones (oldest first)."""
        new = [s for s in items if s.get("id") not in self.signals]
        for s in new:
            self.signals[s["id"]] = s
        return sorted(new, key=lambda s: _ts(s["ts"]))

    def add_table(self, table: dict[str, Any]) -> list[dict[str, Any]]:
        """Add a routing table; return it in a list if its version is new."""
        key = (table.get("program", ""), int(table.get("version", 0)))
        if key in self.tables or key[1] == 0:
            return []
        self.tables[key] = table
        return [table]

    def add_steps(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add optimizer timeline rows (adaptations and optimizer runs); return the new ones."""
        new = []
        for item in items:
            if item.get("kind") == "signal" or item.get("what") == "routing_table":
                continue  # signals and tables come through add_signals / add_table
            key = (item.get("log_offset"), item.get("kind"), item.get("what"))
            if key not in self.steps:
                self.steps[key] = item
                new.append(item)
        return new


def weight(table: dict[str, Any], route: str) -> float | None:
    """``route``'s weight in ``table``; None if the table has no such route."""
    return next((r["weight"] for r in table.get("routes", []) if r["name"] == route), None)


def drifted(signal: dict[str, Any]) -> list[str]:
    """The drifted feature names a drift signal reports (empty for other signals)."""
    details = signal.get("explanation") or signal.get("details") or {}
    names = details.get("drifted") or [f.get("feature") for f in details.get("findings", []) if isinstance(f, dict)]
    return [str(n) for n in names if n]


def signal_line(s: dict[str, Any]) -> str:
    """One line for a signal: type, state, where, metric and the gist of its explanation."""
    where = "/".join(x for x in (s.get("program"), s.get("route")) if x)
    exp = s.get("explanation") or {}
    gist = exp.get("reason") or exp.get("summary") or ""
    if s.get("signal_type") == "drift":
        gist = "drifted: " + ", ".join(drifted(s)[:4])
    return f"signal   {s.get('signal_type')} {s.get('state')} on {where} ({s.get('metric') or '-'}) {gist}".rstrip()


def table_line(t: dict[str, Any]) -> str:
    """One line for a routing table: its version, the weights and the start of its reason."""
    weights = ", ".join(f"{r['name']}={r['weight']:.2f}" for r in t.get("routes", []))
    reason = str(t.get("reason", "")).split(";")[0]
    return f"routing  {t.get('program')} v{t.get('version')}: {weights} ({reason})"


def step_line(item: dict[str, Any]) -> str:
    """One line for an optimizer timeline step."""
    if item.get("kind") == "optimizer_run":
        return f"optimize job {item.get('job_id')} {item.get('what')}: {item.get('status')}"
    route = f" {item['route']}" if item.get("route") else ""
    return f"optimize {item.get('what')}{route}: {str(item.get('reason') or '')[:90]}"


@dataclass(frozen=True)
class Verdict:
    """How adaptd handled one episode (seconds since the demo started; None: not seen)."""

    episode: Episode
    detected_s: float | None
    detected_by: str
    adapted_s: float | None
    adapted_by: str


def judge(episodes: list[Episode], obs: Observations, t0: float) -> list[Verdict]:
    """Per episode, the first evidence (at or after its start) that adaptd detected it and
    the first that it adapted to it. ``t0`` is the demo's start (epoch seconds).

    - outage: a breaker or anomaly signal on the route / a table giving it <= 10%;
    - slowdown: a table that moved the route to <= 10% (the policy's latency change
      test) or an anomaly signal on it / the same table;
    - drift: a drift signal on the program naming an input feature / none expected
      (drift is reported; adaptd acts when quality suffers);
    - quality regression: a drift signal on the program naming quality / the
      re-optimized version promoted.
    """
    signals = sorted(obs.signals.values(), key=lambda s: _ts(s["ts"]))
    tables = sorted(obs.tables.values(), key=lambda t: _ts(t["ts"]))
    steps = sorted(obs.steps.values(), key=lambda s: _ts(s["ts"]))
    out = []
    for ep in episodes:
        start = t0 + ep.start_s

        def first(items: list[dict], pred: Callable[[dict], bool]) -> dict | None:
            return next((i for i in items if _ts(i["ts"]) >= start and pred(i)), None)

        det = ada = None
        det_by = ada_by = ""
        if ep.name in ("outage", "slowdown"):
            left = first(tables, lambda t: t.get("program") == ep.program and (weight(t, ep.route or "") or 0) <= 0.1)
            sig = first(signals, lambda s: s.get("program") == ep.program and s.get("route") == ep.route
                        and s.get("state") == "open" and s.get("signal_type") in ("breaker", "anomaly"))
            if sig is not None:
                det, det_by = sig, f"{sig['signal_type']} signal"
            elif left is not None and ep.name == "slowdown":
                det, det_by = left, "the routing policy's latency change test"
            if left is not None:
                ada, ada_by = left, f"{ep.program} v{left['version']} gives {ep.route} {weight(left, ep.route or ''):.2f}"
        elif ep.name == "drift":
            sig = first(signals, lambda s: s.get("program") == ep.program and s.get("signal_type") == "drift"
                        and s.get("state") in ("open", "update")
                        and any(k in f for f in drifted(s) for k in INPUT_FEATURES))
            if sig is not None:
                det, det_by = sig, "drift signal on " + ", ".join(f for f in drifted(sig) if
                                                              any(k in f for k in INPUT_FEATURES))[:60]
            ada_by = "reported (the policy and the optimizer act when quality or health suffer)"
        else:
            sig = first(signals, lambda s: s.get("program") == ep.program and s.get("signal_type") == "drift"
                        and any("quality" in f for f in drifted(s)))
            if sig is not None:
                det, det_by = sig, "quality drift signal"
            promoted = first(steps, lambda i: i.get("what") == "rollout_promoted")
            if promoted is not None:
                ada, ada_by = promoted, f"re-optimized version promoted on {promoted.get('route')}"
        out.append(Verdict(ep, None if det is None else round(_ts(det["ts"]) - t0, 1), det_by,
                           None if ada is None else round(_ts(ada["ts"]) - t0, 1), ada_by))
    return out


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    """The closing summary: one line per episode."""
    lines = []
    for v in verdicts:
        ep = v.episode
        span = f"{ep.start_s:.0f}-{ep.end_s:.0f} s" if ep.end_s is not None else f"from {ep.start_s:.0f} s"
        det = f"detected at {v.detected_s:.1f} s by {v.detected_by}" if v.detected_s is not None else "NOT detected"
        if v.adapted_s is not None:
            ada = f"adapted at {v.adapted_s:.1f} s: {v.adapted_by}"
        else:
            ada = v.adapted_by or "NOT adapted"
        lines.append(f"{ep.name:<19} {ep.program}{'/' + ep.route if ep.route else ''} ({span}): {det}; {ada}")
    return lines


def complete(verdicts: list[Verdict]) -> bool:
    """Every episode detected, and every episode that expects an action acted on."""
    return all(v.detected_s is not None and (v.adapted_s is not None or v.episode.name == "drift") for v in verdicts)


class Poller:
    """Reads the daemon's signals, routing tables and the optimizer timeline over HTTP and
    prints each new item as a line stamped with seconds since ``t0`` (transport errors
    are skipped: the next poll tries again)."""

    def __init__(self, url: str, programs: list[str], t0: float, emit: Callable[[str], None] = print,
                 optimized: str | None = "triage") -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=5)
        self.programs, self.t0, self.emit, self.optimized = programs, t0, emit, optimized
        self.obs = Observations()

    def poll(self) -> None:
        """One round of reads; prints what is new."""
        import httpx

        new: list[tuple[float, str]] = []
        try:
            sig = self.client.get("/v1/signals", params={"limit": 500}).json().get("items", [])
            new += [(_ts(s["ts"]), signal_line(s)) for s in self.obs.add_signals(sig)]
            for p in self.programs:
                new += [(_ts(t["ts"]), table_line(t)) for t in self.obs.add_table(self.client.get(f"/v1/routing/{p}").json())]
            if self.optimized:
                r = self.client.get(f"/v1/optimization/programs/{self.optimized}/timeline")
                if r.status_code == 200:
                    new += [(_ts(i["ts"]), step_line(i)) for i in self.obs.add_steps(r.json().get("items", []))]
        except (httpx.HTTPError, ValueError, KeyError):
            return
        for ts, line in sorted(new):
            self.emit(f"[{ts - self.t0:6.1f}s] {line}")

    def close(self) -> None:
        self.client.close()
