"""``adaptd executions``, ``adaptd trace ID``, ``adaptd signals`` and ``adaptd routing
PROGRAM``: the daemon's read API as tables (rich) or, with ``--json``, its raw answers.

Every command is a client of the HTTP API (``--url`` / ``--token``); a failure prints one
line and exits 2 for a bad flag or filter value, 1 when the daemon is down or refuses
(token, unknown program or id).  The renderers (``*_table``, ``trace_tree``) are pure:
rows in, rich renderable out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click

from adaptd.daemon.cli.common import request, token_option, url_option
from adaptd.daemon.cli.tables import rich_module as _rich
from adaptd.daemon.cli.tables import show as _print
from adaptd.daemon.cli.tables import table as _table

_json_option = click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
_limit_option = click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
                             help="Most rows.")


def _echo_json(answer: Any) -> None:
    click.echo(json.dumps(answer, indent=2))


def _show_list(answer: dict[str, Any], as_json: bool, render: Callable[[list[dict[str, Any]]], Any],
               what: str) -> None:
    """Print a listing answer: its JSON, or its items as ``render``'s table (a line on
    stderr when there are none) and, on stderr, the ``--cursor`` of the next page if any."""
    if as_json:
        _echo_json(answer)
        return
    if not answer["items"]:
        click.echo(f"no {what} match", err=True)
        return
    _print(render(answer["items"]))
    if answer.get("next_cursor"):
        click.echo(f"more: --cursor {answer['next_cursor']}", err=True)


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _ts(value: Any) -> str:
    return "-" if value is None else str(value).replace("+00:00", "Z")


def _tokens(row: dict[str, Any]) -> str:
    if row.get("tokens_in") is None and row.get("tokens_out") is None:
        return "-"
    return str((row.get("tokens_in") or 0) + (row.get("tokens_out") or 0))


# ---------------------------------------------------------------- renderers (pure)


def executions_table(rows: list[dict[str, Any]]) -> Any:
    """A table of execution rows: ts, id, program, module, status, duration, tokens, cost, root."""
    return _table(None, ["ts", "id", "program", "module", "status", "ms", "tokens", "cost_usd", "root_id"], [
        [_ts(r.get("ts")), str(r["id"]), str(r.get("program") or "-"), str(r.get("module") or "-"),
         str(r.get("status") or "-") + (f" ({r['error_type']})" if r.get("error_type") else ""),
         _num(r.get("duration_ms"), ".1f"), _tokens(r), _num(r.get("cost_usd"), ".6f"),
         "self" if r.get("root_id") == r["id"] else str(r.get("root_id") or "-")]
        for r in rows], right={"ms", "tokens", "cost_usd"})


def signals_table(rows: list[dict[str, Any]]) -> Any:
    """A table of signal rows: ts, type, state, severity, program, route/model, metric, score, id."""
    return _table(None, ["ts", "type", "state", "severity", "program", "route", "model", "metric", "score", "id"], [
        [_ts(r.get("ts")), str(r.get("signal_type")), str(r.get("state")), str(r.get("severity")),
         str(r.get("program") or "-"), str(r.get("route") or "-"), str(r.get("model") or "-"),
         str(r.get("metric") or "-"), _num(r.get("score"), ".3g"), str(r["id"])]
        for r in rows], right={"score"})


def routing_table(table: dict[str, Any], breakers: list[dict[str, Any]]) -> Any:
    """A table of a program's routes: weight, breaker (with since / reason), pinned, canary."""
    since = {b["route"]: b for b in breakers}
    rows = []
    for r in table.get("routes", []):
        flags = [f for f, on in (("pinned", r.get("pinned")), ("canary", r.get("canary")),
                                 ("fallback only", r.get("fallback_only"))) if on]
        b = since.get(r["name"], {})
        breaker = str(b.get("state") or r.get("breaker") or "closed")
        if b.get("since"):
            breaker += f" since {_ts(b['since'])}"
        rows.append([r["name"], str(r.get("model") or "-"), f"{100 * float(r.get('weight') or 0):.1f}%", breaker,
                     ", ".join(flags) or "-", str(b.get("reason") or "-")])
    title = (f"{table.get('program')} routing table v{table.get('version')} ({table.get('policy', '-')}):"
             f" {table.get('reason') or '-'}")
    return _table(title, ["route", "model", "share", "breaker", "flags", "breaker reason"], rows, right={"share"})


def _lm_label(call: dict[str, Any]) -> str:
    return (f"LM {call.get('model')} {call.get('status')} {_num(call.get('duration_ms'), '.1f')} ms"
            f" tokens {_tokens(call)} cost {_num(call.get('cost_usd'), '.6f')}")


def _execution_label(node: dict[str, Any]) -> str:
    name = node.get("module") or node.get("program")
    kind = f" ({node['module_type']})" if node.get("module_type") else ""
    error = f" {node['error_type']}: {node.get('error_message') or ''}".rstrip() if node.get("error_type") else ""
    return (f"{name}{kind} {node.get('status')}{error} {_num(node.get('duration_ms'), '.1f')} ms"
            f" tokens {_tokens(node)} cost {_num(node.get('cost_usd'), '.6f')}  {node['id']}")


def trace_tree(answer: dict[str, Any]) -> Any:
    """A rich tree of ``GET /v1/executions/{id}/tree``'s answer: executions with their LM
    calls, feedback and children, oldest first."""
    rich = _rich()
    top = answer["execution"]
    head = (f"{top.get('program')} {_ts(top.get('ts'))}: {answer['executions']} executions,"
            f" {answer['lm_calls']} LM calls, {answer['feedback']} feedback"
            + (" (truncated)" if answer.get("truncated") else ""))
    escape = rich.markup.escape  # labels are data ("KeyError: [x]"), not rich markup
    root = rich.tree.Tree(escape(head))
    pending = [(root, top)]
    while pending:  # bounded: the answer holds at most 5000 executions
        parent, node = pending.pop()
        branch = parent.add(escape(_execution_label(node)))
        for call in node.get("lm_calls", []):
            branch.add(escape(_lm_label(call)))
        for note in node.get("feedback", []):
            branch.add(escape(f"feedback {note.get('metric') or '-'} = {_num(note.get('score'), '.3g')}"
                              f" {note.get('label') or ''}".rstrip()))
        pending.extend((branch, child) for child in reversed(node.get("children", [])))
    return root


# ---------------------------------------------------------------- commands


@click.command()
@url_option
@token_option
@click.option("--program", help="Only this program.")
@click.option("--module", help="Only this module.")
@click.option("--route", help="Only this route.")
@click.option("--status", type=click.Choice(["ok", "error"]), help="Only this status.")
@click.option("--trace-id", help="Only the executions of this trace.")
@click.option("--root-id", help="Only the executions of this tree (one program run).")
@click.option("--session-id", help="Only this session (attrs.session_id).")
@click.option("--since", help="At or after this ISO time.")
@click.option("--until", help="Before this ISO time.")
@click.option("--cursor", help="The next page: the cursor the previous page printed.")
@_limit_option
@_json_option
def executions(url: str, token: str | None, program: str | None, module: str | None, route: str | None,
               status: str | None, trace_id: str | None, root_id: str | None, session_id: str | None,
               since: str | None, until: str | None, cursor: str | None, limit: int, as_json: bool) -> None:
    """List executions, newest first.

    `adaptd trace ID` shows one of them with everything below it.
    """
    answer = request(url, token, "GET", "/v1/executions", params=_params(
        program=program, module=module, route=route, status=status, trace_id=trace_id, root_id=root_id,
        session_id=session_id, since=since, until=until, cursor=cursor, limit=limit))
    _show_list(answer, as_json, executions_table, "executions")


@click.command()
@url_option
@token_option
@click.argument("execution_id")
@_json_option
def trace(url: str, token: str | None, execution_id: str, as_json: bool) -> None:
    """Show execution EXECUTION_ID with every execution below it, their LM calls and
    feedback."""
    answer = request(url, token, "GET", f"/v1/executions/{quote(execution_id, safe='')}/tree")
    if as_json:
        _echo_json(answer)
        return
    _print(trace_tree(answer))


@click.command()
@url_option
@token_option
@click.option("--program", help="Only this program.")
@click.option("--type", "signal_type", type=click.Choice(["anomaly", "drift", "breaker"]), help="Only this type.")
@click.option("--state", type=click.Choice(["open", "update", "resolved"]), help="Only this state.")
@click.option("--since", help="At or after this ISO time.")
@_limit_option
@_json_option
def signals(url: str, token: str | None, program: str | None, signal_type: str | None, state: str | None,
            since: str | None, limit: int, as_json: bool) -> None:
    """List anomaly, drift and breaker signals, newest first."""
    answer = request(url, token, "GET", "/v1/signals", params=_params(
        program=program, signal_type=signal_type, state=state, since=since, limit=limit))
    _show_list(answer, as_json, signals_table, "signals")


@click.command()
@url_option
@token_option
@click.argument("program")
@_json_option
def routing(url: str, token: str | None, program: str, as_json: bool) -> None:
    """Show PROGRAM's current routing table and each route's breaker."""
    path = f"/v1/routing/{quote(program, safe='')}"
    table = request(url, token, "GET", path)
    breakers = request(url, token, "GET", f"{path}/breakers")
    if as_json:
        _echo_json({"table": table, "breakers": breakers["items"]})
        return
    _print(routing_table(table, breakers["items"]))
