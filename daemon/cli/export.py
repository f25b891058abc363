"""``adaptd export`` (one read-model table to a Parquet or NDJSON file) and ``adaptd
retention`` (apply or show the read model's retention), both through the daemon's API.

A failure the user can fix prints one line and exits 2; the data goes to ``-o FILE`` (or
stdout for NDJSON), messages to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from adaptd.daemon.cli.common import client, detail, fail, request, token_option, url_option

TABLES = ("adaptations", "executions", "feedback", "lm_calls", "optimizer_runs", "perf_windows", "route_decisions",
          "signals")


@click.command()
@url_option
@token_option
@click.option("--table", type=click.Choice(TABLES), required=True, help="The read-model table.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ndjson"]), default="parquet", show_default=True)
@click.option("--since", help="Rows at or after this ISO time (event time).")
@click.option("--until", help="Rows before this ISO time.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (replaced once complete); default: stdout (NDJSON only).")
def export(url: str, token: str | None, table: str, fmt: str, since: str | None, until: str | None,
           out: Path | None) -> None:
    """Export the caller's tenant's rows of one table, in log order (environment:
    ADAPTD_URL, ADAPTD_TOKEN).

    Parquet is read by pandas, polars and DuckDB as is; NDJSON has one JSON object per line.
    """
    import httpx

    if out is None and fmt == "parquet":
        fail("parquet is binary: pass -o FILE (or --format ndjson to write to stdout)")
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
                fail(f"export answered {response.status_code}: {detail(response)}")
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
        fail(f"cannot reach the daemon at {url} ({exc.__class__.__name__}): start it with `adaptd up` or pass --url")
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
    max_rows (admin token; environment: ADAPTD_URL, ADAPTD_TOKEN)."""
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
    token; environment: ADAPTD_URL, ADAPTD_TOKEN)."""
    answer: dict[str, Any] = request(url, token, "GET", "/v1/retention")
    click.echo(json.dumps(answer, indent=2))
