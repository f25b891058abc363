"""The ``adaptd`` command line.

Every failure prints one line saying what to fix and exits 2 for a usage error (a bad flag,
a bad config, a busy port, an unusable data dir) or 1 for a runtime failure (the daemon
down or refusing, a rejected event); see ``adaptd.daemon.cli.common``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from adaptd.daemon.cli.common import (
    SETTINGS_ENV,
    client,
    config_option,
    fail,
    fail_runtime,
    refused,
    request,
    token_option,
    unreachable,
    url_option,
)
from adaptd.streams.log.base import LogError


class LazyGroup(click.Group):
    """A click group whose listed commands are imported only when they run (or --help
    lists them), so ``adaptd up`` never loads Textual, Faust or the optimizer's client."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=LazyGroup, lazy={
    "backtest": "adaptd.daemon.cli.backtest:backtest",
    "dash": "adaptd.tui.cli:dash",
    "executions": "adaptd.daemon.cli.reads:executions",
    "export": "adaptd.daemon.cli.export:export",
    "log": "adaptd.daemon.cli.log:log",
    "optimize": "adaptd.daemon.cli.optimize:optimize",
    "retention": "adaptd.daemon.cli.export:retention",
    "routing": "adaptd.daemon.cli.reads:routing",
    "signals": "adaptd.daemon.cli.reads:signals",
    "trace": "adaptd.daemon.cli.reads:trace",
    "trainset": "adaptd.daemon.cli.optimize:trainset",
    "worker": "adaptd.daemon.cli.worker:worker",
}, context_settings={"help_option_names": ["-h", "--help"]}, epilog=(
    "Environment: the commands that call the daemon read ADAPTD_URL and ADAPTD_TOKEN; up, replay and worker read"
    " ADAPTD_CONFIG and every setting as ADAPTD_<NAME>; backtest, log and replay read ADAPTD_DATA_DIR. Each"
    " command's --help names its own. Exit codes: 0 success; 1 runtime failure (the daemon down or refusing the"
    " request, a rejected event, a failed job); 2 usage error (a bad flag or value, a bad config, a busy port,"
    " an unusable data dir)."))
@click.version_option(package_name="adaptd", message="adaptd %(version)s")
def main() -> None:
    """adaptd: telemetry and adaptation daemon for DSPy and other LLM programs."""


@main.command(epilog=SETTINGS_ENV)
@config_option
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="ADAPTD_DATA_DIR", show_envvar=True,
              help="Where the log and DuckDB live (default .adaptd).")
@click.option("--host", envvar="ADAPTD_HOST", show_envvar=True, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, envvar="ADAPTD_PORT", show_envvar=True, help="Port to bind (default 7710).")
@click.option("--log", "log_url", envvar="ADAPTD_LOG__URL", show_envvar=True,
              help="Stream log: 'file' (embedded) or kafka://HOST:PORT.")
def up(config: Path | None, data_dir: Path | None, host: str | None, port: int | None, log_url: str | None) -> None:
    """Start the daemon in the foreground (Ctrl+C / SIGTERM stops it gracefully).

    Exit 2 when the config, the port, the data dir or the stream log cannot be used (one
    line saying what to fix), 1 when the server fails after that.
    """
    from adaptd.daemon.config import ConfigError, load_settings
    from adaptd.daemon.http.server import serve

    try:
        settings = load_settings(config, data_dir=data_dir, host=host, port=port)
        if log_url is not None:
            settings.log.url = log_url
        if not settings.log.url.startswith(("file", "kafka://")):
            raise ConfigError(f"log url {settings.log.url!r} is not supported: use 'file' or kafka://HOST:PORT")
        check_data_dir(Path(settings.data_dir))
        code = serve(settings)
    except ConfigError as exc:
        fail(str(exc))
    except LogError as exc:  # a file log in use or damaged, Kafka unreachable: the setup to fix, as a busy port
        fail(f"cannot open the stream log {settings.log.url!r}: {exc}")
    except OSError as exc:  # a file of the data dir the runtime could not open
        fail(f"cannot use {exc.filename or settings.data_dir}: {exc.strerror or exc}: fix it or pass another --data-dir")
    sys.exit(code)


def check_data_dir(path: Path) -> None:
    """Check, without creating anything, that ``path`` is a directory this process can
    read and write, or that it can be created (its nearest existing parent is writable).

    Raises:
        ConfigError: it is a file, lies under a file, or is not readable and writable (the
            message says which and what to change).
    """
    from adaptd.daemon.config import ConfigError

    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"data dir {path} is a file, not a directory: pass another --data-dir")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"data dir {path} is not readable and writable by this user: fix its permissions"
                              " or pass another --data-dir")
        return
    parent = path.absolute().parent
    while not parent.exists():  # bounded: the root exists
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create data dir {path}: {parent} is not a writable directory:"
                          " pass another --data-dir")


@main.command()
@url_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def status(url: str, token: str | None, as_json: bool) -> None:
    """Show the daemon's health and counters as tables (--json: the raw answers)."""
    health = request(url, token, "GET", "/v1/health")
    stats = request(url, token, "GET", "/v1/stats")
    if as_json:
        click.echo(json.dumps({"health": health, "stats": stats}, indent=2))
        return
    from adaptd.daemon.cli.status_view import status_view
    from adaptd.daemon.cli.tables import show

    show(*status_view(url, health, stats))


@main.command(epilog=SETTINGS_ENV)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, envvar="ADAPTD_DATA_DIR", show_envvar=True,
              help="Data dir whose log to replay.")
@click.option("--into", type=click.Path(path_type=Path), required=True, help="DuckDB file to build.")
@click.option("--overwrite", is_flag=True, help="Replace --into if it exists.")
@click.option("--config", "config", type=click.Path(path_type=Path), envvar="ADAPTD_CONFIG", show_envvar=True,
              help="The daemon's TOML config (its [processors] settings are re-run).")
@click.option("--no-derived", is_flag=True, help="Skip re-running the processors.")
def replay(data_dir: Path, into: Path, overwrite: bool, config: Path | None, no_derived: bool) -> None:
    """Rebuild a DuckDB database from the stream log alone.

    Then re-run the processors over the log's source events and compare what they produce
    with the derived events (ids and values) the live daemon appended; exits 1 when the
    log holds a derived event the re-run does not reproduce.  Events only the re-run
    produces ("missing") are reported, not an error: the log may predate the processors.
    """
    from adaptd.daemon.config import ConfigError, load_settings
    from adaptd.daemon.readmodel.replay import check_derived
    from adaptd.daemon.readmodel.replay import replay as run_replay
    from adaptd.daemon.runtime import build_processors, runtime_options
    from adaptd.streams.log.file import FileLog

    log_dir = data_dir / "log"
    if not log_dir.is_dir():
        fail(f"no log at {log_dir}: pass the --data-dir the daemon ran with")
    if into.exists() and not overwrite:
        fail(f"{into} exists: pass --overwrite or choose another --into")
    try:
        loaded = load_settings(config)
    except ConfigError as exc:
        fail(str(exc))
    processors = loaded.processors
    try:  # a damaged segment refuses the open (CorruptLog), naming it and what to run
        log = FileLog(log_dir, read_only=True)
    except LogError as exc:
        fail(f"cannot replay {log_dir}: {exc}")
    derived = None
    try:
        result = run_replay(log, into, overwrite=overwrite, dead_letter_max_age_days=loaded.dead_letter_max_age_days)
        if processors.enabled and not no_derived:
            derived = check_derived(log, build_processors(processors, loaded.routing, loaded.routing_policy), **runtime_options(processors))
    except LogError as exc:  # damage found while reading
        fail(f"cannot replay {log_dir}: {exc}")
    except (OSError, ValueError) as exc:
        fail(str(exc))
    finally:
        log.close()
    out = _plain(result)
    if derived is not None:
        out["derived"] = {**_plain(derived), "equal": derived.equal}
    click.echo(json.dumps(out, default=str))
    if derived is not None and not derived.consistent:
        click.echo("adaptd: error: the log holds derived events a re-run does not reproduce"
                   f" ({'; '.join(derived.examples)}): pass the daemon's --config if it set [processors]",
                   err=True)
        sys.exit(1)


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    return obj


@main.command()
@url_option
@token_option
@click.option("--json", "payload", help="The whole event as JSON ('-' reads stdin).")
@click.option("--kind", default="execution", show_default=True, help="Event kind (with field flags).")
@click.option("--program", help="Program name.")
@click.option("-f", "--field", "fields", multiple=True, metavar="KEY=VALUE", help="Extra field (VALUE parsed as JSON if it can be).")
def emit(url: str, token: str | None, payload: str | None, kind: str, program: str | None, fields: tuple[str, ...]) -> None:
    """Send one event from the shell; id and ts are filled in when missing."""
    from adaptd.streams.events import new_id, utcnow

    if payload is not None:
        text = sys.stdin.read() if payload == "-" else payload
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            fail(f"--json is not valid JSON: {exc}")
        if not isinstance(event, dict):
            fail("--json must be one JSON object")
    else:
        event = {"kind": kind}
        if program is not None:
            event["program"] = program
        for item in fields:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                fail(f"--field {item!r} must look like KEY=VALUE")
            try:
                event[key] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                event[key] = raw
    event.setdefault("id", str(new_id()))
    event.setdefault("ts", utcnow().isoformat())
    event.setdefault("source", "adaptd-cli")
    answer = request(url, token, "POST", "/v1/events", content=orjson.dumps([event]),
                      headers={"Content-Type": "application/json"})
    if answer.get("rejected"):
        fail_runtime(f"event rejected: {answer['rejected'][0]['reason']}")
    click.echo(event["id"])


@main.command()
@url_option
@token_option
@click.option("--kind", help="Only this kind.")
@click.option("--program", help="Only this program.")
@click.option("--from-offset", type=int, help="Start at this log offset (default: now).")
@click.option("-n", "--max-events", type=int, help="Stop after this many events.")
def tail(url: str, token: str | None, kind: str | None, program: str | None, from_offset: int | None, max_events: int | None) -> None:
    """Follow events as they arrive (one JSON object per line)."""
    import httpx

    params = {k: v for k, v in {"kind": kind, "program": program, "from_offset": from_offset,
                                "max_events": max_events}.items() if v is not None}
    try:
        with client(url, token) as http, http.stream(
            "GET", "/v1/stream", params=params, timeout=httpx.Timeout(10.0, read=None)
        ) as response:
            if response.status_code >= 400:
                response.read()
                refused("tail", response)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    click.echo(line[6:])
    except httpx.TransportError as exc:
        unreachable(url, exc)
    except KeyboardInterrupt:
        pass


@main.command()
@url_option
@token_option
@click.argument("program")
@click.option("--window", default="1m", show_default=True, help="Window size (10s, 1m, 1h by default).")
@click.option("--module", help="Only this module.")
@click.option("--route", help="Only this route.")
@click.option("--model", help="Only this model.")
@click.option("--since", help="Windows starting at or after this ISO time.")
@click.option("--until", help="Windows starting before this ISO time.")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Most windows.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def history(url: str, token: str | None, program: str, window: str, module: str | None, route: str | None,
            model: str | None, since: str | None, until: str | None, limit: int, as_json: bool) -> None:
    """Show PROGRAM's closed performance windows, newest first."""
    params = {k: v for k, v in {"program": program, "window": window, "module": module, "route": route,
                                "model": model, "since": since, "until": until, "limit": limit}.items()
              if v is not None}
    answer = request(url, token, "GET", "/v1/history", params=params)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = answer.get("items", [])
    if not rows:
        click.echo(f"no closed {window} windows for {program} yet (windows close once event time passes their end"
                   " plus the allowed lateness)")
        return
    click.echo(_history_table(rows))


def _history_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of window rows (``-`` for no value)."""

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = ("window_start", "module", "route", "model", "count", "err%", "p50_ms", "p95_ms", "p99_ms",
              "tokens", "cost_usd", "cache%", "quality")
    lines = [header]
    for r in rows:
        lines.append((
            str(r["window_start"]).replace("+00:00", "Z"), r.get("module") or "-", r.get("route") or "-",
            r.get("model") or "-", str(r["count"]),
            num(None if r.get("error_rate") is None else 100 * r["error_rate"], ".1f"),
            num(r.get("p50_ms"), ".1f"), num(r.get("p95_ms"), ".1f"), num(r.get("p99_ms"), ".1f"),
            str(r["tokens_in"] + r["tokens_out"]), num(r.get("cost_usd"), ".4f"),
            num(None if r.get("cache_hit_rate") is None else 100 * r["cache_hit_rate"], ".0f"),
            "-" if not r.get("quality_n") else f"{r['quality_mean']:.3f} (n={r['quality_n']})",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(line, widths))).rstrip() for line in lines)


@main.command()
def schema() -> None:
    """Print the JSON Schema of events, for emitters in other languages."""
    from adaptd.streams.events import json_schema

    click.echo(json.dumps(json_schema(), indent=2))







@main.command()
@click.option("--headless", is_flag=True, help="Print the story instead of opening the dashboard.")
@click.option("--duration", type=float, default=120.0, show_default=True, help="Seconds the scripted story lasts.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), help="Keep the demo's data and logs here.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(headless: bool, duration: float, workdir: Path | None, seed: int) -> None:
    """Show the whole loop: a daemon in a temporary directory, a mock provider, three DSPy
    programs and a scripted outage, slowdown, input drift and quality regression."""
    # The demo is a client of the daemon (it uses the SDK), so it runs as its own program.
    args = [sys.executable, "-m", "adaptd.daemon.demo", "--duration", str(duration), "--seed", str(seed)]
    if headless:
        args.append("--headless")
    if workdir is not None:
        args += ["--dir", str(workdir)]
    os.execv(sys.executable, args)
