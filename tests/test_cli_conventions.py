"""The conventions every ``adaptd`` command keeps: exit 0 on success, 1 on a runtime failure
(daemon down, request refused, rejected event, failed job), 2 on a usage error (bad flag or
value, bad config, unusable data dir), always as one line; ``--help`` names the environment
variables the command reads (and they are read); ``status`` as tables; ``export --kind``
and ``--out DIR``."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import DaemonProcess, free_port, run_cli, wait_until

TOKEN = "conventions-secret"
CONFIG = f'[[tenants]]\nname = "acme"\ntokens = ["{TOKEN}"]\nadmin = true\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One real daemon for the module, with one admin tenant (so ``status`` shows every counter)."""
    d = DaemonProcess(tmp_path_factory.mktemp("conventions") / "data", config_text=CONFIG,
                      env={"ADAPTD_TEST_TOKEN": TOKEN})
    d.start()
    try:
        yield d
    finally:
        d.stop()


def adaptd(url: str, *args: str, token: str = TOKEN, **env: str) -> subprocess.CompletedProcess[str]:
    """``adaptd ARGS`` with the daemon and token given through ADAPTD_URL / ADAPTD_TOKEN only."""
    return run_cli(*args, env={"ADAPTD_URL": url, "ADAPTD_TOKEN": token, "COLUMNS": "200", **env})


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Assert ``result`` exited ``code`` with one ``adaptd: error:`` line holding ``words``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptd: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def post(url: str, events: list[dict[str, Any]]) -> None:
    answer = httpx.post(f"{url}/v1/events", json=events, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


def count(url: str, path: str, program: str) -> int:
    return len(httpx.get(url + path, params={"program": program, "limit": 1000}, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"}).json()["items"])


# ---------------------------------------------------------------- exit codes


def test_usage_errors_exit_2_with_one_line_saying_what_to_fix(daemon: DaemonProcess, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (("up", "--config", str(tmp_path / "missing.toml")), ("not found",)),
        (("up", "--data-dir", str(a_file), "--port", str(free_port())), ("is a file", "--data-dir")),
        (("up", "--data-dir", str(a_file / "sub"), "--port", str(free_port())), ("cannot create data dir",)),
        (("executions", "--since", "yesterday"), ("422", "since")),  # a bad value the daemon's validation finds
        (("export", "--kind", "execution"), ("pass -o FILE or --out DIR/",)),
        (("emit", "--json", "{not json"), ("not valid JSON",)),
    ]
    for args, words in cases:
        one_line(adaptd(daemon.url, *args), 2, *words)
    assert not (a_file / "sub").exists()
    bad_flag = adaptd(daemon.url, "executions", "--limit", "0")  # click's own usage error
    assert bad_flag.returncode == 2 and "Invalid value for '-n' / '--limit'" in bad_flag.stderr


def test_a_daemon_that_is_down_is_a_runtime_failure_exit_1_for_every_client_command() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for args in (("status",), ("emit", "--program", "qa"), ("executions",), ("signals",), ("trace", str(uuid.uuid4())),
                 ("routing", "qa"), ("history", "qa"), ("tail", "-n", "1"), ("trainset", "export", "qa", "-o", "-"),
                 ("optimize", "qa"), ("retention", "show"), ("export", "--kind", "execution", "--format", "ndjson")):
        line = one_line(adaptd(down, *args), 1, "cannot reach the daemon", "adaptd up")
        assert down in line, (args, line)  # the URL came from ADAPTD_URL


def test_a_request_the_daemon_refuses_exits_1(daemon: DaemonProcess) -> None:
    rejected = adaptd(daemon.url, "emit", "--kind", "execution")  # no program: the daemon rejects the event
    one_line(rejected, 1, "event rejected", "program")
    assert rejected.stdout == ""
    one_line(adaptd(daemon.url, "status", token="not-the-token"), 1, "refused the token", "ADAPTD_TOKEN")
    one_line(adaptd(daemon.url, "trace", str(uuid.uuid4())), 1, "404")
    accepted = adaptd(daemon.url, "emit", "--program", "conventions")
    assert accepted.returncode == 0 and uuid.UUID(accepted.stdout.strip()), accepted.stderr


def test_a_job_that_did_not_succeed_within_wait_exits_1_naming_it() -> None:
    from adaptd.daemon.cli.optimize import _exit_unless_succeeded

    _exit_unless_succeeded([{"job_id": "j1", "status": "succeeded"}], wait_s=5)  # returns: success
    cases = [({"job_id": "j2", "status": "failed", "details": {"error": "metric raised"}}, "job j2 failed: metric raised"),
             ({"job_id": "j3", "status": "running"}, "job j3 did not finish within --wait 5 s (still running)")]
    for row, message in cases:
        err = io.StringIO()
        with pytest.raises(SystemExit) as exited, _stderr_to(err):
            _exit_unless_succeeded([{"job_id": "j1", "status": "succeeded"}, row], wait_s=5)
        assert exited.value.code == 1 and err.getvalue().strip() == f"adaptd: error: {message}"


def test_optimize_wait_exits_1_when_the_job_stops_short_and_0_when_it_succeeds(tmp_path: Path) -> None:
    from optimize_kit import example_file, write_config

    files = {"trainset": example_file(tmp_path / "train.jsonl", "symbols", 8, seed=1),
             "devset": example_file(tmp_path / "dev.jsonl", "symbols", 12, seed=2)}
    daemon = DaemonProcess(tmp_path / "data", config=write_config(tmp_path / "adaptd.toml", optimize=files,
                                                                   routing=False)).start()
    try:
        args = ("optimize", "toy", "--optimizer", "BootstrapFewShot", "--wait", "120", "--url", daemon.url)
        stopped = run_cli(*args, "--budget-lm-calls", "15", timeout=180)
        one_line(stopped, 1, "budget_exhausted", "LM-call budget of 15 reached")
        assert re.search(r"^job \S+: budget_exhausted", stopped.stdout, re.M), stopped.stdout  # the result still shown
        done = run_cli(*args, timeout=180)
        assert done.returncode == 0 and re.search(r"^job \S+: succeeded", done.stdout, re.M), done.stderr
    finally:
        daemon.stop()


def _stderr_to(buffer: io.StringIO) -> Any:
    import contextlib

    return contextlib.redirect_stderr(buffer)


# ---------------------------------------------------------------- --help and the environment

CLIENT = {"ADAPTD_URL", "ADAPTD_TOKEN"}
#: What each command reads from the environment (every command must be listed: a new one
#: has to say what it reads).
READS: dict[str, set[str]] = {
    "backtest": {"ADAPTD_DATA_DIR"}, "dash": CLIENT, "demo": set(), "emit": CLIENT, "executions": CLIENT,
    "export": CLIENT, "history": CLIENT, "log": set(), "log repair": {"ADAPTD_DATA_DIR"},
    "log verify": {"ADAPTD_DATA_DIR"}, "optimize": CLIENT, "replay": {"ADAPTD_DATA_DIR", "ADAPTD_CONFIG"},
    "retention": set(), "retention apply": CLIENT, "retention show": CLIENT, "routing": CLIENT, "schema": set(),
    "signals": CLIENT, "status": CLIENT, "tail": CLIENT, "trace": CLIENT, "trainset": set(), "trainset export": CLIENT,
    "up": {"ADAPTD_CONFIG", "ADAPTD_DATA_DIR", "ADAPTD_HOST", "ADAPTD_PORT", "ADAPTD_LOG__URL"},
    "worker": {"ADAPTD_CONFIG", "ADAPTD_LOG__URL"},
}
#: Commands that load the daemon's settings, so read every ADAPTD_<NAME> too.
SETTINGS_READERS = {"up", "replay", "worker"}


def _walk(group: click.Group, ctx: click.Context, prefix: str = "") -> Iterator[str]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield prefix + name
        if isinstance(command, click.Group):
            yield from _walk(command, click.Context(command, parent=ctx, info_name=name), f"{prefix}{name} ")


def test_every_help_names_the_environment_variables_its_command_reads() -> None:
    from adaptd.daemon.cli.main import main

    runner = CliRunner()
    commands = list(_walk(main, click.Context(main, info_name="adaptd")))
    assert set(commands) == set(READS), set(commands) ^ set(READS)
    for path in commands:
        result = runner.invoke(main, [*path.split(), "--help"], prog_name="adaptd", env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        named = set(re.findall(r"ADAPTD_[A-Z][A-Z_]*", result.output))
        if path in SETTINGS_READERS:
            assert READS[path] <= named and "ADAPTD_<NAME>" in result.output, (path, named)
        else:
            assert named == READS[path], (path, named)
        for name in READS[path]:
            assert re.search(rf"env\s+var:\s+{name}\b", result.output), (path, name)  # on the flag it sets
    top = runner.invoke(main, ["--help"], prog_name="adaptd")
    assert "Exit codes" in top.output and "ADAPTD_URL" in top.output


def test_the_environment_variables_the_help_names_are_read(tmp_path: Path) -> None:
    for args in (("backtest", "--program", "qa", "--policy", str(tmp_path / "p.toml")), ("log", "verify"),
                 ("replay", "--into", str(tmp_path / "x.duckdb"))):
        one_line(run_cli(*args, env={"ADAPTD_DATA_DIR": str(tmp_path / "elsewhere")}), 2,
                 f"no log at {tmp_path / 'elsewhere' / 'log'}")
    one_line(run_cli("up", env={"ADAPTD_CONFIG": str(tmp_path / "nope.toml")}), 2, f"{tmp_path / 'nope.toml'} not found")
    one_line(run_cli("up", "--data-dir", str(tmp_path / "d"), env={"ADAPTD_HOST": "0.0.0.0"}), 2,
             "refusing to bind 0.0.0.0")


# ---------------------------------------------------------------- status


def test_status_prints_readable_tables_and_json_stays_the_raw_answers(daemon: DaemonProcess) -> None:
    assert adaptd(daemon.url, "emit", "--program", "status-check").returncode == 0

    def projected() -> bool:
        stats = json.loads(adaptd(daemon.url, "status", "--json").stdout)["stats"]
        return stats["projector_lag"] == 0 and stats["processors"]["lag"] == 0

    wait_until(projected, timeout=30)
    raw = adaptd(daemon.url, "status", "--json")
    answer = json.loads(raw.stdout)
    assert raw.returncode == 0 and set(answer) == {"health", "stats"} and answer["stats"]["alerts"] is None
    result = adaptd(daemon.url, "status")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    out = "\n".join(lines)
    assert re.match(rf"adaptd \S+ at {re.escape(daemon.url)}: ok, ready, up \d+\.\d s$", lines[0]), lines[0]
    assert "{" not in out and "None" not in out, out  # no JSON blobs, no Python reprs
    assert re.search(r"^alerts\s+off \(no \[alerts\] sinks configured\)$", out, re.M), out
    assert re.search(rf"^events_acked\s+{answer['stats']['events_acked']}$", out, re.M), out
    acme = re.search(r"^acme\s+(\d+)\s+\d+", out, re.M)  # the tenants table: a row per tenant, events_acked first
    assert acme and acme.group(1) == str(answer["stats"]["tenants"]["acme"]["events_acked"]), out
    header = next(line for line in lines if line.startswith("figure") and "history" in line)  # processors side by side
    assert header.split() == ["figure", *answer["stats"]["processors"]["processors"]]
    assert re.search(r"^open_windows\s+10s=\d+ 1m=\d+ 1h=\d+", out, re.M), out


def test_status_view_lays_out_groups_entity_lists_and_nulls() -> None:
    import rich.console

    from adaptd.daemon.cli.status_view import status_view

    stats = {"events_acked": 3, "log_write_failing": None, "processors": None, "ready": False, "uptime_s": 2.0,
             "alerts": {"signals": 4, "last_error": None, "sinks": [
                 {"sink": "http", "name": "https://hooks.example/…", "delivered": 3, "failed": 1},
                 {"sink": "file", "name": "/tmp/alerts.ndjson", "delivered": 4, "failed": 0}]}}
    console = rich.console.Console(file=io.StringIO(), width=200, no_color=True)
    for renderable in status_view("http://x", {"status": "ok", "version": "9"}, stats):
        console.print(renderable)
    out = "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())  # type: ignore[attr-defined]
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "adaptd 9 at http://x: ok, NOT ready, up 2.0 s"
    assert re.search(r"^log_write_failing\s+-$", out, re.M), out
    assert re.search(r"^processors\s+off \(run by `adaptd worker` on Kafka\)$", out, re.M), out
    assert re.search(r"^signals\s+4$", out, re.M) and "alerts.sinks" in out, out
    sink_rows = [line.split() for line in lines if line.startswith(("https://", "/tmp/"))]
    assert sink_rows == [["https://hooks.example/…", "http", "3", "1"], ["/tmp/alerts.ndjson", "file", "4", "0"]], out


# ---------------------------------------------------------------- export --kind / --out DIR


def test_export_takes_the_kind_and_writes_table_files_into_an_out_dir(daemon: DaemonProcess, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    runs = [{"id": str(uuid.uuid4()), "kind": "execution", "program": "exp-kind", "ts": (now + dt.timedelta(seconds=i)).isoformat()}
            for i in range(3)]
    calls = [{"id": str(uuid.uuid4()), "kind": "lm_call", "program": "exp-kind", "model": "gpt", "execution_id": runs[0]["id"],
              "ts": now.isoformat()} for _ in range(2)]
    post(daemon.url, runs + calls)
    wait_until(lambda: count(daemon.url, "/v1/executions", "exp-kind") == 3
               and count(daemon.url, "/v1/lm_calls", "exp-kind") == 2, timeout=30)

    fresh = tmp_path / "new" / "dir"  # a trailing slash: created
    made = adaptd(daemon.url, "export", "--kind", "execution", "--out", f"{fresh}/")
    assert made.returncode == 0 and made.stdout == "", made.stderr
    rows = [r for r in pq.read_table(fresh / "executions.parquet").to_pylist() if r["program"] == "exp-kind"]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in runs)

    existing = tmp_path / "existing"
    existing.mkdir()
    lm = adaptd(daemon.url, "export", "--kind", "lm_call", "--format", "ndjson", "--out", str(existing))
    assert lm.returncode == 0 and lm.stdout == "" and "lm_calls" in lm.stderr, lm.stderr
    lines = [json.loads(line) for line in (existing / "lm_calls.ndjson").read_text().splitlines()]
    assert sorted(r["id"] for r in lines if r["program"] == "exp-kind") == sorted(c["id"] for c in calls)
    assert [p.name for p in existing.iterdir()] == ["lm_calls.ndjson"]  # nothing half-written left beside it

    as_file = tmp_path / "by-table.parquet"  # -o FILE and --table keep working
    assert adaptd(daemon.url, "export", "--table", "executions", "-o", str(as_file)).returncode == 0
    assert pq.read_table(as_file).num_rows == pq.read_table(fresh / "executions.parquet").num_rows
    unknown = adaptd(daemon.url, "export", "--kind", "nope", "-o", str(tmp_path / "y"))
    assert unknown.returncode == 2 and "Invalid value for '--table' / '--kind'" in unknown.stderr


def test_tables_and_trees_print_brackets_in_the_data_as_written() -> None:
    import rich.console

    from adaptd.daemon.cli.reads import executions_table, trace_tree

    node = {"id": "e1", "program": "qa", "module": "[m]", "status": "error", "error_type": "KeyError",
            "error_message": "[answer]", "children": [], "lm_calls": [], "feedback": []}
    console = rich.console.Console(file=io.StringIO(), width=200, no_color=True)
    console.print(trace_tree({"execution": node, "executions": 1, "lm_calls": 0, "feedback": 0}))
    console.print(executions_table([node]))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "error KeyError: [answer]" in out and "[m]" in out and "error (KeyError)" in out, out
