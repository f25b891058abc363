"""``adaptd backtest``: what a different routing policy config would have done on the
recorded traffic (off-policy estimates from the stream log; no daemon needed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from adaptd.daemon.cli.common import fail, fail_runtime

_LABELS = {"success": "success rate", "quality": "quality", "latency_ms": "latency ms", "cost_usd": "cost USD"}


def _time(value: str | None, flag: str) -> int | None:
    """µs since the epoch of an ISO 8601 time (naive = UTC); None stays None."""
    if value is None:
        return None
    from adaptd.streams.processors.base import to_us

    try:
        return to_us(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        fail(f"{flag} {value!r} is not an ISO 8601 time (e.g. 2026-12-06T10:00:00Z)")


@click.command()
@click.option("--program", required=True, help="The program whose routing to backtest.")
@click.option("--policy", "policy_file", required=True, type=click.Path(path_type=Path),
              help="TOML file with the target's [[routing]] entry for --program and optional [routing_policy].")
@click.option("--since", help="Only decisions at or after this ISO time (the policy still reads the log before it).")
@click.option("--until", help="Only decisions before this ISO time.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=".adaptd", envvar="ADAPTD_DATA_DIR", show_default=True,
              show_envvar=True, help="The daemon's data directory (its log is read).")
@click.option("--tenant", default="default", show_default=True, help="Whose traffic.")
@click.option("--min-propensity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Refuse when a logged propensity is below this (default 0.01).")
@click.option("--min-ess", type=click.FloatRange(1), default=None, help="Refuse below this effective sample size (default 30).")
@click.option("--bootstrap", type=click.IntRange(0, 100_000), default=0, show_default=True,
              help="Percentile-bootstrap intervals with this many resamples (0: normal approximation).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def backtest(program: str, policy_file: Path, since: str | None, until: str | None, data_dir: Path, tenant: str,
             min_propensity: float | None, min_ess: float | None, bootstrap: int, seed: int, as_json: bool) -> None:
    """Estimate the success, quality, latency and cost a routing policy config would have
    had on PROGRAM's recorded traffic (IPS, self-normalised IPS and doubly robust, with
    95% intervals and the effective sample size).

    The target's probability of each logged choice comes from re-running the routing
    policy with the --policy config over the same log.  Exit 1 with the reason when the
    data cannot support an estimate (propensities missing or near zero, too small an
    effective sample size, traffic the log never tried).
    """
    import numpy as np

    from adaptd.daemon.adaptation import backtest as bt
    from adaptd.daemon.adaptation.backtest_data import build_units, load_policy, read_log
    from adaptd.streams.log.base import LogError

    since_us, until_us = _time(since, "--since"), _time(until, "--until")
    if since_us is not None and until_us is not None and since_us >= until_us:
        fail("--since must be before --until")
    log_dir = data_dir / "log"
    if not log_dir.is_dir():
        fail(f"no log at {log_dir}: pass the --data-dir the daemon ran with")
    try:
        routing, policy = load_policy(policy_file, program)
    except ValueError as exc:
        fail(str(exc))
    try:
        units, traffic = build_units(list(read_log(log_dir, program=program)), program=program, tenant=tenant, routing=routing,
                                     policy=policy, since_us=since_us, until_us=until_us)
    except LogError as exc:
        fail(f"cannot read the log {log_dir}: {exc}")
    limits: dict[str, Any] = {k: v for k, v in (("min_propensity", min_propensity), ("min_ess", min_ess))
                              if v is not None}
    try:
        result = bt.estimate(units, rng=np.random.default_rng(seed) if bootstrap else None, bootstrap=bootstrap,
                             **limits)
    except bt.Refusal as exc:
        fail_runtime(f"cannot backtest {program!r} (tenant {tenant!r}, {traffic.decisions} route decisions in the log,"
                     f" {len(units)} first choices in the period): {exc}")
    out = {"program": program, "tenant": tenant, "policy": str(policy_file), "since": since, "until": until,
           "traffic": {"decisions": traffic.decisions, "units": len(units), "retries_and_fallbacks": traffic.retries,
                       "outside_period": traffic.outside_period, "with_outcome": traffic.with_outcome,
                       "target_tables": traffic.target_tables, "first": traffic.first_ts, "last": traffic.last_ts},
           **result.to_dict()}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(_text(out))


def _text(out: dict[str, Any]) -> str:
    """The report as a few lines and a table (``-`` where a metric was not estimated)."""
    t = out["traffic"]
    lines = [f"backtest of {out['policy']} on {out['program']} (tenant {out['tenant']}): {t['units']} decisions "
             f"from {t['first']} to {t['last']}",
             f"effective sample size {out['ess']:.1f} ({out['ess'] / max(out['n'], 1):.0%}), mean weight "
             f"{out['mean_weight']:.3f}, max weight {out['max_weight']:.2f}; intervals: 95% {out['interval']}",
             ""]

    def cell(e: dict[str, float] | None) -> str:
        return "-" if e is None else f"{e['value']:.4g} [{e['low']:.4g}, {e['high']:.4g}]"

    rows = [("metric", "n", "ess", "logged", "IPS", "SNIPS", "DR")]
    for m in out["metrics"].values():
        rows.append((_LABELS.get(m["metric"], m["metric"]), str(m["n"]), f"{m['ess']:.0f}",
                     "-" if m["logged_mean"] is None else f"{m['logged_mean']:.4g}",
                     cell(m["ips"]), cell(m["snips"]), cell(m["dr"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += [f"  {_LABELS.get(m['metric'], m['metric'])}: {m['note']}" for m in out["metrics"].values() if m["note"]]
    return "\n".join(lines)
