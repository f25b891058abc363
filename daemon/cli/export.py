"""``adaptd export`` (one read-model table to a Parquet or NDJSON file) and ``adaptd
retention`` (apply or show the read model's retention), both through the daemon's API.

A failure prints one line and exits 2 (bad flag or value) or 1 (daemon down, request
refused; see ``adaptd.daemon.cli.common``); the data goes to ``-o FILE`` (or
stdout for NDJSON), messages to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from adaptd.daemon.cli.common import client, fail, refused, request, token_option, unreachable, url_option

TABLES = ("adaptations", "executions", "feedback", "lm_calls", "optimizer_runs", "perf_windows", "route_decisions",
          "signals")
#: The table that holds each event kind (``--kind execution`` is ``--table executions``).
TABLE_OF_KIND = {"adaptation": "adaptations", "execution": "executions", "feedback": "feedback", "lm_call": "lm_calls",
                 "optimizer_run": "optimizer_runs", "perf_window": "perf_windows", "route_decision": "route_decisions",
                 "signal": "signals"}


def output_file(out: str | None, table: str, fmt: str) -> Path | None:
    """Where ``-o/--out`` asks the export to go: None for stdout; ``DIR/<table>.<fmt>`` when
    ``out`` is an existing directory or ends with a slash; else the file ``out`` itself."""
    if out is None:
        return None
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        return Path(out) / f"{table}.{fmt}"
    return Path(out)


@click.command()
@url_option
@token_option
@click.option("--table", "--kind", "table", type=click.Choice(sorted({*TABLES, *TABLE_OF_KIND})), required=True,
              metavar="TABLE|KIND", help=f"The read-model table ({', '.join(TABLES)}), or the event kind it holds"
              " (execution, lm_call, ...).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ndjson"]), default="parquet", show_default=True)
@click.option("--since", help="Rows at or after this ISO time (event time).")
@click.option("--until", help="Rows before this ISO time.")
@click.option("-o", "--out", "out_arg", metavar="FILE|DIR/",
              help="File to write (replaced once complete), or a directory (existing, or ending with /: created)"
                   " to write DIR/<table>.<format> in; default: stdout (NDJSON only).")
def export(url: str, token: str | None, table: str, fmt: str, since: str | None, until: str | None,
           out_arg: str | None) -> None:
    """Export the caller's tenant's rows of one table, in log order.

    Parquet is read by pandas, polars and DuckDB as is; NDJSON has one JSON object per line.
    """
    import httpx

    table = TABLE_OF_KIND.get(table, table)
    out = output_file(out_arg, table, fmt)
    if out is None and fmt == "parquet":
        fail("parquet is binary: pass -o FILE or --out DIR/ (or --format ndjson to write to stdout)")
    if out is not None and out_arg is not None and out_arg.endswith(("/", os.sep)):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cannot create directory {out.parent}: {exc.strerror or exc}: choose another --out")
    if out is not None and not out.parent.is_dir():
        fail(f"directory {out.parent} does not exist: create it or choose another -o")
    params = {k: v for k, v in {"table": table, "format": fmt, "since": since, "until": until}.items()
              if v is not None}
    # written beside the file and renamed once complete: a failed export leaves no half file
    part = None if out is None else out.with_name(out.name + ".part")
    try:
        with client(url, token) as http, http.stream("GET", "/v1/export", params=params,
                                                     timeout=httpx.Timeout(10.0, read=600.0)) as response:
            if response.status_code >= 400:
                response.read()
                refused("export", response)
            rows = response.headers.get("x-adaptd-rows", "?")
            if out is None or part is None:
                for chunk in response.iter_bytes():
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            else:
                with open(part, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                os.replace(part, out)
    except httpx.TransportError as exc:
        unreachable(url, exc)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    finally:
        if part is not None and part.exists():
            part.unlink()
    click.echo(f"exported {rows} rows of {table} to {out or 'stdout'}", err=True)


@click.group()
def retention() -> None:
    """The read model's retention ([retention] days and max_rows per table in the config)."""


@retention.command("apply")
@url_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
def retention_apply(url: str, token: str | None, as_json: bool) -> None:
    """Delete now the rows older than each table's [retention] days and beyond its
    max_rows (admin token)."""
    answer = request(url, token, "POST", "/v1/retention/apply")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    if not answer["deleted"]:
        click.echo("no [retention] days or max_rows configured: every row is kept", err=True)
        return
    for table, n in sorted(answer["deleted"].items()):
        rules = ([f"older than {answer['cutoffs'][table]}"] if table in answer["cutoffs"] else []) + (
            [f"beyond {answer['max_rows'][table]} rows"] if table in answer["max_rows"] else [])
        click.echo(f"{table:16} {n:>10} rows deleted ({', '.join(rules)})")


@retention.command("show")
@url_option
@token_option
def retention_show(url: str, token: str | None) -> None:
    """Show the retention settings and what was deleted since the daemon started (admin
    token)."""
    answer: dict[str, Any] = request(url, token, "GET", "/v1/retention")
    click.echo(json.dumps(answer, indent=2))
