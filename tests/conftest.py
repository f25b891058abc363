"""Shared test kit: the harness of ``adaptd.daemon.testing`` (free ports, condition waits,
a real daemon in a subprocess or in process) and the fixtures built on it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adaptd.daemon.testing import DaemonProcess as _DaemonProcess
from adaptd.daemon.testing import InProcessDaemon, MemoryLog, free_port, wait_until

__all__ = ["REPO", "DaemonProcess", "InProcessDaemon", "MemoryLog", "free_port", "run_cli", "wait_until"]

REPO = Path(__file__).resolve().parents[1]


class DaemonProcess(_DaemonProcess):
    """The harness' daemon, run from the repository root (as a user in a checkout would)."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        kwargs.setdefault("cwd", REPO)
        super().__init__(data_dir, **kwargs)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons in ``tmp_path``; every one started is ended after the test."""
    started: list[DaemonProcess] = []

    def make(name: str = "data", **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path / name, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=10)


@pytest.fixture
def inprocess_daemon(tmp_path: Path) -> Iterator[Callable[..., InProcessDaemon]]:
    """Start in-process daemons (uvicorn in a thread) for ``Settings``; all stopped after the test.

    Call it with a ``Settings`` (its data dir under ``tmp_path``, for instance); it returns
    the started daemon.
    """
    started: list[InProcessDaemon] = []

    def make(settings: Any) -> InProcessDaemon:
        d = InProcessDaemon(settings)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        d.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``adaptd ARGS`` as a subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "adaptd.daemon.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, input=input, timeout=timeout)
