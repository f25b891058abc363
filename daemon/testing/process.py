"""``adaptd up`` in a subprocess on a free loopback port, started and ended by the caller."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class DaemonError(RuntimeError):
    """The daemon exited or did not answer in time; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    Raises:
        AssertionError: ``condition`` stayed falsy for ``timeout`` seconds (an exception
            raised by ``condition`` propagates at once).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


class DaemonProcess:
    """``adaptd up`` in a subprocess on a free loopback port.

    Args:
        data_dir: the daemon's ``--data-dir``.
        config: a config file passed as ``--config`` (None: defaults and environment).
        config_text: written to ``<data_dir>.toml`` and used as ``config`` (for callers
            that build their config as text).
        env: extra environment; ``ADAPTD_TEST_TOKEN`` is also sent as the bearer token of
            the readiness check.
        ready_path: the GET that must answer 200 (or 401: up, but tenants are configured)
            before ``start`` returns.
        log_path: where the daemon's stdout and stderr go (default: beside ``data_dir``).
        cwd: the subprocess' working directory (None: this process').

    A restart (``start`` after ``stop`` or ``kill9``) reuses the port, so clients keep
    their URL.  Use it as a context manager to have it stopped on exit.
    """

    def __init__(self, data_dir: Path, *, config: Path | None = None, config_text: str | None = None,
                 env: dict[str, str] | None = None, ready_path: str = "/v1/health",
                 log_path: Path | None = None, cwd: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        if config_text is not None:
            config = self.data_dir.parent / f"{self.data_dir.name}.toml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(config_text)
        self.config = config
        self.env = env or {}
        self.ready_path = ready_path
        self.cwd = cwd
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}-daemon.log"
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        """Start (on the same port as before, if any) and wait until ``ready_path`` answers.

        Raises:
            DaemonError: the daemon exited, or did not answer within ``timeout`` seconds.
        """
        import httpx

        self.port = self.port or free_port()
        args = [sys.executable, "-m", "adaptd.daemon.cli", "up", "--data-dir", str(self.data_dir),
                "--port", str(self.port)]
        if self.config is not None:
            args += ["--config", str(self.config)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if "ADAPTD_CONFIG" not in self.env:
            env.pop("ADAPTD_CONFIG", None)  # an operator's config must not leak into a harness daemon
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop() / kill9()
        self.proc = subprocess.Popen(args, cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        token = self.env.get("ADAPTD_TEST_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonError(f"daemon exited with {self.proc.returncode}: {self.tail()}")
            try:
                return httpx.get(self.url + self.ready_path, headers=headers, timeout=1.0).status_code in (200, 401)
            except httpx.TransportError:
                return False

        try:
            wait_until(ready, timeout=timeout, interval=0.05)
        except AssertionError:
            self.stop()
            raise DaemonError(f"daemon did not answer {self.ready_path} within {timeout:.0f} s: {self.tail()}") from None
        return self

    def output(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far ('' before the first start)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 2000) -> str:
        """The last ``chars`` characters of ``output()``."""
        return self.output()[-chars:]

    def kill9(self) -> None:
        """SIGKILL, no goodbye; returns once the process is gone."""
        assert self.proc is not None, "kill9() before start()"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the graceful exit (SIGKILL after ``timeout``); the exit code.

        Stopping a daemon that never started or already exited returns its code (0 if none).
        """
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
