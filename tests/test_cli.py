"""The ``adaptd`` command line: clear one-line errors (exit 2 for usage, 1 at run time), and the happy paths."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import REPO, free_port, run_cli, wait_until


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unreachable_daemon_says_how_to_fix_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    _one_line_error(run_cli("status", "--url", url), "cannot reach the daemon", "adaptd up", code=1)
    _one_line_error(run_cli("emit", "--url", url, "--program", "qa"), "cannot reach the daemon", code=1)


def test_bad_flag_exits_2() -> None:
    result = run_cli("up", "--port", "not-a-number")
    assert result.returncode == 2 and "port" in result.stderr.lower()


def test_bad_config_file_exits_2_with_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 'eighty'\n")
    _one_line_error(run_cli("up", "--config", str(bad), "--data-dir", str(tmp_path / "d")), "port")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    _one_line_error(run_cli("up", "--config", str(broken)), "not valid TOML")
    _one_line_error(run_cli("up", "--config", str(tmp_path / "missing.toml")), "not found")


def test_env_override_is_validated(tmp_path: Path) -> None:
    _one_line_error(run_cli("up", "--data-dir", str(tmp_path / "d"), env={"ADAPTD_LOG__FSYNC": "never"}), "log.fsync")


def test_refuses_to_bind_beyond_loopback_without_tokens(tmp_path: Path) -> None:
    _one_line_error(run_cli("up", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")),
                    "refusing to bind 0.0.0.0")


def test_a_busy_port_is_one_clear_error_and_opens_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    _one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert not (tmp_path / "d" / "adaptd.duckdb").exists()  # refused before the runtime opened


def test_schema_prints_the_event_json_schema() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for kind in ("execution", "lm_call", "feedback", "route_decision", "signal", "adaptation", "optimizer_run"):
        assert kind in text


def test_emit_status_tail_and_replay_against_a_real_daemon(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory().start()
    tail = subprocess.Popen([sys.executable, "-m", "adaptd.daemon.cli", "tail", "--url", daemon.url, "--from-offset", "0",
                             "-n", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_cli("emit", "--url", daemon.url, "--program", "qa", "-f", "duration_ms=12.5", "-f", "route=r1")
    second = run_cli("emit", "--url", daemon.url, "--json", "-", input=json.dumps(
        {"kind": "feedback", "execution_id": first.stdout.strip(), "score": 0.5}))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    out, err = tail.communicate(timeout=30)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [first.stdout.strip(), second.stdout.strip()]

    rejected = run_cli("emit", "--url", daemon.url, "--kind", "execution")
    _one_line_error(rejected, "event rejected", "program", code=1)

    wait_until(lambda: httpx.get(f"{daemon.url}/v1/stats").json()["projector_lag"] == 0)
    status = run_cli("status", "--url", daemon.url, "--json")
    assert status.returncode == 0
    stats = json.loads(status.stdout)["stats"]
    assert stats["events_acked"] == 2 and stats["dead_letters"] == 1

    assert daemon.stop() == 0
    copy = tmp_path / "copy.duckdb"
    replayed = run_cli("replay", "--data-dir", str(daemon.data_dir), "--into", str(copy))
    assert replayed.returncode == 0, replayed.stderr
    from adaptd.daemon.readmodel.replay import tables_equal

    assert tables_equal(daemon.data_dir / "adaptd.duckdb", copy) == []
    _one_line_error(run_cli("replay", "--data-dir", str(daemon.data_dir), "--into", str(copy)), "exists")
