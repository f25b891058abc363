"""``adaptd optimize`` and ``adaptd trainset export``: the optimization commands (over HTTP)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from adaptd.daemon.cli.common import client, fail, fail_runtime, refused, request, token_option, unreachable, url_option
from adaptd.daemon.optimize.ensemble import MAX_K

_FINAL = ("succeeded", "failed", "interrupted", "budget_exhausted")


def _print_recommendation(rec: dict[str, Any]) -> None:
    if rec.get("optimizer") is None:
        click.echo(f"no optimizer fits: {rec.get('error')}")
        return
    est = rec.get("cost_estimate") or {}
    click.echo(f"optimizer: {rec['optimizer']}{' (your choice)' if rec.get('overridden') else ''}"
               f"  params: {json.dumps(rec.get('params') or {})}")
    click.echo(f"estimate:  ~{est.get('lm_calls')} LM calls, ~${est.get('usd', 0):.4f}")
    for line in rec.get("reasoning") or []:
        click.echo(f"  - {line}")
    alts = [a for a in rec.get("alternatives") or []][:5]
    if alts:
        click.echo("alternatives:")
        for a in alts:
            state = "eligible" if a["eligible"] else "not eligible: " + "; ".join(a["why_not"])
            click.echo(f"  {a['optimizer']:<34} utility {a['utility']:+.4f}  gain {a['expected_gain']:.3f}"
                       f"  ~{a['est_lm_calls']} calls  {state}")


@click.command()
@url_option
@token_option
@click.argument("program")
@click.option("--auto-select", is_flag=True, help="Let adaptd pick the optimizer (the default when no --optimizer).")
@click.option("--optimizer", help="Use this optimizer (overrides the recommendation), e.g. MIPROv2-light.")
@click.option("--budget-usd", type=click.FloatRange(min=0), help="Cost ceiling of this run (default: config).")
@click.option("--budget-lm-calls", type=click.IntRange(min=1), help="LM-call ceiling of this run (default: config).")
@click.option("--ensemble", type=click.IntRange(1, MAX_K), default=None, metavar="K",
              help="Run the top-K recommended optimizers that fit the one budget (split in proportion to their"
                   " estimates) and keep the best on the devset; prints the cost estimate first.")
@click.option("--recommend-only", is_flag=True, help="Print the recommendation (or the ensemble plan); queue nothing.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=None,
              help="Wait up to this many seconds for the job to finish.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def optimize(url: str, token: str | None, program: str, auto_select: bool, optimizer: str | None,
             ensemble: int | None, budget_usd: float | None, budget_lm_calls: int | None, recommend_only: bool,
             wait_s: float | None, as_json: bool) -> None:
    """Recommend an optimizer for PROGRAM and queue an optimization job (or, with
    --ensemble K, one job per member of an ensemble)."""
    if auto_select and optimizer:
        fail("--auto-select and --optimizer exclude each other: pick one")
    if ensemble is not None and optimizer:
        fail("--ensemble and --optimizer exclude each other: an ensemble picks its optimizers")
    body: dict[str, Any] = {"program": program}
    if optimizer:
        body["optimizer"] = optimizer
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    if budget_lm_calls is not None:
        body["budget_lm_calls"] = budget_lm_calls
    if ensemble is not None:
        _run_ensemble(url, token, body, ensemble, recommend_only, wait_s, as_json)
        return
    rec = request(url, token, "POST", "/v1/optimization/recommend", json=body)
    if recommend_only:
        click.echo(json.dumps(rec, indent=2) if as_json else "", nl=as_json)
        if not as_json:
            _print_recommendation(rec)
        return
    if rec.get("optimizer") is None:
        fail_runtime(f"no optimizer fits {program!r}: {rec.get('error')}")
    job_body = {k: v for k, v in body.items() if k != "optimizer"}
    job_body["optimizer"] = rec["optimizer"]
    job = request(url, token, "POST", "/v1/optimization/jobs", json=job_body)
    if not as_json:
        _print_recommendation(rec)
        click.echo(f"job {job['job_id']} queued")
    final = _wait(url, token, job["job_id"], wait_s) if wait_s is not None else None
    if as_json:
        click.echo(json.dumps({"recommendation": rec, "job": job, "final": final}, indent=2))
    elif final is not None:
        click.echo(f"job {job['job_id']}: {final['status']}  score {final.get('score_before')} -> "
                   f"{final.get('score_after')}  {final.get('lm_calls')} LM calls  ${final.get('cost_usd')}")
    if final is not None and wait_s is not None:
        _exit_unless_succeeded([final], wait_s)


def _exit_unless_succeeded(finals: list[dict[str, Any]], wait_s: float) -> None:
    """Return when every job of ``finals`` (their latest rows after ``--wait``) succeeded;
    else one line naming the others and exit 1, so ``adaptd optimize --wait`` can gate a
    script (a job still running when the wait ended counts as not succeeded)."""
    others = [f for f in finals if f["status"] != "succeeded"]
    if others:
        fail_runtime("; ".join(_not_succeeded(f, wait_s) for f in others))


def _not_succeeded(final: dict[str, Any], wait_s: float) -> str:
    """``job ID STATUS: error`` for a final job row, or that the wait ended first."""
    if final["status"] not in _FINAL:
        return f"job {final['job_id']} did not finish within --wait {wait_s:g} s (still {final['status']})"
    details = final.get("details")
    error = details.get("error") if isinstance(details, dict) else None
    return f"job {final['job_id']} {final['status']}" + (f": {error}" if error else "")


def _wait(url: str, token: str | None, job_id: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        latest = request(url, token, "GET", f"/v1/optimization/jobs/{job_id}")["latest"]
        if latest["status"] in _FINAL or time.monotonic() >= deadline:
            return latest
        time.sleep(0.5)


def _print_plan(plan: dict[str, Any]) -> None:
    est = plan["cost_estimate"]
    budget = " / ".join([f"{plan['budget_lm_calls']} LM calls"] * (plan["budget_lm_calls"] is not None)
                        + [f"${plan['budget_usd']:g}"] * (plan["budget_usd"] is not None)) or "no budget"
    click.echo(f"estimate:  ~{est['lm_calls']} LM calls, ~${est['usd']:.4f} for {len(plan['members'])} optimizer(s)"
               f" (asked {plan['asked']}) within {budget}")
    for m in plan["members"]:
        click.echo(f"  {m['optimizer']:<34} ~{m['est_lm_calls']} calls ~${m['est_cost_usd']:.4f}  ceiling"
                   f" {m['budget_lm_calls']} calls / ${m['budget_usd']}  expected gain {m['expected_gain']:.3f}")
    for line in plan["reasoning"]:
        click.echo(f"  - {line}")
    for left in plan["left_out"]:
        click.echo(f"  left out {left['optimizer']}: {left['why']}")


def _run_ensemble(url: str, token: str | None, body: dict[str, Any], k: int, recommend_only: bool,
                  wait_s: float | None, as_json: bool) -> None:
    """``--ensemble K``: print the plan's cost estimate, then queue it (unless
    ``recommend_only``), and with ``wait_s`` wait for every member and the choice."""
    plan = request(url, token, "POST", "/v1/optimization/recommend", json={**body, "ensemble": k})["ensemble"]
    if not as_json:
        _print_plan(plan)
    if recommend_only:
        if as_json:
            click.echo(json.dumps(plan, indent=2))
        return
    if not plan["members"]:
        fail_runtime(f"no optimizer fits {body['program']!r}: {plan['reasoning'][-1]}")
    made = request(url, token, "POST", "/v1/optimization/jobs", json={**body, "ensemble": k})
    ids = [j["job_id"] for j in made["jobs"]]
    if not as_json:
        click.echo(f"ensemble {made['ensemble_id']} queued: " + ", ".join(
            f"{j['job_id']} ({j['optimizer']})" for j in made["jobs"]))
    finals, choice = [], None
    if wait_s is not None:
        deadline = time.monotonic() + wait_s
        finals = [_wait(url, token, job_id, max(0.0, deadline - time.monotonic())) for job_id in ids]
        choice = _wait_choice(url, token, body["program"], made["ensemble_id"], deadline)
    if as_json:
        click.echo(json.dumps({"plan": plan, "ensemble": made, "final": finals, "choice": choice}, indent=2))
    else:
        for f in finals:
            click.echo(f"job {f['job_id']} ({f['optimizer']}): {f['status']}  score {f.get('score_before')} -> "
                       f"{f.get('score_after')}  {f.get('lm_calls')} LM calls  ${f.get('cost_usd')}")
        if choice is not None:
            click.echo(f"kept: {choice['details'].get('version') or 'nothing'} ({choice['reason']})")
    if wait_s is not None and not any(f["status"] == "succeeded" for f in finals):
        _exit_unless_succeeded(finals, wait_s)  # the ensemble failed only when no member succeeded


def _wait_choice(url: str, token: str | None, program: str, ensemble_id: str, deadline: float
                 ) -> dict[str, Any] | None:
    """The ensemble's ``ensemble_choice`` timeline row, or None if it is not there by ``deadline``."""
    while True:
        items = request(url, token, "GET", f"/v1/optimization/programs/{program}/timeline")["items"]
        row = next((i for i in items if i["what"] == "ensemble_choice"
                    and (i["details"] or {}).get("ensemble_id") == ensemble_id), None)
        if row is not None or time.monotonic() >= deadline:
            return row
        time.sleep(0.5)


@click.group()
def trainset() -> None:
    """Training examples harvested from production."""


@trainset.command("export")
@url_option
@token_option
@click.argument("program")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="File to write; without it (or with -) the JSONL goes to standard output.")
@click.option("--threshold", type=float, help="Feedback score an execution needs (default: config).")
@click.option("-n", "--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def export(url: str, token: str | None, program: str, output: Path | None, threshold: float | None,
           limit: int) -> None:
    """Write PROGRAM's harvested examples (feedback above the threshold, deduplicated) as JSONL,
    to standard output unless ``-o FILE`` is given.

    The summary line goes to standard error, so ``> file`` holds only the examples.
    """
    import httpx

    params: dict[str, Any] = {"limit": limit}
    if threshold is not None:
        params["threshold"] = threshold
    try:
        with client(url, token) as http:
            response = http.get(f"/v1/optimization/programs/{program}/trainset", params=params)
    except httpx.TransportError as exc:
        unreachable(url, exc)
    if response.status_code >= 400:
        refused("trainset export", response)
    path = output or Path("-")
    if str(path) == "-":
        click.get_binary_stream("stdout").write(response.content)
        where = "standard output"
    else:
        try:
            path.write_bytes(response.content)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror}")
        where = str(path)
    h = response.headers
    click.echo(f"wrote {h.get('x-harvested', '?')} examples to {where} ({h.get('x-duplicates', '?')} duplicates,"
               f" {h.get('x-not-captured', '?')} without captured content left out)", err=True)
