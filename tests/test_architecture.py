"""The import boundaries of ARCHITECTURE.md, checked two ways."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    tree = subprocess.run([sys.executable, str(REPO / ".ci" / "lint_tree.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": tree}
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower() or " 0 broken" in result.stdout.lower()


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return {".".join(m.split(".")[:2]) if m.startswith("adaptd.") else m.split(".")[0] for m in out.stdout.split()}


def test_streams_imports_none_of_our_other_packages() -> None:
    loaded = _modules_after_import("adaptd.streams.events, adaptd.streams.log")
    assert not loaded & {"adaptd.daemon", "adaptd.adapters", "adaptd.tui"}


def test_sdk_never_pulls_in_the_daemon_or_the_dashboard() -> None:
    loaded = _modules_after_import("adaptd.adapters")
    assert not loaded & {"adaptd.daemon", "adaptd.tui", "duckdb", "fastapi", "uvicorn"}


def test_the_cli_group_loads_no_daemon_dependency_so_the_dashboard_needs_only_its_extra() -> None:
    loaded = _modules_after_import("adaptd.daemon.cli.main")
    assert not loaded & {"duckdb", "fastapi", "uvicorn", "pydantic_settings", "numpy", "scipy", "textual"}
